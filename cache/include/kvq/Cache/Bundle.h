//===- Bundle.h - many cache entries in one verified file -------*- C++ -*-===//
//
// A kernel bundle carries prebuilt cache entries to machines that have no
// compiler (a serving node, a bare GPU machine): `kvq-cache export` writes
// one, `kvq-cache import` installs it into a disk cache, and a runtime can
// serve kernels straight from it (KVQ_BUNDLE). The file is
//
//   kvq-bundle 1\n                      magic and format version
//   <manifest bytes> <manifest sha256>\n   decimal length, lower-case hex
//   <manifest>                          JSON: every entry's key, info and
//                                       files (offset, size, sha256)
//   <payload>                           the files' bytes, back to back
//
// Everything read is hostile until verified: the manifest's checksum is
// checked before it is parsed, every file's checksum before it is used, the
// files must tile the payload exactly (no unchecked byte, no overlap, nothing
// after the end), names are plain file names, and every key must be the
// SHA-256 of the key inputs recorded with it, so an entry cannot pose as
// another spec's kernel. Knows nothing of MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CACHE_BUNDLE_H
#define KVQ_CACHE_BUNDLE_H

#include "kvq/Cache/DiskCache.h"

#include "llvm/Support/Error.h"

#include <map>
#include <string>
#include <vector>

namespace kvq::cache {

/// A bundle that cannot be read, or fails verification.
class BundleError : public MessageError<BundleError> {
public:
  static char ID;
  using MessageError::MessageError;
};

inline constexpr int kBundleFormatVersion = 1;

/// Deepest nesting of JSON arrays/objects `text` reaches (outside strings),
/// counted without recursion: manifests nesting deeper than a few levels are
/// refused before a recursive parser sees them.
int jsonNestingDepth(const std::string &text);

/// The fields of an entry's recorded key inputs (canonicalKeyText), by
/// name: "spec", "backend", "target", "generator", "compiler", ...
std::map<std::string, std::string> parseKeyText(const std::string &text);

class Bundle {
public:
  /// Reads and verifies the bundle at `path` (see above).
  static llvm::Expected<Bundle> open(const std::string &path);
  /// Verifies bundle bytes already in memory; `name` is used in messages.
  static llvm::Expected<Bundle> parse(std::string bytes,
                                      const std::string &name);

  /// The bytes of a bundle holding `entries`. Every entry must carry
  /// info["key_inputs"] whose SHA-256 is its key, and plain file names.
  static llvm::Expected<std::string>
  serialize(const std::vector<Entry> &entries);
  /// Writes `entries` as a bundle to `path` (temporary name, then rename).
  static llvm::Error write(const std::string &path,
                           const std::vector<Entry> &entries);

  const std::string &path() const { return name; }
  const std::vector<Entry> &entries() const { return all; }
  /// The entry with `key`, or null.
  const Entry *find(const std::string &key) const;

private:
  std::string name;
  std::vector<Entry> all;
  std::map<std::string, size_t> byKey;
};

} // namespace kvq::cache

#endif // KVQ_CACHE_BUNDLE_H
