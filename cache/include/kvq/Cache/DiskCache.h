//===- DiskCache.h - compiled kernels across processes ----------*- C++ -*-===//
//
// One file per key, `<key>.kvqe`, in the kernel bundle format (Bundle.h)
// holding one entry: its artefacts (CUDA source, PTX, CUBIN, or the
// emulator's shared object) and a manifest, every byte covered by a SHA-256
// that is checked on the bytes then used: an entry is read once into memory,
// verified there, and served from memory (the runtime loads a CUBIN from
// memory and an emulator object from a sealed in-memory file), so nothing
// is read again from a path after it was checked.
//
// The directory is opened once (O_NOFOLLOW), its owner and mode checked on
// the open descriptor (0700, owned by this user; created so), and every
// later access is relative to that descriptor with O_NOFOLLOW: swapping the
// directory or planting a symlink after `open` changes nothing. Removal
// unlinks names inside the directory and never follows a link. Entries are
// written under a temporary name and published with one rename; a write
// that fails (disk full, read-only, quota, permissions) removes its
// temporary file and is reported as a CacheError, which the runtime turns
// into a warning and a memory-only cache. A corrupt entry is removed (and
// rebuilt by the caller); least recently used entries are evicted past a
// size bound.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CACHE_DISKCACHE_H
#define KVQ_CACHE_DISKCACHE_H

#include "kvq/Support/MessageError.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvq::cache {

/// A problem with the cache location itself (permissions, I/O).
class CacheError : public MessageError<CacheError> {
public:
  static char ID;
  using MessageError::MessageError;
};

struct Entry {
  std::string key;
  /// Description kept in the manifest (spec, key inputs, kernel launch
  /// metadata, ptxas log, ...).
  std::map<std::string, std::string> info;
  /// Artefact file name -> bytes.
  std::map<std::string, std::string> files;
};

struct EntrySummary {
  std::string key;
  std::map<std::string, std::string> info;
  uint64_t bytes = 0;
  int64_t lastUsed = 0; ///< seconds since the epoch
};

/// What `verify` found: keys of entries removed as corrupt, and names in
/// the directory that are not entries (symlinks, folders of an older format,
/// stray temporary files) and were removed without following them.
struct VerifyReport {
  std::vector<std::string> corrupt;
  std::vector<std::string> removedStrays;
  size_t intact = 0;
};

/// $KVQ_CACHE_DIR, else $XDG_CACHE_HOME/kvq, else ~/.cache/kvq.
std::string defaultCacheDir();

/// Largest entry file read (a CUBIN + PTX of the biggest kernel is < 2 MB).
inline constexpr uint64_t kMaxEntryBytes = 256ull << 20;

class DiskCache {
public:
  /// Opens (creating 0700 if needed) the cache at `dir`. Refuses a
  /// directory writable by group or others, owned by another user, or a
  /// symlink.
  static llvm::Expected<DiskCache> open(const std::string &dir,
                                        uint64_t maxBytes = 1ull << 30);

  const std::string &directory() const { return dir; }

  /// The entry for `key` if a complete, intact one exists. A corrupt entry
  /// is removed; `problem` (if given) then says what was wrong with it.
  std::optional<Entry> load(const std::string &key,
                            std::string *problem = nullptr) const;

  /// Publishes `entry` atomically (a concurrent writer of the same key
  /// writes the same kernels; the last rename wins). Evicts least recently
  /// used entries past the size bound.
  llvm::Error store(const Entry &entry) const;

  std::vector<EntrySummary> list() const;
  /// Checks every entry and removes what a run would reject.
  VerifyReport verify() const;
  /// Removes least recently used entries until the cache fits `maxBytes`.
  /// Returns the number removed.
  size_t prune(uint64_t maxBytes) const;
  void remove(const std::string &key) const;
  /// Removes every entry, temporary file and older-format folder.
  void clear() const;

  /// The descriptor of the opened directory (shared by copies).
  struct Handle;

private:
  DiskCache(std::string dir, uint64_t maxBytes, std::shared_ptr<Handle> handle)
      : dir(std::move(dir)), maxBytes(maxBytes), handle(std::move(handle)) {}
  std::string dir;
  uint64_t maxBytes;
  std::shared_ptr<Handle> handle;
};

} // namespace kvq::cache

#endif // KVQ_CACHE_DISKCACHE_H
