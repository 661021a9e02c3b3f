//===- emulator_bench.cpp - emulator throughput and kernel traffic --------===//
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

#include "kvq/BufferSizes.h"
#include "kvq/Codegen/Generator.h"
#include "kvq/Runtime/Emulator.h"
#include "kvq/Runtime/Launch.h"
#include "kvq/Runtime/Presets.h"
#include "kvq/Runtime/Reference.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
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

/// One attention launch over one sequence, for a quantized or a dense spec:
/// its buffers, and the launch Launch.h plans for them (the same arguments
/// and geometry the runtime uses); `minimumBytes` is what it must read.
struct AttentionSetup {
  std::vector<std::unique_ptr<Buffer>> buffers;
  std::vector<int32_t> lens;       ///< a row's {sink, body, residual}
  std::vector<int32_t> blockTable; ///< a paged body: page i at pages-1-i
  uint64_t minimumBytes = 0;
  KernelLaunch launch; ///< the attention kernel (the combine is not run)

  /// A chunked spec takes `queryRows` rows of the one sequence, a causal
  /// chunk: row i sees queryRows - 1 - i fewer residual tokens than the
  /// last.
  AttentionSetup(const KernelSpec &s, const GeneratedSource &source, int tokens,
                 int residual, int queryRows = 1) {
    for (int i = 0; i < queryRows; ++i)
      lens.insert(lens.end(), {4, tokens, residual - (queryRows - 1 - i)});
    int d = s.headDim, hkv = s.kvHeads, hq = s.queryHeads;
    auto make = [&](size_t bytes, uint8_t fill, bool read) -> void * {
      buffers.push_back(std::make_unique<Buffer>(bytes, fill));
      if (read)
        minimumBytes += bytes;
      return buffers.back()->p;
    };
    auto half = [&](size_t count) {
      Buffer *b =
          buffers.emplace_back(std::make_unique<Buffer>(count * 2)).get();
      fillHalf(*b, 0.01f);
      minimumBytes += count * 2;
      return b->p;
    };
    AttentionCall c;
    c.batch = queryRows;
    if (s.chunked) {
      std::vector<int32_t> sequences(queryRows, 0);
      void *rows = make(sequences.size() * 4, 0, true);
      std::memcpy(rows, sequences.data(), sequences.size() * 4);
      c.rowSequences = static_cast<const int32_t *>(rows);
      c.sequences = 1;
    }
    c.bodyCapacity = tokens;
    // Paged: the body is `pages` pages of the spec's page tokens, stored in
    // reverse order; the block table is read too.
    int rows = hkv, rowTokens = tokens;
    if (s.pageTokens) {
      int pages = tokens / s.pageTokens;
      for (int i = 0; i < pages; ++i)
        blockTable.push_back(pages - 1 - i);
      void *table = make(blockTable.size() * 4, 0, true);
      std::memcpy(table, blockTable.data(), blockTable.size() * 4);
      c.blockTable = static_cast<const int32_t *>(table);
      c.maxPages = c.numPages = pages;
      c.bodyCapacity = 0;
      rows = pages * hkv;
      rowTokens = s.pageTokens;
    }
    c.sinkCapacity = 4;
    c.residualCapacity = residual;
    c.tokensPerSplit = 256;
    c.q = half(size_t(queryRows) * hq * d);
    if (s.kind == KernelKind::DenseAttention) {
      c.keys = half(size_t(hkv) * tokens * d);
      c.values = half(size_t(hkv) * tokens * d);
    } else {
      const void **words[] = {&c.keyWords, &c.valueWords};
      const void **scales[] = {&c.keyScales, &c.valueScales};
      const void **zeros[] = {&c.keyZeros, &c.valueZeros};
      for (int i = 0; i < 2; ++i) {
        const QuantScheme &q = i == 0 ? s.key : s.value;
        *words[i] = make(packedWordCount(q, d, rows, rowTokens) * 4,
                         i == 0 ? 0x5a : 0xa5, true);
        size_t halves = scaleCount(q, d, rows, rowTokens) * scaleBytes(q) / 2;
        *scales[i] = half(halves);
        if (!q.symmetric)
          *zeros[i] = half(halves);
      }
    }
    c.sinkKeys = half(size_t(hkv) * c.sinkCapacity * d);
    c.sinkValues = half(size_t(hkv) * c.sinkCapacity * d);
    c.residualKeys = half(size_t(hkv) * residual * d);
    c.residualValues = half(size_t(hkv) * residual * d);
    void *lengths = make(lens.size() * 4, 0, false);
    std::memcpy(lengths, lens.data(), lens.size() * 4);
    c.lengths = static_cast<const int32_t *>(lengths);
    c.hostLengths = lens.data();
    c.out = make(size_t(queryRows) * hq * d * 2, 0, false);
    c.workspace = make(attentionWorkspaceBytes(s, source, c), 0, false);
    llvm::Expected<std::vector<KernelLaunch>> launches =
        planAttention(s, source, c);
    if (!launches) {
      std::fprintf(stderr, "%s\n",
                   llvm::toString(launches.takeError()).c_str());
      std::exit(1);
    }
    launch = std::move(launches->front());
  }
  uint64_t threads() const {
    return uint64_t(launch.grid[0]) * launch.grid[1] * launch.grid[2] *
           launch.block[0];
  }
};

/// The attention kernel of `spec` over one sequence, traced and untraced.
void attention(const char *spec, int tokens) {
  KernelSpec s;
  parseKernelSpec(spec, s);
  GeneratedSource source;
  auto m = compile(s, source);
  const GeneratedKernel &k = source.kernels[0];
  AttentionSetup setup(s, source, tokens, 64);
  std::string title = std::string(k.name) + "  (" + spec + ", " +
                      std::to_string(tokens) + " quantized tokens, batch 1)";
  measure(title.c_str(), *m, setup.minimumBytes, setup.threads(),
          [&](emu::Module &mod, const emu::LaunchOptions &o) {
            return mod.launch(setup.launch, o);
          });
}

/// Bytes one decode step's attention kernel fetches, per preset and for the
/// fp16 baseline, against what it must read, and the PROJECTED time of
/// those bytes at 3.35 TB/s x 90 % (H100 SXM).
void decodeStepTable(const char *modelName, int tokens) {
  ModelShape model = *findModel(modelName);
  std::printf("\n## Bytes per decode step (%s, one layer, one sequence: %d "
              "quantized + 4 sink + 128 residual tokens)\n\n",
              modelName, tokens);
  std::printf("`fetched`: unique 32-byte sectors the attention kernel loads "
              "x 32 (the emulator's trace); `minimum`: codes + scales + "
              "zeros (or fp16 K/V) + fp16 sink and residual + q. Projection: "
              "fetched bytes at 3.35 TB/s x 90 %%, not a measurement.\n\n");
  std::printf(
      "| kernel | minimum B | fetched B | fetched / minimum | "
      "projected us | vs fp16 (projected) |\n|---|---|---|---|---|---|\n");
  double fp16Us = 0;
  std::vector<std::pair<std::string, KernelSpec>> specs = {
      {"fp16 baseline", KernelSpec::forDenseAttention(
                            model.headDim, model.queryHeads, model.kvHeads,
                            HalfType::F16, true, true)}};
  for (const char *preset :
       {"kivi2", "kivi4", "hf_quanto_int4", "int4", "int8"})
    specs.push_back({preset, kernelsFor(*findPreset(preset), model).back()});
  for (const auto &[label, spec] : specs) {
    GeneratedSource source;
    auto m = compile(spec, source);
    const GeneratedKernel &k = source.kernels[0];
    AttentionSetup setup(spec, source, tokens, 128);
    emu::LaunchOptions traced;
    traced.traceTraffic = true;
    if (llvm::Error e = m->launch(setup.launch, traced)) {
      std::fprintf(stderr, "%s\n", llvm::toString(std::move(e)).c_str());
      std::exit(1);
    }
    uint64_t fetched = m->lastTraffic().uniqueLoadSectors * 32;
    double us = fetched / (3.35e12 * 0.9) * 1e6;
    if (spec.kind == KernelKind::DenseAttention)
      fp16Us = us;
    std::printf("| %s (`%s`) | %llu | %llu | %.3fx | %.2f | %.2fx |\n",
                label.c_str(), k.name.c_str(),
                (unsigned long long)setup.minimumBytes,
                (unsigned long long)fetched,
                double(fetched) / double(setup.minimumBytes), us, fp16Us / us);
  }
}

/// A causal chunk of query tokens of one sequence (chunked prefill,
/// speculative verification) on each attention path: the bytes its loads
/// request (sectors x 32, each request counted: what the kernel asks of L2
/// and DRAM) against one query token's. A block per row on the CUDA cores;
/// on the tensor cores a block per queryRows rows.
void chunkedRowsTable(const char *spec, int tokens, int queryTokens) {
  std::printf("\n## A chunk of %d query tokens (%s, %d quantized + 4 sink + "
              "128 residual tokens)\n\n",
              queryTokens, spec, tokens);
  std::printf("Bytes the attention kernel's loads request (sectors x 32, "
              "each request counted; the emulator's trace) for one query "
              "token and for the chunk.\n\n");
  std::printf("| path | kernel | query rows a block | one token B | chunk B | "
              "chunk / one token |\n|---|---|---|---|---|---|\n");
  for (const char *path : {"cuda-cores", "tensor-cores"}) {
    KernelSpec s;
    parseKernelSpec(std::string(spec) + " path=" + path, s);
    GeneratedSource source;
    auto m = compile(s, source);
    const GeneratedKernel &k = source.kernels[0];
    uint64_t requested[2] = {0, 0};
    for (int run = 0; run < 2; ++run) {
      AttentionSetup setup(s, source, tokens, 128, run ? queryTokens : 1);
      emu::LaunchOptions traced;
      traced.traceTraffic = true;
      if (llvm::Error e = m->launch(setup.launch, traced)) {
        std::fprintf(stderr, "%s\n", llvm::toString(std::move(e)).c_str());
        std::exit(1);
      }
      for (const emu::SiteTraffic &site : m->lastTraffic().sites)
        if (!site.store)
          requested[run] += site.sectors * 32;
    }
    std::printf("| %s | `%s` | %lld | %llu | %llu | %.2fx |\n", path,
                k.name.c_str(), (long long)k.plan.queryRowsPerBlock(),
                (unsigned long long)requested[0],
                (unsigned long long)requested[1],
                double(requested[1]) / double(requested[0]));
  }
}

void quantize(const char *spec, int rows, int tokens) {
  KernelSpec s;
  parseKernelSpec(spec, s);
  GeneratedSource source;
  auto m = compile(s, source);
  const GeneratedKernel &k = source.kernels[0];
  int d = s.headDim;
  Buffer in(size_t(rows) * tokens * d * 2);
  std::mt19937 rng(1);
  auto *h = static_cast<uint16_t *>(in.p);
  std::normal_distribution<float> normal;
  for (size_t i = 0; i < in.bytes / 2; ++i)
    h[i] = ref::toHalfBits(normal(rng), HalfType::F16);
  size_t scales = scaleCount(s.key, d, rows, tokens) * scaleBytes(s.key);
  Buffer words(packedWordCount(s.key, d, rows, tokens) * 4),
      scaleBuffer(scales), zeros(scales);
  QuantizeCall call{in.p,   words.p, scaleBuffer.p, zeros.p, rows,
                    tokens, tokens,  tokens,        0};
  llvm::Expected<KernelLaunch> launch = planQuantize(s, source, call);
  if (!launch) {
    std::fprintf(stderr, "%s\n", llvm::toString(launch.takeError()).c_str());
    std::exit(1);
  }
  std::string title = std::string(k.name) + "  (" + std::to_string(rows) +
                      " rows x " + std::to_string(tokens) + " tokens)";
  uint64_t threads = uint64_t(launch->grid[0]) * launch->grid[1] *
                     launch->grid[2] * launch->block[0];
  measure(title.c_str(), *m, in.bytes, threads,
          [&](emu::Module &mod, const emu::LaunchOptions &o) {
            return mod.launch(*launch, o);
          });
}

} // namespace

int main() {
  std::printf("kvq emulator bench: traffic per access site and emulator "
              "speed (2-core CPU; not GPU timings)\n");
  attention("attention k=2c32 v=2t32 d=128 hq=32 hkv=8", 1024);
  attention("attention k=2c32 v=2t32 d=128 hq=32 hkv=8 paged=64", 1024);
  attention("attention k=2c32 v=2t32 d=128 hq=32 hkv=8 paged=256", 4096);
  attention("attention k=4t64 v=4t64 d=128 hq=32 hkv=8", 1024);
  attention("attention k=8t64 v=8t64 d=128 hq=32 hkv=32", 512);
  attention("dense-attention d=128 hq=32 hkv=8", 1024);
  quantize("quantize 2c32 d=128", 8, 128);
  quantize("quantize 4t64 d=128", 8, 128);
  decodeStepTable("llama-3-8b", 1024);
  chunkedRowsTable(
      "attention k=2c32 v=2t32i d=128 hq=32 hkv=8 paged=64 chunked", 1024, 8);
  return 0;
}
