//===- kvq-fuzz.cpp - seeded mutation fuzzing of kvq's input readers ------===//
//
//   kvq-fuzz --target=spec|bundle|ir --runs=N [--seed=S] [SEED_FILES...]
//
// Every reader of outside input gets mutated inputs, derived from seeds by
// bit flips, byte edits, token insertions, deletions, duplications and
// splices, deterministically from --seed:
//   spec    parseKernelSpec + validate; a spec that parses must print a
//           canonical text that parses back to the same spec;
//   bundle  Bundle::parse, the reader of kernel bundles and of every disk
//           cache entry (`<key>.kvqe`); whatever it accepts must serialize
//           and parse back identically. Half the inputs are whole files;
//           the other half are manifests sealed with a correct checksum
//           before parsing, as a hostile bundle would be, so mutations reach
//           the manifest's validation and not only the checksum;
//   ir      the kvq IR parser and verifier (kvq-opt's input), and for IR
//           that verifies, the whole generator down to CUDA C++.
// A crash or a hang (60 s per input) ends the process with the input
// printed; otherwise it prints what it ran. No compiler flags or clang are
// needed (libFuzzer is not in this toolchain), so it runs in the test suite.
//
//===----------------------------------------------------------------------===//

#include "kvq/Cache/Bundle.h"
#include "kvq/Cache/CacheKey.h"
#include "kvq/Codegen/Generator.h"
#include "kvq/Codegen/KernelSpec.h"
#include "kvq/Registration/Registration.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <unistd.h>

namespace cl = llvm::cl;
using namespace kvq;

namespace {

cl::OptionCategory category("kvq-fuzz options");
cl::opt<std::string> target("target", cl::desc("spec, bundle or ir"),
                            cl::Required, cl::cat(category));
cl::opt<unsigned> runs("runs", cl::init(10000),
                       cl::desc("Mutated inputs to run"), cl::cat(category));
cl::opt<unsigned> seed("seed", cl::init(1), cl::desc("Mutation seed"),
                       cl::cat(category));
cl::list<std::string> seedFiles(cl::Positional, cl::desc("[seed files...]"),
                                cl::cat(category));

/// The input being run, for the crash report.
std::string current;
/// Inputs the target accepted (a valid spec, an intact bundle, verified IR):
/// how deep the mutations reach.
unsigned accepted = 0;

void reportAndDie(int signal) {
  // Only async-signal-safe calls: write(2) and _exit.
  const char header[] = "\nkvq-fuzz: crash or timeout on this input:\n";
  (void)!::write(2, header, sizeof header - 1);
  (void)!::write(2, current.data(), current.size());
  (void)!::write(2, "\n", 1);
  ::_exit(128 + signal);
}

/// Deterministic mutations of seed inputs.
class Mutator {
public:
  Mutator(std::vector<std::string> seeds, std::vector<std::string> tokens,
          unsigned seed)
      : seeds(std::move(seeds)), tokens(std::move(tokens)), rng(seed) {}

  std::string next() {
    std::string s = seeds[pick(seeds.size())];
    int edits = 1 + int(pick(4));
    for (int i = 0; i < edits; ++i)
      mutate(s);
    return s;
  }

private:
  size_t pick(size_t n) {
    return n ? std::uniform_int_distribution<size_t>(0, n - 1)(rng) : 0;
  }

  void mutate(std::string &s) {
    size_t at = pick(s.size() + 1);
    switch (pick(8)) {
    case 0: // flip a bit
      if (!s.empty())
        s[pick(s.size())] ^= char(1u << pick(8));
      break;
    case 1: { // an interesting byte
      static const char bytes[] = {'\0', '\xff', '-', '9', '0',  '"', '\\',
                                   '{',  '[',    ',', ' ', '\n', '%', 'x'};
      if (!s.empty())
        s[pick(s.size())] = bytes[pick(sizeof bytes)];
      break;
    }
    case 2: // a token of the input language
      s.insert(at, tokens[pick(tokens.size())]);
      break;
    case 3: // delete a range
      s.erase(at, pick(16) + 1);
      break;
    case 4: { // duplicate a range
      std::string piece = s.substr(at, pick(32) + 1);
      s.insert(pick(s.size() + 1), piece);
      break;
    }
    case 5: { // splice another seed
      const std::string &other = seeds[pick(seeds.size())];
      size_t from = pick(other.size() + 1);
      s = s.substr(0, at) + other.substr(from);
      break;
    }
    case 6: // a large number
      s.insert(at, std::to_string(int64_t(1) << pick(63)));
      break;
    default: // truncate
      s.resize(at);
      break;
    }
  }

  std::vector<std::string> seeds, tokens;
  std::mt19937_64 rng;
};

//===--- targets --------------------------------------------------------===//

void fuzzSpec(const std::string &text) {
  KernelSpec spec;
  if (parseKernelSpec(text, spec))
    return;
  if (spec.validate())
    return;
  ++accepted;
  // A valid spec's canonical text reads back as the same spec.
  KernelSpec again;
  if (auto error = parseKernelSpec(spec.canonical(), again)) {
    llvm::errs() << "kvq-fuzz: canonical text '" << spec.canonical()
                 << "' does not parse: " << *error << "\n";
    reportAndDie(SIGABRT);
  }
  if (again.canonical() != spec.canonical()) {
    llvm::errs() << "kvq-fuzz: '" << spec.canonical() << "' reads back as '"
                 << again.canonical() << "'\n";
    reportAndDie(SIGABRT);
  }
}

/// The payload the sealed-manifest inputs are followed by.
std::string bundlePayload;

void fuzzBundle(const std::string &input) {
  std::string bytes = input;
  if (input.rfind("kvq-bundle ", 0) != 0) // a manifest: seal it
    bytes = "kvq-bundle 1\n" + std::to_string(input.size()) + " " +
            cache::sha256Hex(input) + "\n" + input + bundlePayload;
  llvm::Expected<cache::Bundle> bundle = cache::Bundle::parse(bytes, "fuzz");
  if (!bundle) {
    llvm::consumeError(bundle.takeError());
    return;
  }
  ++accepted;
  // Whatever is accepted round-trips.
  llvm::Expected<std::string> again =
      cache::Bundle::serialize(bundle->entries());
  if (!again) {
    llvm::errs() << "kvq-fuzz: an accepted bundle does not serialize: "
                 << llvm::toString(again.takeError()) << "\n";
    reportAndDie(SIGABRT);
  }
  llvm::Expected<cache::Bundle> reread = cache::Bundle::parse(*again, "again");
  if (!reread || reread->entries().size() != bundle->entries().size()) {
    if (!reread)
      llvm::consumeError(reread.takeError());
    llvm::errs() << "kvq-fuzz: an accepted bundle does not read back\n";
    reportAndDie(SIGABRT);
  }
}

struct IrTarget {
  IrTarget() : generator() {
    mlir::kvq::registerKVQDialects(registry);
    // Diagnostics of rejected inputs are the expected outcome: drop them.
    generator.context().getDiagEngine().registerHandler(
        [](mlir::Diagnostic &) { return mlir::success(); });
  }
  void operator()(const std::string &text) {
    mlir::MLIRContext &context = generator.context();
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::parseSourceString<mlir::ModuleOp>(text, &context);
    if (!module || mlir::failed(mlir::verify(*module)))
      return;
    ++accepted;
    llvm::Expected<GeneratedSource> source =
        generator.generate(*module, GeneratorOptions());
    if (!source)
      llvm::consumeError(source.takeError());
  }
  mlir::DialectRegistry registry;
  Generator generator;
};

std::vector<std::string> defaultSeeds(const std::string &name) {
  if (name == "spec")
    return {"attention k=2c32 v=2t32 d=128 hq=32 hkv=8",
            "attention k=4t64s v=8chdx d=64 hq=4 hkv=1 bf16 sink",
            "quantize 2c32 d=128", "dequantize 4t64ix d=256 bf16",
            "dense-attention d=128 hq=32 hkv=8 residual"};
  // A small bundle of two entries, as `kvq-cache export` writes them.
  std::vector<cache::Entry> entries;
  for (const char *spec :
       {"quantize 2c32 d=64 f16", "quantize 4t64 d=64 f16"}) {
    cache::KeyInputs in;
    in.spec = spec;
    in.backend = "cuda";
    in.target = "sm_90";
    cache::Entry e;
    e.info["key_inputs"] = cache::canonicalKeyText(in);
    e.key = cache::computeKey(in);
    e.info["spec"] = spec;
    e.info["kernels"] =
        R"([{"name":"k","block_threads":128,"plan":{"threads":128}}])";
    e.files["kernels.cubin"] = std::string("\x7f"
                                           "ELF") +
                               spec;
    e.files["kernels.ptx"] = "// ptx";
    entries.push_back(e);
  }
  std::string bundle = llvm::cantFail(cache::Bundle::serialize(entries));
  // Split it into its manifest and payload (header: magic, length + sum).
  size_t headerEnd = bundle.find('\n', bundle.find('\n') + 1) + 1;
  size_t length = std::stoull(bundle.substr(13));
  bundlePayload = bundle.substr(headerEnd + length);
  return {bundle, bundle.substr(headerEnd, length)};
}

std::vector<std::string> tokensFor(const std::string &name) {
  if (name == "spec")
    return {"attention", "quantize",   "dequantize", "dense-attention",
            "k=",        "v=",         "d=",         "hq=",
            "hkv=",      "2c32",       "4t64",       "8thd",
            "s",         "i",          "x",          "bf16",
            "f16",       "sink",       "residual",   "0",
            "-1",        "4294967296", " "};
  if (name == "bundle")
    return {"kvq-bundle 1\n",
            "\"offset\":",
            "\"size\":",
            "\"sha256\":",
            "\"key_inputs\"",
            "\"entries\":[",
            "{",
            "}",
            "[",
            "]",
            ",",
            "\"name\":\"../x\"",
            "99999999999",
            "-1",
            "\\u0000"};
  return {"kvq.quantize",
          "kvq.pack",
          "kvq.dequantize",
          "kvq.attention",
          "kvq.quantized_attention",
          "#kvq.scheme<",
          "bits = 2",
          "bits = 3",
          "group = 32",
          "group = 0",
          "axis = channel",
          "axis = token",
          "symmetric",
          "tensor<1x2x128x64xf16>",
          "tensor<?x?xf16>",
          "xi32",
          "xf32",
          "xbf16",
          "%arg0",
          "func.func @f(",
          "-> ",
          "return",
          "{",
          "}",
          ":",
          ",",
          "0x0",
          "65536x"};
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(argc, argv, "kvq input fuzzer\n");
  if (target != "spec" && target != "bundle" && target != "ir") {
    llvm::errs() << "kvq-fuzz: --target must be spec, bundle or ir, got '"
                 << target << "'\n";
    return 2;
  }
  std::vector<std::string> seeds;
  for (const std::string &file : seedFiles) {
    auto buffer = llvm::MemoryBuffer::getFile(file);
    if (!buffer) {
      llvm::errs() << "kvq-fuzz: cannot read seed " << file << "\n";
      return 2;
    }
    // IR test files hold several cases separated by `// -----`.
    llvm::StringRef text = (*buffer)->getBuffer();
    llvm::SmallVector<llvm::StringRef> cases;
    text.split(cases, "// -----");
    for (llvm::StringRef c : cases)
      seeds.push_back(c.str());
  }
  if (seeds.empty()) {
    if (target == "ir") {
      llvm::errs() << "kvq-fuzz: --target=ir needs seed files (kvq IR)\n";
      return 2;
    }
    seeds = defaultSeeds(target);
  }

  std::function<void(const std::string &)> run;
  std::unique_ptr<IrTarget> ir;
  if (target == "spec") {
    run = fuzzSpec;
  } else if (target == "bundle") {
    run = fuzzBundle;
  } else {
    ir = std::make_unique<IrTarget>();
    run = [&](const std::string &text) { (*ir)(text); };
  }

  for (int signal : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGALRM})
    std::signal(signal, reportAndDie);
  // Test-only: crash on inputs containing this text, so the test suite sees
  // a crash reported with its input (test/Fuzz/fuzz.test).
  const char *crashOn = std::getenv("KVQ_FUZZ_CRASH_ON");
  if (crashOn && *crashOn) {
    auto inner = run;
    run = [inner, crashOn](const std::string &text) {
      if (text.find(crashOn) != std::string::npos)
        std::raise(SIGSEGV);
      inner(text);
    };
  }
  Mutator mutator(seeds, tokensFor(target), seed);
  auto start = std::chrono::steady_clock::now();
  for (const std::string &s : seeds) { // the seeds themselves first
    current = s;
    run(current);
  }
  for (unsigned i = 0; i < runs; ++i) {
    current = mutator.next();
    ::alarm(60);
    run(current);
  }
  ::alarm(0);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  llvm::outs() << "kvq-fuzz: " << target << ": " << runs
               << " mutated inputs from " << seeds.size() << " seeds (seed "
               << seed << ") in " << llvm::format("%.1f", seconds) << " s, "
               << accepted
               << " accepted; no crash, hang or broken round trip\n";
  return 0;
}
