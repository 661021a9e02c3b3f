//===- Hmac.h - HMAC-SHA256 for authenticated cache entries -----*- C++ -*-===//
//
// Entries read from a shared store are code a process will run: each is
// signed with a key only the fleet holds (RFC 2104 HMAC over SHA-256,
// LLVM's SHA256), and checked in constant time before anything else is
// read from it.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CACHE_HMAC_H
#define KVQ_CACHE_HMAC_H

#include "llvm/ADT/StringRef.h"

#include <string>

namespace kvq::cache {

/// HMAC-SHA256 of `message` under `key`, as 64 lower-case hex digits.
std::string hmacSha256Hex(llvm::StringRef key, llvm::StringRef message);

/// Compares two strings in time that depends only on their lengths.
bool constantTimeEqual(llvm::StringRef a, llvm::StringRef b);

} // namespace kvq::cache

#endif // KVQ_CACHE_HMAC_H
