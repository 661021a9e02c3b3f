//===- DiskCache.h - compiled kernels across processes ----------*- C++ -*-===//
//
// One folder per key under the cache directory, holding the artefacts (CUDA
// source, PTX, CUBIN, or the emulator's shared object) and a manifest.json
// written last: its presence means "complete". Entries are written under a
// temporary name and published with one rename, so readers never see a
// partial entry and concurrent writers of one key leave exactly one.
// Loading checks every artefact's size and XXH3 checksum against the
// manifest; a
// corrupt or partial entry is removed and reported as a miss. The directory
// is created 0700, and one that other users may write is refused: loading a
// CUBIN or a shared object is executing code. Least recently used entries
// are evicted past a size bound.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CACHE_DISKCACHE_H
#define KVQ_CACHE_DISKCACHE_H

#include "kvq/Support/MessageError.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
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
  /// Free-form description kept in the manifest (spec, versions, launch
  /// configuration, ptxas statistics, ...).
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

/// $KVQ_CACHE_DIR, else $XDG_CACHE_HOME/kvq, else ~/.cache/kvq.
std::string defaultCacheDir();

class DiskCache {
public:
  /// Opens (creating 0700 if needed) the cache at `dir`. Refuses a
  /// directory writable by group or others, or owned by another user.
  static llvm::Expected<DiskCache> open(const std::string &dir,
                                        uint64_t maxBytes = 1ull << 30);

  const std::string &directory() const { return dir; }

  /// The entry for `key` if a complete, intact one exists. A corrupt entry
  /// is removed; `problem` (if given) then says what was wrong with it.
  std::optional<Entry> load(const std::string &key,
                            std::string *problem = nullptr) const;

  /// Publishes `entry` atomically. If another writer published the key
  /// first, theirs is kept. Evicts least recently used entries past the
  /// size bound.
  llvm::Error store(const Entry &entry) const;

  std::vector<EntrySummary> list() const;
  /// Checks every entry; returns the keys that were corrupt (and removed).
  std::vector<std::string> verify() const;
  /// Removes least recently used entries until the cache fits `maxBytes`.
  /// Returns the number removed.
  size_t prune(uint64_t maxBytes) const;
  void remove(const std::string &key) const;
  void clear() const;

private:
  DiskCache(std::string dir, uint64_t maxBytes)
      : dir(std::move(dir)), maxBytes(maxBytes) {}
  std::string dir;
  uint64_t maxBytes;
};

} // namespace kvq::cache

#endif // KVQ_CACHE_DISKCACHE_H
