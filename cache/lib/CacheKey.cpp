//===- CacheKey.cpp - what identifies a compiled kernel -------------------===//

#include "kvq/Cache/CacheKey.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/SHA256.h"

#include <sstream>

using namespace kvq::cache;

std::string kvq::cache::sha256Hex(const std::string &bytes) {
  std::array<uint8_t, 32> hash = llvm::SHA256::hash(llvm::ArrayRef<uint8_t>(
      reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size()));
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(64);
  for (uint8_t byte : hash) {
    hex += digits[byte >> 4];
    hex += digits[byte & 15];
  }
  return hex;
}

std::string kvq::cache::canonicalKeyText(const KeyInputs &in) {
  std::ostringstream os;
  os << "format=" << kFormatVersion << "\n"
     << "spec=" << in.spec << "\n"
     << "backend=" << in.backend << "\n"
     << "target=" << in.target << "\n"
     << "generator=" << in.generatorVersion << "\n"
     << "mlir=" << in.mlirVersion << "\n"
     << "compiler=" << in.compilerVersion << "\n"
     << "options=" << in.options << "\n";
  for (const auto &[name, value] : in.environment)
    os << "env." << name << "=" << value << "\n";
  return os.str();
}

std::string kvq::cache::computeKey(const KeyInputs &inputs) {
  return sha256Hex(canonicalKeyText(inputs));
}
