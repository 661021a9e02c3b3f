//===- CacheKey.h - what identifies a compiled kernel -----------*- C++ -*-===//
//
// A kernel cache key hashes everything that changes the binary: the
// canonical spec, the generator version, the LLVM/MLIR version, the nvrtc
// (or host compiler) version, the target, the compile options and the
// environment variables that change code generation. Two inputs that differ
// in any field never share an entry. Knows nothing of MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CACHE_CACHEKEY_H
#define KVQ_CACHE_CACHEKEY_H

#include <map>
#include <string>

namespace kvq::cache {

/// Bumped whenever the on-disk entry format changes.
inline constexpr int kFormatVersion = 2;

struct KeyInputs {
  std::string spec;             ///< KernelSpec::canonical()
  std::string backend;          ///< "cuda" or "emulator"
  std::string target;           ///< sm_90, or the host triple
  std::string generatorVersion; ///< kvq version
  std::string mlirVersion;      ///< LLVM/MLIR version
  std::string compilerVersion;  ///< nvrtc version, or the host compiler
  std::string options;          ///< compile options, space separated
  /// Environment variables that change code generation, name -> value.
  std::map<std::string, std::string> environment;
};

/// The fields in a fixed order, one "name=value" per line: what is hashed,
/// and what a manifest records so a human can see why two keys differ.
std::string canonicalKeyText(const KeyInputs &inputs);

/// Lower-case hex SHA-256 of canonicalKeyText (64 characters).
std::string computeKey(const KeyInputs &inputs);

/// Lower-case hex SHA-256 of arbitrary bytes.
std::string sha256Hex(const std::string &bytes);

} // namespace kvq::cache

#endif // KVQ_CACHE_CACHEKEY_H
