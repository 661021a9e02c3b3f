//===- kvq-cache.cpp - inspect, verify, prune and warm the kernel cache ---===//
//
//   kvq-cache list                      one line per entry
//   kvq-cache show KEY                  spec, versions, kernels, ptxas log
//   kvq-cache verify                    check every checksum, drop corrupt
//   kvq-cache prune --max-mb=N          evict least recently used entries
//   kvq-cache clear                     remove every entry
//   kvq-cache warm --model=llama-3-8b --preset=kivi2 [--backend=cuda]
//   kvq-cache warm --spec="attention k=2c32 v=2t32 d=128 hq=32 hkv=8"
//
// The cache is $KVQ_CACHE_DIR, $XDG_CACHE_HOME/kvq or ~/.cache/kvq.
//
//===----------------------------------------------------------------------===//

#include "kvq/Cache/DiskCache.h"
#include "kvq/Runtime/Presets.h"
#include "kvq/Runtime/Runtime.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <ctime>

namespace cl = llvm::cl;
using namespace kvq;

namespace {
cl::OptionCategory toolCategory("kvq-cache options");
cl::opt<std::string> command(cl::Positional, cl::Required,
                             cl::desc("list|show|verify|prune|clear|warm"),
                             cl::cat(toolCategory));
cl::opt<std::string> argument(cl::Positional, cl::init(""), cl::desc("[key]"),
                              cl::cat(toolCategory));
cl::opt<std::string> cacheDir("dir", cl::desc("Cache directory"), cl::init(""),
                              cl::cat(toolCategory));
cl::opt<unsigned> maxMegabytes("max-mb", cl::desc("Size bound for prune"),
                               cl::init(1024), cl::cat(toolCategory));
cl::list<std::string> specs("spec", cl::desc("Kernel spec to warm"),
                            cl::cat(toolCategory));
cl::opt<std::string> model("model",
                           cl::desc("Model shape to warm (see --list-models)"),
                           cl::init(""), cl::cat(toolCategory));
cl::list<std::string> presets("preset", cl::desc("Cache preset(s) to warm"),
                              cl::cat(toolCategory));
cl::opt<std::string> backendName("backend",
                                 cl::desc("cuda (default) or emulator"),
                                 cl::init("cuda"), cl::cat(toolCategory));
cl::opt<std::string> arch("arch", cl::desc("Target arch for cuda"),
                          cl::init("sm_90"), cl::cat(toolCategory));

int fail(const llvm::Twine &message) {
  llvm::errs() << "kvq-cache: " << message << "\n";
  return 1;
}

std::string age(int64_t seconds) {
  int64_t now = std::time(nullptr);
  int64_t d = now - seconds;
  if (d < 120)
    return std::to_string(d) + "s ago";
  if (d < 7200)
    return std::to_string(d / 60) + "m ago";
  return std::to_string(d / 3600) + "h ago";
}

int warm(const std::string &dir) {
  std::vector<KernelSpec> wanted;
  for (const std::string &text : specs) {
    KernelSpec spec;
    if (auto error = parseKernelSpec(text, spec))
      return fail(*error);
    wanted.push_back(spec);
  }
  if (!model.empty()) {
    std::optional<ModelShape> shape = findModel(model);
    if (!shape)
      return fail("unknown model '" + model + "' (known: " + knownModels() +
                  ")");
    std::vector<std::string> names(presets.begin(), presets.end());
    if (names.empty())
      names = {"kivi2"};
    for (const std::string &name : names) {
      std::optional<CachePreset> preset = findPreset(name);
      if (!preset)
        return fail("unknown preset '" + name + "' (known: " + knownPresets() +
                    ")");
      for (const KernelSpec &spec : kernelsFor(*preset, *shape))
        wanted.push_back(spec);
    }
  }
  if (wanted.empty())
    return fail("warm needs --spec or --model (with --preset)");
  std::optional<Backend> backend = parseBackend(backendName);
  if (!backend || *backend == Backend::Reference || *backend == Backend::Auto)
    return fail("--backend must be cuda or emulator");
  RuntimeOptions options;
  options.backend = *backend;
  options.arch = arch;
  options.cacheDir = dir;
  options.compileOnly = true;
  llvm::Expected<std::unique_ptr<Runtime>> runtime = Runtime::create(options);
  if (!runtime)
    return fail(llvm::toString(runtime.takeError()));
  auto start = std::chrono::steady_clock::now();
  int compiled = 0, found = 0;
  for (const KernelSpec &spec : wanted) {
    auto kernels = (*runtime)->prepare(spec);
    if (!kernels)
      return fail(llvm::toString(kernels.takeError()));
    bool fresh = (*kernels)->origin == "compiled";
    (fresh ? compiled : found)++;
    llvm::outs() << llvm::formatv(
        "  {0,-9} {1}\n", fresh ? "compiled" : "on disk", spec.canonical());
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  llvm::outs() << llvm::formatv(
      "warmed {0} kernel specs for {1} {2} in {3:f1} s: {4} compiled, {5} "
      "already on disk ({6})\n",
      wanted.size(), backendName.getValue(),
      *backend == Backend::Cuda ? arch.getValue() : std::string("host"),
      seconds, compiled, found, (*runtime)->cacheDirectory());
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // --help lists this tool's options, not every LLVM library's.
  cl::HideUnrelatedOptions(toolCategory);
  cl::ParseCommandLineOptions(argc, argv, "kvq kernel cache tool\n");
  std::string dir = cacheDir.empty() ? cache::defaultCacheDir() : cacheDir;
  if (command == "warm")
    return warm(dir);
  llvm::Expected<cache::DiskCache> opened = cache::DiskCache::open(dir);
  if (!opened)
    return fail(llvm::toString(opened.takeError()));
  cache::DiskCache &disk = *opened;

  if (command == "list") {
    uint64_t total = 0;
    for (const cache::EntrySummary &e : disk.list()) {
      total += e.bytes;
      llvm::outs() << llvm::formatv(
          "{0}  {1,8} KB  {2,-9}  {3}\n", e.key.substr(0, 16), e.bytes / 1024,
          age(e.lastUsed),
          e.info.count("spec") ? e.info.at("spec") : std::string("?"));
    }
    llvm::outs() << llvm::formatv("{0} entries, {1} KB in {2}\n",
                                  disk.list().size(), total / 1024, dir);
    return 0;
  }
  if (command == "show") {
    for (const cache::EntrySummary &e : disk.list()) {
      if (argument.empty() || e.key.rfind(argument, 0) != 0)
        continue;
      std::string problem;
      std::optional<cache::Entry> entry = disk.load(e.key, &problem);
      if (!entry)
        return fail(problem.empty() ? "cannot read " + e.key : problem);
      llvm::outs() << "key " << e.key << "\n";
      for (const auto &[name, value] : entry->info)
        llvm::outs() << name << ":\n  " << value << "\n";
      for (const auto &[name, bytes] : entry->files)
        llvm::outs() << "file " << name << ": " << bytes.size() << " bytes\n";
      return 0;
    }
    return fail("no entry with a key starting '" + argument + "'");
  }
  if (command == "verify") {
    size_t before = disk.list().size();
    std::vector<std::string> corrupt = disk.verify();
    for (const std::string &key : corrupt)
      llvm::outs() << "removed corrupt entry " << key << "\n";
    llvm::outs() << before - corrupt.size() << " of " << before
                 << " entries intact\n";
    return corrupt.empty() ? 0 : 1;
  }
  if (command == "prune") {
    size_t removed = disk.prune(uint64_t(maxMegabytes) << 20);
    llvm::outs() << "evicted " << removed << " entries\n";
    return 0;
  }
  if (command == "clear") {
    disk.clear();
    llvm::outs() << "cleared " << dir << "\n";
    return 0;
  }
  return fail("unknown command '" + command +
              "' (list, show, verify, prune, clear, warm)");
}
