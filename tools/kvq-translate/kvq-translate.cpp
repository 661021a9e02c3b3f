//===- kvq-translate.cpp - kvq IR or a kernel spec to CUDA, PTX, CUBIN ----===//
//
//   kvq-translate examples/kivi2_decode.mlir --to=cuda
//   kvq-translate examples/kivi2_decode.mlir --to=ptx --arch=sm_80
//   kvq-translate --spec="attention k=2c32 v=2t32 d=128 hq=32 hkv=8" --to=stats
//   kvq-translate file.mlir --to=stage --stage=gpu
//
//===----------------------------------------------------------------------===//

#include "kvq/Codegen/Generator.h"
#include "kvq/Runtime/NVRTC.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

namespace cl = llvm::cl;

namespace {
enum class Output { Cuda, Ptx, Cubin, Stats, Stage };

cl::OptionCategory toolCategory("kvq-translate options");
cl::opt<std::string> inputFile(cl::Positional, cl::desc("<input .mlir>"),
                               cl::init("-"), cl::cat(toolCategory));
cl::opt<std::string>
    specText("spec",
             cl::desc("Generate from a kernel spec instead of a file, e.g. "
                      "\"attention k=2c32 v=2t32 d=128 hq=32 hkv=8\""),
             cl::cat(toolCategory));
cl::opt<Output> output(
    "to", cl::desc("What to produce"), cl::init(Output::Cuda),
    cl::values(clEnumValN(Output::Cuda, "cuda", "CUDA C++ (default)"),
               clEnumValN(Output::Ptx, "ptx", "PTX from nvrtc"),
               clEnumValN(Output::Cubin, "cubin", "CUBIN from nvrtc (binary)"),
               clEnumValN(Output::Stats, "stats",
                          "ptxas statistics per kernel"),
               clEnumValN(Output::Stage, "stage",
                          "the IR after one pipeline stage (--stage)")),
    cl::cat(toolCategory));
cl::opt<std::string> stage("stage",
                           cl::desc("kvq, planned, gpu or emitc (--to=stage)"),
                           cl::init("gpu"), cl::cat(toolCategory));
cl::opt<std::string> arch("arch", cl::desc("Target arch (sm_80, sm_90, ...)"),
                          cl::init("sm_90"), cl::cat(toolCategory));
cl::opt<bool> selfContained(
    "self-contained",
    cl::desc("Inline the device prelude so nvcc can compile the output"),
    cl::cat(toolCategory));
cl::opt<std::string> outputFile("o", cl::desc("Output file"), cl::init("-"),
                                cl::cat(toolCategory));

int fail(const llvm::Twine &message) {
  llvm::errs() << "kvq-translate: " << message << "\n";
  return 1;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // --help lists this tool's options, not every LLVM library's.
  cl::HideUnrelatedOptions(toolCategory);
  cl::ParseCommandLineOptions(
      argc, argv, "kvq IR or kernel spec -> CUDA C++, PTX, CUBIN\n");
  kvq::Generator generator;
  kvq::GeneratorOptions options;
  options.arch = arch;
  options.keepStages = output == Output::Stage;

  llvm::Expected<kvq::GeneratedSource> source =
      llvm::createStringError("no input");
  if (!specText.empty()) {
    kvq::KernelSpec spec;
    if (std::optional<std::string> error = kvq::parseKernelSpec(specText, spec))
      return fail(*error);
    source = generator.generate(spec, options);
  } else {
    std::string errorMessage;
    auto file = mlir::openInputFile(inputFile, &errorMessage);
    if (!file)
      return fail(errorMessage);
    llvm::SourceMgr sourceMgr;
    sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr, &generator.context());
    if (!module)
      return 1; // the parser printed the diagnostic
    source = generator.generate(*module, options);
  }
  if (!source)
    return fail(llvm::toString(source.takeError()));

  std::string errorMessage;
  auto out = mlir::openOutputFile(outputFile, &errorMessage);
  if (!out)
    return fail(errorMessage);
  llvm::raw_ostream &os = out->os();

  std::string cuda = source->cuda;
  if (selfContained) {
    std::string include = "#include \"" + std::string(kvq::kPreludeName) + "\"";
    size_t at = cuda.find(include);
    if (at != std::string::npos)
      cuda.replace(at, include.size(), kvq::devicePrelude());
  }

  switch (output) {
  case Output::Cuda:
    os << cuda;
    break;
  case Output::Stage: {
    for (auto &[name, text] : source->stages)
      if (name == stage.getValue()) {
        os << text << "\n";
        out->keep();
        return 0;
      }
    return fail("unknown stage '" + stage +
                "' (kvq, planned, gpu, emitc, cuda)");
  }
  case Output::Ptx:
  case Output::Cubin:
  case Output::Stats: {
    kvq::NVRTCOptions nvrtcOptions;
    nvrtcOptions.arch = arch;
    nvrtcOptions.cubin = output != Output::Ptx;
    llvm::Expected<kvq::CompiledModule> compiled =
        kvq::compileCuda(source->cuda, "kvq_kernels.cu", nvrtcOptions);
    if (!compiled)
      return fail(llvm::toString(compiled.takeError()));
    if (output == Output::Ptx)
      os << compiled->ptx;
    else if (output == Output::Cubin)
      os << compiled->cubin;
    else
      for (auto &[name, s] : compiled->stats)
        os << name << ": registers=" << s.registers
           << " spill_stores=" << s.spillStoreBytes
           << " spill_loads=" << s.spillLoadBytes << " stack=" << s.stackBytes
           << " smem=" << s.sharedBytes << " barriers=" << s.barriers << "\n";
    break;
  }
  }
  out->keep();
  return 0;
}
