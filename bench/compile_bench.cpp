//===- compile_bench.cpp - how long spec -> PTX/CUBIN takes ---------------===//
//
// For a fixed set of specs (the kernels real configurations need), times
//   MLIR:  spec -> kvq IR -> pipeline -> CUDA C++ text
//   PTX:   nvrtc, compute_XX (PTX only)
//   CUBIN: nvrtc, sm_XX (PTX + CUBIN + ptxas statistics)
// each `--repeat` times (fresh compilations, no cache), and prints per-spec
// medians and the median over all specs. Run:
//   build/bin/kvq-compile-bench [--arch=sm_90] [--repeat=5]
//
//===----------------------------------------------------------------------===//

#include "kvq/Codegen/Generator.h"
#include "kvq/Runtime/NVRTC.h"
#include "kvq/Runtime/Presets.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace kvq;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// The kernels of the presets (kivi2, kivi4, hf_quanto_int4, int8, int4) for
/// Llama-2-7B (32 heads) and Llama-3-8B (32 q / 8 kv heads) shapes, plus odd
/// ones (head_dim 64/96/256, bf16, symmetric, interleaved).
const char *kSpecs[] = {
    "attention k=2c32 v=2t32 d=128 hq=32 hkv=32",
    "attention k=2c32 v=2t32 d=128 hq=32 hkv=8",
    "attention k=4c32 v=4t32 d=128 hq=32 hkv=8",
    "attention k=4t64 v=4t64 d=128 hq=32 hkv=32",
    "attention k=4t64 v=4t64 d=128 hq=32 hkv=8",
    "attention k=8t64 v=8t64 d=128 hq=32 hkv=8",
    "attention k=4t32s v=4t32s d=128 hq=32 hkv=8",
    "attention k=2c32i v=4t64i d=128 hq=32 hkv=8 bf16",
    "attention k=4t64 v=4t64 d=64 hq=16 hkv=16",
    "attention k=2thd v=2thd d=96 hq=32 hkv=32",
    "attention k=4c64 v=4t64 d=256 hq=16 hkv=8",
    "attention k=8c32 v=2t32 d=128 hq=8 hkv=1",
    "quantize 2c32 d=128",
    "quantize 2t32 d=128",
    "quantize 4c32 d=128",
    "quantize 4t64 d=128",
    "quantize 8t64 d=128",
    "quantize 4t32sx d=128 bf16",
    "dequantize 2c32 d=128",
    "dequantize 4t64 d=128",
    "dequantize 8t64 d=128",
    "quantize 2thd d=96",
};

/// Medians of one spec's cold compile (ms) and the most registers used.
struct Row {
  double mlir = 0, ptx = 0, cubin = 0, total = 0;
  int registers = 0;
};

llvm::Expected<Row> measure(Generator &generator, const KernelSpec &spec,
                            const std::string &arch, int repeat) {
  std::string virtualArch = "compute_" + arch.substr(arch.find('_') + 1);
  std::vector<double> mlir, ptx, cubin, total;
  Row row;
  for (int r = 0; r < repeat; ++r) {
    GeneratorOptions options;
    options.arch = arch;
    llvm::Expected<GeneratedSource> source = generator.generate(spec, options);
    if (!source)
      return source.takeError();
    NVRTCOptions ptxOnly;
    ptxOnly.arch = virtualArch;
    ptxOnly.cubin = false;
    llvm::Expected<CompiledModule> p =
        compileCuda(source->cuda, "bench.cu", ptxOnly);
    if (!p)
      return p.takeError();
    NVRTCOptions full;
    full.arch = arch;
    llvm::Expected<CompiledModule> c =
        compileCuda(source->cuda, "bench.cu", full);
    if (!c)
      return c.takeError();
    mlir.push_back(source->mlirMillis);
    ptx.push_back(p->millis);
    cubin.push_back(c->millis);
    total.push_back(source->mlirMillis + c->millis);
    for (auto &[name, stats] : c->stats)
      row.registers = std::max(row.registers, stats.registers);
  }
  row.mlir = median(mlir);
  row.ptx = median(ptx);
  row.cubin = median(cubin);
  row.total = median(total);
  return row;
}

} // namespace

int main(int argc, char **argv) {
  std::string arch = "sm_90";
  int repeat = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--arch=", 7) == 0)
      arch = argv[i] + 7;
    else if (std::strncmp(argv[i], "--repeat=", 9) == 0)
      repeat = std::max(1, std::atoi(argv[i] + 9));
    else {
      std::fprintf(stderr, "usage: %s [--arch=sm_90] [--repeat=5]\n", argv[0]);
      return 2;
    }
  }

  Generator generator;
  std::map<std::string, Row> measured; // by canonical spec text
  auto rowFor = [&](const KernelSpec &spec) -> llvm::Expected<Row> {
    auto it = measured.find(spec.canonical());
    if (it != measured.end())
      return it->second;
    llvm::Expected<Row> row = measure(generator, spec, arch, repeat);
    if (row)
      measured[spec.canonical()] = *row;
    return row;
  };
  auto fail = [](llvm::Error e) {
    std::fprintf(stderr, "%s\n", llvm::toString(std::move(e)).c_str());
    return 1;
  };

  std::vector<double> allMlir, allPtx, allCubin, allTotal;
  std::printf("kvq compile bench: arch=%s nvrtc=%s repeat=%d, medians in ms\n",
              arch.c_str(), nvrtcVersionString().c_str(), repeat);
  std::printf("%-52s %8s %8s %8s %10s %5s\n", "spec", "mlir", "ptx", "cubin",
              "mlir+cubin", "regs");
  for (const char *text : kSpecs) {
    KernelSpec spec;
    if (auto error = parseKernelSpec(text, spec)) {
      std::fprintf(stderr, "bad spec '%s': %s\n", text, error->c_str());
      return 1;
    }
    llvm::Expected<Row> row = rowFor(spec);
    if (!row)
      return fail(row.takeError());
    std::printf("%-52s %8.2f %8.1f %8.1f %10.1f %5d\n", text, row->mlir,
                row->ptx, row->cubin, row->total, row->registers);
    allMlir.push_back(row->mlir);
    allPtx.push_back(row->ptx);
    allCubin.push_back(row->cubin);
    allTotal.push_back(row->total);
  }
  std::printf("%-52s %8.2f %8.1f %8.1f %10.1f\n", "MEDIAN over specs",
              median(allMlir), median(allPtx), median(allCubin),
              median(allTotal));

  // What a cold start of one model configuration costs: every kernel its
  // QuantizedKVCache needs, compiled one after another (what the first
  // decode step pays without a warm disk cache; `kvq-cache warm` pays it
  // ahead of time).
  std::printf("\n%-12s %-15s %8s %12s\n", "model", "preset", "kernels",
              "cold ms");
  for (const char *modelName : {"llama-2-7b", "llama-3-8b"})
    for (const char *presetName :
         {"kivi2", "kivi4", "hf_quanto_int4", "int4", "int8"}) {
      double sum = 0;
      std::vector<KernelSpec> specs =
          kernelsFor(*findPreset(presetName), *findModel(modelName));
      for (const KernelSpec &spec : specs) {
        llvm::Expected<Row> row = rowFor(spec);
        if (!row)
          return fail(row.takeError());
        sum += row->total;
      }
      std::printf("%-12s %-15s %8zu %12.1f\n", modelName, presetName,
                  specs.size(), sum);
    }
  return 0;
}
