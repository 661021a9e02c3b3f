//===- emulator_bench.cpp - emulator throughput and kernel traffic
//---------===//
//
// Runs the main generated kernels on the CPU emulator at a representative
// shape and prints (1) the emulator's speed in CUDA threads per second and
// (2) each kernel's global-memory traffic per access site: requests,
// 32-byte sectors per request against the ideal, efficiency, and the bytes
// fetched against the bytes of the tensors read. Run:
//   build/bin/kvq-emulator-bench
// Sector counts model DRAM sectors touched per warp instruction; they say
// nothing about L1/L2 hits, and CPU timings say nothing about GPU speed.
//
//===----------------------------------------------------------------------===//

#include "kvq/Codegen/Generator.h"
#include "kvq/Runtime/Emulator.h"
#include "kvq/Runtime/Reference.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace kvq;

namespace {

struct Buffer {
  explicit Buffer(size_t bytes, uint8_t fill = 0) : bytes(bytes) {
    p = emu::deviceAlloc(bytes);
    std::memset(p, fill, bytes);
  }
  ~Buffer() { emu::deviceFree(p); }
  void *p;
  size_t bytes;
};

void fillHalf(Buffer &b, float value) {
  uint16_t bits = ref::toHalfBits(value, HalfType::F16);
  auto *h = static_cast<uint16_t *>(b.p);
  for (size_t i = 0; i < b.bytes / 2; ++i)
    h[i] = bits;
}

void report(const char *title, const emu::TrafficReport &traffic,
            uint64_t tensorBytes, double seconds, uint64_t threads) {
  std::printf("\n%s\n  %llu CUDA threads in %.3f s = %.2f M threads/s "
              "(untraced)\n",
              title, (unsigned long long)threads, seconds,
              threads / seconds / 1e6);
  std::printf("  %-6s %-5s %5s %9s %13s %7s %10s\n", "site", "kind", "bytes",
              "requests", "sectors/req", "ideal", "efficiency");
  for (const emu::SiteTraffic &s : traffic.sites)
    std::printf("  %-6d %-5s %5u %9llu %13.2f %7.0f %9.1f%%\n", s.site,
                s.store ? "store" : "load", s.accessBytes,
                (unsigned long long)s.requests, s.sectorsPerRequest(),
                s.idealSectorsPerRequest(), 100 * s.efficiency());
  std::printf("  loads fetched %llu bytes (unique sectors x 32) for %llu "
              "bytes of input tensors: %.3fx\n",
              (unsigned long long)(traffic.uniqueLoadSectors * 32),
              (unsigned long long)tensorBytes,
              double(traffic.uniqueLoadSectors * 32) / double(tensorBytes));
}

std::unique_ptr<emu::Module> compile(const KernelSpec &spec,
                                     GeneratedSource &source) {
  Generator generator;
  auto generated = generator.generate(spec, GeneratorOptions());
  if (!generated) {
    std::fprintf(stderr, "%s\n", llvm::toString(generated.takeError()).c_str());
    std::exit(1);
  }
  source = *generated;
  auto module = emu::Module::compile(source, "build/emulator-cache");
  if (!module) {
    std::fprintf(stderr, "%s\n", llvm::toString(module.takeError()).c_str());
    std::exit(1);
  }
  return std::move(*module);
}

/// Runs `launch` traced (for traffic) and untraced (for speed).
template <typename Launch>
void measure(const char *title, emu::Module &m, uint64_t tensorBytes,
             uint64_t threads, Launch launch) {
  emu::LaunchOptions traced;
  traced.traceTraffic = true;
  if (llvm::Error e = launch(m, traced)) {
    std::fprintf(stderr, "%s\n", llvm::toString(std::move(e)).c_str());
    std::exit(1);
  }
  emu::TrafficReport traffic = m.lastTraffic();
  auto start = std::chrono::steady_clock::now();
  if (llvm::Error e = launch(m, emu::LaunchOptions())) {
    std::fprintf(stderr, "%s\n", llvm::toString(std::move(e)).c_str());
    std::exit(1);
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  report(title, traffic, tensorBytes, seconds, threads);
}

void attention(const char *spec, int tokens) {
  KernelSpec s;
  parseKernelSpec(spec, s);
  GeneratedSource source;
  auto m = compile(s, source);
  const GeneratedKernel &k = source.kernels[0];
  int d = s.headDim, hkv = s.kvHeads, hq = s.queryHeads, batch = 1;
  int tokensPerSplit = 256,
      splits = (tokens + tokensPerSplit - 1) / tokensPerSplit + 1;
  auto words = [&](const QuantScheme &q) {
    return size_t(hkv) * tokens * d * q.bits / 8;
  };
  auto scales = [&](const QuantScheme &q) {
    int g = q.group ? q.group : d;
    size_t n = q.axis == QuantScheme::Axis::Token
                   ? size_t(hkv) * tokens * (d / g)
                   : size_t(hkv) * tokens / g * d;
    return n * (q.fp32Scales ? 4 : 2);
  };
  Buffer q(size_t(hq) * d * 2), po(size_t(hq) * splits * d * 4),
      pm(size_t(hq) * splits * 4), ps(size_t(hq) * splits * 4);
  Buffer kw(words(s.key), 0x5a), ks(scales(s.key)), kz(scales(s.key));
  Buffer vw(words(s.value), 0xa5), vs(scales(s.value)), vz(scales(s.value));
  Buffer sk(size_t(hkv) * 4 * d * 2), sv(size_t(hkv) * 4 * d * 2);
  Buffer rk(size_t(hkv) * 64 * d * 2), rv(size_t(hkv) * 64 * d * 2);
  for (Buffer *b : {&q, &ks, &kz, &vs, &vz, &sk, &sv, &rk, &rv})
    fillHalf(*b, 0.01f);
  Buffer lengths(12);
  int32_t lens[3] = {4, tokens, 64};
  std::memcpy(lengths.p, lens, sizeof lens);
  int kvHeads = hkv, capacity = tokens, sinkCap = 4, residualCap = 64;
  float scale = 0.088f;
  std::vector<void *> args = {&q.p, &po.p, &pm.p, &ps.p, &kw.p, &ks.p};
  if (!s.key.symmetric)
    args.push_back(&kz.p);
  args.insert(args.end(), {&vw.p, &vs.p});
  if (!s.value.symmetric)
    args.push_back(&vz.p);
  args.insert(args.end(),
              {&sk.p, &sv.p, &rk.p, &rv.p, &lengths.p, &kvHeads, &capacity,
               &sinkCap, &residualCap, &tokensPerSplit, &scale});
  uint64_t tensorBytes = q.bytes + kw.bytes + ks.bytes + vw.bytes + vs.bytes +
                         (s.key.symmetric ? 0 : kz.bytes) +
                         (s.value.symmetric ? 0 : vz.bytes) + sk.bytes +
                         sv.bytes + rk.bytes + rv.bytes + lengths.bytes;
  std::string title = std::string(k.name) + "  (" + spec + ", " +
                      std::to_string(tokens) + " quantized tokens, batch 1)";
  uint64_t threads = uint64_t(splits) * hkv * batch * k.threads;
  measure(title.c_str(), *m, tensorBytes, threads,
          [&](emu::Module &mod, const emu::LaunchOptions &o) {
            return mod.launch(
                k.name, {unsigned(splits), unsigned(hkv), unsigned(batch)},
                {unsigned(k.threads)}, args, o);
          });
}

void quantize(const char *spec, int rows, int tokens) {
  KernelSpec s;
  parseKernelSpec(spec, s);
  GeneratedSource source;
  auto m = compile(s, source);
  const GeneratedKernel &k = source.kernels[0];
  int d = s.headDim;
  int g = s.key.group ? s.key.group : d;
  bool token = s.key.axis == QuantScheme::Axis::Token;
  Buffer in(size_t(rows) * tokens * d * 2);
  std::mt19937 rng(1);
  auto *h = static_cast<uint16_t *>(in.p);
  std::normal_distribution<float> normal;
  for (size_t i = 0; i < in.bytes / 2; ++i)
    h[i] = ref::toHalfBits(normal(rng), HalfType::F16);
  size_t nScales =
      token ? size_t(rows) * tokens * (d / g) : size_t(rows) * tokens / g * d;
  Buffer words(size_t(rows) * tokens * d * s.key.bits / 8), scales(nScales * 2),
      zeros(nScales * 2);
  int r = rows, t = tokens, inTokens = tokens, outTokens = tokens, offset = 0;
  std::vector<void *> args = {&in.p, &words.p, &scales.p};
  if (!s.key.symmetric)
    args.push_back(&zeros.p);
  args.insert(args.end(), {&r, &t, &inTokens, &outTokens, &offset});
  unsigned grid = token ? unsigned((size_t(rows) * tokens + 3) / 4)
                        : unsigned((size_t(rows) * tokens / g * d + 127) / 128);
  std::string title = std::string(k.name) + "  (" + std::to_string(rows) +
                      " rows x " + std::to_string(tokens) + " tokens)";
  measure(title.c_str(), *m, in.bytes, uint64_t(grid) * 128,
          [&](emu::Module &mod, const emu::LaunchOptions &o) {
            return mod.launch(k.name, {grid}, {128}, args, o);
          });
}

} // namespace

int main() {
  std::printf("kvq emulator bench: traffic per access site and emulator "
              "speed (2-core CPU; not GPU timings)\n");
  attention("attention k=2c32 v=2t32 d=128 hq=32 hkv=8", 1024);
  attention("attention k=4t64 v=4t64 d=128 hq=32 hkv=8", 1024);
  attention("attention k=8t64 v=8t64 d=128 hq=32 hkv=32", 512);
  quantize("quantize 2c32 d=128", 8, 128);
  quantize("quantize 4t64 d=128", 8, 128);
  return 0;
}
