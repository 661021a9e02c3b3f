//===- EmulatorHarness.h - run generated kernels in tests -------*- C++ -*-===//
//
// Helpers shared by the emulator tests: device buffers, data generators,
// and compiling a spec once per test binary.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_TEST_UNIT_EMULATORHARNESS_H
#define KVQ_TEST_UNIT_EMULATORHARNESS_H

#include "kvq/Codegen/Generator.h"
#include "kvq/Runtime/Emulator.h"
#include "kvq/Runtime/Reference.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace kvq::test {

/// A device allocation holding a copy of host data.
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes(bytes) {
    pointer = emu::deviceAlloc(bytes);
  }
  template <typename T>
  explicit DeviceBuffer(const std::vector<T> &host)
      : DeviceBuffer(std::max<size_t>(1, host.size()) * sizeof(T)) {
    if (!host.empty())
      std::memcpy(pointer, host.data(), host.size() * sizeof(T));
  }
  DeviceBuffer(DeviceBuffer &&other) noexcept { *this = std::move(other); }
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept {
    std::swap(pointer, other.pointer);
    std::swap(bytes, other.bytes);
    return *this;
  }
  ~DeviceBuffer() { emu::deviceFree(pointer); }
  template <typename T> std::vector<T> read(size_t count) const {
    std::vector<T> host(count);
    std::memcpy(host.data(), pointer, count * sizeof(T));
    return host;
  }
  void *get() const { return pointer; }
  /// For the argument array: the address of the pointer value.
  void *arg() { return &pointer; }

private:
  void *pointer = nullptr;
  size_t bytes = 0;
};

/// Half-type data as the kernels read it.
inline std::vector<uint16_t> toHalf(const std::vector<float> &x, HalfType t) {
  std::vector<uint16_t> bits(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    bits[i] = ref::toHalfBits(x[i], t);
  return bits;
}
inline std::vector<float> fromHalf(const std::vector<uint16_t> &b, HalfType t) {
  std::vector<float> x(b.size());
  for (size_t i = 0; i < b.size(); ++i)
    x[i] = ref::fromHalfBits(b[i], t);
  return x;
}
/// Scales/zeros in their storage type.
inline DeviceBuffer storageBuffer(const std::vector<float> &x,
                                  const QuantScheme &s) {
  if (s.fp32Scales)
    return DeviceBuffer(x);
  return DeviceBuffer(toHalf(x, HalfType::F16));
}
inline std::vector<float> readStorage(const DeviceBuffer &b, size_t n,
                                      const QuantScheme &s) {
  if (s.fp32Scales)
    return b.read<float>(n);
  return fromHalf(b.read<uint16_t>(n), HalfType::F16);
}

/// KV-like data: normal values, a few outlier channels with a large
/// magnitude (as real keys have), rounded to the half type.
inline std::vector<float> kvLikeData(size_t rows, int headDim, HalfType t,
                                     uint32_t seed, bool outliers) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> channelScale(headDim, 1.0f);
  if (outliers)
    for (int c = 0; c < headDim; c += 29)
      channelScale[c] = 12.0f;
  std::vector<float> x(rows * headDim);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = ref::roundToHalf(normal(rng) * channelScale[i % headDim], t);
  return x;
}

/// Compiles each spec once per process (host compiler runs are slow).
inline emu::Module &moduleFor(const KernelSpec &spec,
                              GeneratedSource *sourceOut = nullptr) {
  static std::map<std::string,
                  std::pair<GeneratedSource, std::unique_ptr<emu::Module>>>
      modules;
  auto it = modules.find(spec.canonical());
  if (it == modules.end()) {
    Generator generator;
    llvm::Expected<GeneratedSource> source =
        generator.generate(spec, GeneratorOptions());
    if (!source) {
      fprintf(stderr, "%s\n", llvm::toString(source.takeError()).c_str());
      abort();
    }
    const char *dir = std::getenv("KVQ_EMULATOR_CACHE");
    llvm::Expected<std::unique_ptr<emu::Module>> module =
        emu::Module::compile(*source, dir ? dir : KVQ_TEST_EMULATOR_CACHE);
    if (!module) {
      fprintf(stderr, "%s\n", llvm::toString(module.takeError()).c_str());
      abort();
    }
    it = modules
             .emplace(spec.canonical(),
                      std::make_pair(std::move(*source), std::move(*module)))
             .first;
  }
  if (sourceOut)
    *sourceOut = it->second.first;
  return *it->second.second;
}

/// Name of the kernel of `kind` in the module of `spec`.
inline std::string kernelName(const KernelSpec &spec, const std::string &kind) {
  GeneratedSource source;
  moduleFor(spec, &source);
  for (const GeneratedKernel &k : source.kernels)
    if (k.kind == kind)
      return k.name;
  return "";
}

} // namespace kvq::test

#endif // KVQ_TEST_UNIT_EMULATORHARNESS_H
