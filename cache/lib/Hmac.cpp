//===- Hmac.cpp - HMAC-SHA256
//----------------------------------------------===//

#include "kvq/Cache/Hmac.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/SHA256.h"

#include <array>

using namespace kvq::cache;

std::string kvq::cache::hmacSha256Hex(llvm::StringRef key,
                                      llvm::StringRef message) {
  constexpr size_t kBlock = 64; // SHA-256's block size
  std::array<uint8_t, kBlock> padded{};
  if (key.size() > kBlock) {
    std::array<uint8_t, 32> digest =
        llvm::SHA256::hash(llvm::arrayRefFromStringRef(key));
    std::copy(digest.begin(), digest.end(), padded.begin());
  } else {
    std::copy(key.begin(), key.end(), padded.begin());
  }
  std::array<uint8_t, kBlock> inner, outer;
  for (size_t i = 0; i < kBlock; ++i) {
    inner[i] = padded[i] ^ 0x36;
    outer[i] = padded[i] ^ 0x5c;
  }
  llvm::SHA256 first;
  first.update(inner);
  first.update(message);
  std::array<uint8_t, 32> innerDigest = first.final();
  llvm::SHA256 second;
  second.update(outer);
  second.update(innerDigest);
  return llvm::toHex(second.final(), /*LowerCase=*/true);
}

bool kvq::cache::constantTimeEqual(llvm::StringRef a, llvm::StringRef b) {
  if (a.size() != b.size())
    return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i)
    difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  return difference == 0;
}
