//===- perf_report.cpp - kernel quality and a bandwidth projection
//---------===//
//
// Without a GPU: (1) ptxas statistics and the occupancy they allow for the
// attention kernel of each preset (and the fp16 baseline generated the same
// way) on sm_80 and sm_90; (2) a roofline PROJECTION of decode-attention time
// per layer from the bytes each kernel must read, at 3.35 TB/s (H100 SXM) and
// 90 % efficiency. The emulator measured these kernels fetching 1.000x the
// bytes of their inputs (kvq-emulator-bench), which is what makes the byte
// count a fair basis; it is still a projection, not a measurement.
//
//   build/bin/kvq-perf-report
//
//===----------------------------------------------------------------------===//

#include "SassStats.h"

#include "kvq/Codegen/Generator.h"
#include "kvq/Runtime/NVRTC.h"
#include "kvq/Runtime/Presets.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <algorithm>
#include <cstdio>
#include <map>

using namespace kvq;

namespace {

struct ArchLimits {
  const char *arch;
  int registersPerSM, sharedPerSM, threadsPerSM, blocksPerSM;
  /// The reference part (SXM A100 / H100): SMs, boost clock, DRAM bandwidth.
  int sms;
  double clockHz, bandwidth;

  /// Thread-instructions the SMs can issue per byte DRAM delivers (4 warp
  /// schedulers per SM, one warp instruction each per clock): a kernel that
  /// issues more per byte it streams cannot be bandwidth-bound.
  double issueBudgetPerByte() const {
    return sms * 4 * clockHz * 32 / bandwidth;
  }
};
const ArchLimits kArchs[] = {
    {"sm_80", 65536, 164 * 1024, 2048, 32, 108, 1.41e9, 2.039e12},
    {"sm_90", 65536, 228 * 1024, 2048, 32, 132, 1.98e9, 3.35e12}};

/// SASS of each reported kernel, printed after the ptxas table.
struct SassRow {
  std::string label, arch, kernel;
  sass::Function code;
  double budget;
};
std::vector<SassRow> sassRows;
std::string sassProblem;

/// Resident blocks per SM from registers (allocated per warp in units of
/// 256), static shared memory and thread limits.
int occupancyBlocks(const ArchLimits &a, int registers, int shared,
                    int threads) {
  int warps = (threads + 31) / 32;
  int perWarp = (registers * 32 + 255) / 256 * 256;
  int byRegs = registers ? a.registersPerSM / (perWarp * warps) : 32;
  int bySmem = shared ? a.sharedPerSM / (shared + 1024) : 32;
  int byThreads = a.threadsPerSM / threads;
  return std::min({byRegs, bySmem, byThreads, a.blocksPerSM});
}

void statsRow(const char *label, const GeneratedSource &source) {
  for (const ArchLimits &a : kArchs) {
    NVRTCOptions options;
    options.arch = a.arch;
    llvm::Expected<CompiledModule> compiled =
        compileCuda(source.cuda, "report.cu", options);
    if (!compiled) {
      std::printf("%s: %s\n", label,
                  llvm::toString(compiled.takeError()).c_str());
      continue;
    }
    std::map<std::string, sass::Function> code;
    if (sassProblem.empty()) {
      llvm::Expected<std::string> listing =
          sass::disassemble(compiled->cubin, KVQ_TOOLS_DIR);
      if (listing)
        code = sass::parse(*listing);
      else
        sassProblem = llvm::toString(listing.takeError());
    }
    for (const GeneratedKernel &k : source.kernels) {
      if (k.kind != "attention")
        continue;
      if (code.count(k.name))
        sassRows.push_back(
            {label, a.arch, k.name, code[k.name], a.issueBudgetPerByte()});
      const PtxasStats &s = compiled->stats[k.name];
      int blocks = occupancyBlocks(a, s.registers, s.sharedBytes, k.threads);
      std::printf("| %-16s | %-5s | %4d | %5d | %6d | %6d | %3d | %5.0f%% |\n",
                  label, a.arch, k.threads, s.registers,
                  s.spillStoreBytes + s.spillLoadBytes, s.sharedBytes, blocks,
                  100.0 * blocks * k.threads / a.threadsPerSM);
    }
  }
}

/// Bytes one decode-attention call reads per layer: the packed codes and
/// scales (or fp16 K/V), the fp16 sink and residual, the queries.
double attentionBytes(const CachePreset *preset, const ModelShape &m,
                      double tokens) {
  double kvRows = m.kvHeads, d = m.headDim;
  double queries = m.queryHeads * d * 2;
  if (!preset)
    return tokens * kvRows * d * 2 * 2 + queries;
  auto perElement = [&](const QuantScheme &s) {
    double g = s.group ? s.group : d;
    double scaleBits = (s.fp32Scales ? 32 : 16) * (s.symmetric ? 1 : 2);
    return (s.bits + scaleBits / g) / 8;
  };
  double fp16Tokens = std::min(tokens, double(preset->sink + preset->residual));
  double quantized = tokens - fp16Tokens;
  return quantized * kvRows * d *
             (perElement(preset->key) + perElement(preset->value)) +
         fp16Tokens * kvRows * d * 2 * 2 + queries;
}

/// The SASS table: what ptxas made of each attention kernel.
void printSass() {
  std::printf("\n## SASS of the attention kernels (cuobjdump -sass)\n\n");
  if (!sassProblem.empty()) {
    std::printf("Not available: %s.\n", sassProblem.c_str());
    return;
  }
  std::printf(
      "Static counts. *Streaming loops* are the innermost loops that hold a "
      "128-bit global load (`LDG.E.128`): the loops that read the KV cache "
      "(keys, then values), with their instructions per byte loaded, per "
      "thread. *Budget*: the thread-instructions the SMs can issue per byte "
      "of DRAM bandwidth (A100 / H100 SXM clocks); a loop above it cannot "
      "stream at full bandwidth. Scoring and accumulating from shared memory "
      "come on top, so these are lower bounds of the per-byte work.\n\n");
  std::printf("| kernel | arch | instr | LDG.128 | other LDG | LDS | STS | "
              "SHFL | streaming loops: instr / 16 B loads = instr per byte "
              "| budget |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (const SassRow &r : sassRows) {
    std::string loops;
    for (const sass::Loop &l : r.code.streamingLoops) {
      char text[96];
      std::snprintf(text, sizeof text, "%s%d / %d = %.1f",
                    loops.empty() ? "" : "; ", l.instructions, l.wideLoads,
                    l.instructionsPerByte());
      loops += text;
    }
    std::printf("| %s | %s | %d | %d | %d | %d | %d | %d | %s | %.1f |\n",
                r.label.c_str(), r.arch.c_str(), r.code.instructions,
                r.code.wideLoads, r.code.otherGlobalLoads, r.code.sharedLoads,
                r.code.sharedStores, r.code.shuffles,
                loops.empty() ? "none" : loops.c_str(), r.budget);
  }
}

} // namespace

int main() {
  std::printf(
      "# kvq performance report (no GPU: statistics and a projection)\n\n");
  std::printf("## Attention kernels, Llama-3-8B shape (32 q / 8 kv heads, "
              "head_dim 128), sink + residual\n\n");
  std::printf("| kernel           | arch  | thr  | regs  | spill  | smem B | "
              "blk | occup. |\n|---|---|---|---|---|---|---|---|\n");
  ModelShape llama3 = *findModel("llama-3-8b");
  Generator generator;
  for (const char *name :
       {"kivi2", "kivi4", "hf_quanto_int4", "int4", "int8"}) {
    std::optional<CachePreset> preset = findPreset(name);
    KernelSpec spec = kernelsFor(*preset, llama3).back();
    llvm::Expected<GeneratedSource> source =
        generator.generate(spec, GeneratorOptions());
    if (!source) {
      std::printf("%s\n", llvm::toString(source.takeError()).c_str());
      return 1;
    }
    statsRow(name, *source);
  }
  const char *dense = R"mlir(
func.func @dense(%q: tensor<?x32x128xf16>, %k: tensor<?x8x?x128xf16>,
    %v: tensor<?x8x?x128xf16>, %sk: tensor<?x8x?x128xf16>,
    %sv: tensor<?x8x?x128xf16>, %rk: tensor<?x8x?x128xf16>,
    %rv: tensor<?x8x?x128xf16>, %l: tensor<?x3xi32>) -> tensor<?x32x128xf16> {
  %o = kvq.attention %q, keys(%k), values(%v) sink(%sk, %sv)
      residual(%rk, %rv) lengths(%l) scale 0.0883883461
      : (tensor<?x32x128xf16>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>,
         tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>,
         tensor<?x8x?x128xf16>, tensor<?x3xi32>) -> tensor<?x32x128xf16>
  return %o : tensor<?x32x128xf16>
})mlir";
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(dense, &generator.context());
  if (!module)
    return 1;
  llvm::Expected<GeneratedSource> baseline =
      generator.generate(*module, GeneratorOptions());
  if (!baseline) {
    std::printf("%s\n", llvm::toString(baseline.takeError()).c_str());
    return 1;
  }
  statsRow("fp16 baseline", *baseline);
  printSass();

  std::printf("\n## PROJECTION: decode attention per layer and sequence at "
              "3.35 TB/s x 90 %%\n\n(bytes that must be read / bandwidth; "
              "not measured on a GPU)\n\n");
  std::printf("| model | tokens | fp16 | kivi2 | kivi4 | hf_quanto_int4 | "
              "int8 | kivi2 speedup | int4 speedup |\n"
              "|---|---|---|---|---|---|---|---|---|\n");
  double bandwidth = 3.35e12 * 0.9;
  for (const char *modelName : {"llama-2-7b", "llama-3-8b"}) {
    ModelShape m = *findModel(modelName);
    for (double tokens : {1024.0, 8192.0, 32768.0, 131072.0}) {
      auto us = [&](const char *preset) {
        std::optional<CachePreset> p;
        if (preset)
          p = findPreset(preset);
        return attentionBytes(p ? &*p : nullptr, m, tokens) / bandwidth * 1e6;
      };
      double fp16 = us(nullptr);
      std::printf("| %s | %.0fk | %.2f us | %.2f us | %.2f us | %.2f us | "
                  "%.2f us | %.2fx | %.2fx |\n",
                  modelName, tokens / 1024, fp16, us("kivi2"), us("kivi4"),
                  us("hf_quanto_int4"), us("int8"), fp16 / us("kivi2"),
                  fp16 / us("int4"));
    }
  }
  std::printf("\nThe projection assumes every kernel is bandwidth-bound. "
              "Short contexts are launch- and latency-bound on a real GPU "
              "(the best fp16 kernels reach 15-47 %% of bandwidth there), and "
              "at 2 bits the dequantization work (a few instructions per "
              "code) may bind before bandwidth does: only a GPU run can "
              "tell.\n");
  return 0;
}
