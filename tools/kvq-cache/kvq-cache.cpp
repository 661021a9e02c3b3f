//===- kvq-cache.cpp - inspect, verify, prune and warm the kernel cache ---===//
//
//   kvq-cache list                      one line per entry
//   kvq-cache show KEY                  spec, versions, kernels, ptxas log
//   kvq-cache verify                    check every checksum, drop corrupt
//   kvq-cache prune --max-mb=N          evict least recently used entries
//   kvq-cache clear                     remove every entry
//   kvq-cache warm --model=llama-3-8b --preset=kivi2 [--backend=cuda]
//   kvq-cache warm --spec="attention k=2c32 v=2t32 d=128 hq=32 hkv=8"
//   kvq-cache warm --spec-file=specs.txt --arch=sm_80 --arch=sm_90
//   kvq-cache export --out=kernels.kvqb --model=llama-3-8b --preset=kivi2
//                    [--arch=sm_80 --arch=sm_90] [--backend=emulator]
//   kvq-cache import kernels.kvqb      verify a bundle, install its entries
//   kvq-cache merge --out=all.kvqb a.kvqb b.kvqb   one bundle from several
//
// warm and export take the same selection (--spec, --spec-file, --model
// with --preset, --arch); export builds what the cache lacks, then writes
// every selected entry into one bundle (Bundle.h) that `import`, or a
// runtime given KVQ_BUNDLE, verifies before using a byte of it.
//
// The cache is $KVQ_CACHE_DIR, $XDG_CACHE_HOME/kvq or ~/.cache/kvq.
//
// Built twice: with the JIT (build/bin/kvq-cache) and runtime-only
// (build/runtime-only/bin/kvq-cache, in the GPU bundle), which runs where
// there is no LLVM/MLIR or nvrtc and can warm and export only what the
// cache already holds.
//
//===----------------------------------------------------------------------===//

#include "RemoteCommands.h"

#include "kvq/Cache/Bundle.h"
#include "kvq/Cache/DiskCache.h"
#include "kvq/Runtime/KernelKey.h"
#include "kvq/Runtime/Presets.h"
#include "kvq/Runtime/Runtime.h"
#include "kvq/Runtime/ToolCompiler.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"

#include <chrono>
#include <ctime>
#include <functional>
#include <set>

namespace cl = llvm::cl;
using namespace kvq;

namespace {
cl::OptionCategory toolCategory("kvq-cache options");
cl::opt<std::string> command(cl::Positional, cl::Required,
                             cl::desc("list|show|verify|prune|clear|warm|"
                                      "export|import|merge"),
                             cl::cat(toolCategory));
cl::list<std::string> arguments(cl::Positional,
                                cl::desc("[key | bundle file...]"),
                                cl::cat(toolCategory));
cl::opt<std::string> cacheDir("dir", cl::desc("Cache directory"), cl::init(""),
                              cl::cat(toolCategory));
cl::opt<unsigned> maxMegabytes("max-mb", cl::desc("Size bound for prune"),
                               cl::init(1024), cl::cat(toolCategory));
cl::list<std::string> specs("spec", cl::desc("Kernel spec to warm"),
                            cl::cat(toolCategory));
cl::opt<std::string> specFile("spec-file",
                              cl::desc("File of kernel specs, one per line "
                                       "(# starts a comment)"),
                              cl::init(""), cl::cat(toolCategory));
cl::list<std::string> models("model", cl::desc("Model shape(s) to warm"),
                             cl::cat(toolCategory));
cl::list<std::string> presets("preset", cl::desc("Cache preset(s) to warm"),
                              cl::cat(toolCategory));
cl::opt<std::string> backendName("backend",
                                 cl::desc("cuda (default) or emulator"),
                                 cl::init("cuda"), cl::cat(toolCategory));
cl::list<std::string> archs("arch",
                            cl::desc("Target arch(s) for cuda (default "
                                     "sm_90)"),
                            cl::cat(toolCategory));
cl::opt<std::string> outPath("out", cl::desc("Bundle file to write (export)"),
                             cl::init(""), cl::cat(toolCategory));
cl::opt<bool> remote("remote",
                     cl::desc("list, verify, prune or warm the remote cache "
                              "(KVQ_REMOTE_CACHE, KVQ_CACHE_KEY_FILE)"),
                     cl::cat(toolCategory));

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

/// The specs --spec, --spec-file and --model/--preset select.
std::optional<std::vector<KernelSpec>> selectedSpecs() {
  std::vector<std::string> texts(specs.begin(), specs.end());
  if (!specFile.empty()) {
    auto buffer = llvm::MemoryBuffer::getFile(specFile, /*IsText=*/true);
    if (!buffer) {
      fail("cannot read --spec-file " + specFile + ": " +
           buffer.getError().message());
      return std::nullopt;
    }
    llvm::SmallVector<llvm::StringRef> lines;
    (*buffer)->getBuffer().split(lines, '\n');
    for (llvm::StringRef line : lines) {
      line = line.split('#').first.trim();
      if (!line.empty())
        texts.push_back(line.str());
    }
  }
  std::vector<KernelSpec> wanted;
  std::set<std::string> seen;
  auto add = [&](const KernelSpec &spec) {
    if (seen.insert(spec.canonical()).second)
      wanted.push_back(spec);
  };
  for (const std::string &text : texts) {
    KernelSpec spec;
    if (auto error = parseKernelSpec(text, spec)) {
      fail("bad spec '" + text + "': " + *error);
      return std::nullopt;
    }
    add(spec);
  }
  std::vector<std::string> names(presets.begin(), presets.end());
  if (names.empty())
    names = {"kivi2"};
  for (const std::string &name : models) {
    std::optional<ModelShape> shape = findModel(name);
    if (!shape) {
      fail("unknown model '" + name + "' (known: " + knownModels() + ")");
      return std::nullopt;
    }
    for (const std::string &presetName : names) {
      std::optional<CachePreset> preset = findPreset(presetName);
      if (!preset) {
        fail("unknown preset '" + presetName + "' (known: " + knownPresets() +
             ")");
        return std::nullopt;
      }
      for (const KernelSpec &spec : kernelsFor(*preset, *shape))
        add(spec);
    }
  }
  if (wanted.empty()) {
    fail(command + " needs --spec, --spec-file or --model (with --preset)");
    return std::nullopt;
  }
  return wanted;
}

/// Builds (or finds) every selected spec for every selected arch; calls
/// `each(runtime, kernels)` for each. Returns the exit status.
int forEachSelected(
    const std::string &dir,
    const std::function<void(Runtime &, const CompiledKernels &)> &each) {
  std::optional<std::vector<KernelSpec>> wanted = selectedSpecs();
  if (!wanted)
    return 1;
  std::optional<Backend> backend = parseBackend(backendName);
  if (!backend || *backend == Backend::Reference || *backend == Backend::Auto)
    return fail("--backend must be cuda or emulator");
  std::vector<std::string> targets(archs.begin(), archs.end());
  if (targets.empty() || *backend == Backend::Emulator)
    targets = {*backend == Backend::Emulator ? std::string("host")
                                             : std::string("sm_90")};
  auto start = std::chrono::steady_clock::now();
  int compiled = 0, found = 0;
  for (const std::string &target : targets) {
    RuntimeOptions options = withToolCompiler(RuntimeOptions());
    options.backend = *backend;
    if (*backend == Backend::Cuda)
      options.arch = target;
    options.cacheDir = dir;
    options.compileOnly = true;
    llvm::Expected<std::unique_ptr<Runtime>> runtime = Runtime::create(options);
    if (!runtime)
      return fail(llvm::toString(runtime.takeError()));
    if (!(*runtime)->cacheWarning().empty())
      return fail("the kernel cache at " + dir + " is not usable");
    for (const KernelSpec &spec : *wanted) {
      auto kernels = (*runtime)->prepare(spec);
      if (!kernels)
        return fail(llvm::toString(kernels.takeError()));
      bool fresh = (*kernels)->origin == "compiled";
      (fresh ? compiled : found)++;
      llvm::outs() << llvm::formatv("  {0,-9} {1} ({2})\n",
                                    fresh ? "compiled" : "on disk",
                                    spec.canonical(), target);
      each(**runtime, **kernels);
    }
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  llvm::outs() << llvm::formatv(
      "warmed {0} kernel specs for {1} {2} in {3:f1} s: {4} compiled, {5} "
      "already on disk ({6})\n",
      wanted->size(), backendName.getValue(), llvm::join(targets, ","), seconds,
      compiled, found, dir);
  return 0;
}

int exportBundle(const std::string &dir, cache::DiskCache &disk) {
  if (outPath.empty())
    return fail("export needs --out=FILE");
  std::vector<cache::Entry> entries;
  std::string missing;
  int status =
      forEachSelected(dir, [&](Runtime &, const CompiledKernels &kernels) {
        std::string problem;
        std::optional<cache::Entry> entry = disk.load(kernels.key, &problem);
        if (!entry)
          missing = "entry " + kernels.key + " for '" +
                    kernels.spec.canonical() + "' vanished from the cache" +
                    (problem.empty() ? "" : ": " + problem);
        else
          entries.push_back(std::move(*entry));
      });
  if (status)
    return status;
  if (!missing.empty())
    return fail(missing);
  if (llvm::Error e = cache::Bundle::write(outPath, entries))
    return fail(llvm::toString(std::move(e)));
  uint64_t bytes = 0;
  llvm::sys::fs::file_size(outPath, bytes);
  llvm::outs() << llvm::formatv("exported {0} entries to {1} ({2} KB)\n",
                                entries.size(), outPath.getValue(),
                                bytes / 1024);
  return 0;
}

/// `merge --out=FILE A B ...`: every entry of the (verified) bundles A, B,
/// ... in one bundle; an entry in several is taken once.
int mergeBundles(const std::vector<std::string> &inputs) {
  if (outPath.empty() || inputs.empty())
    return fail("merge needs --out=FILE and the bundles to merge");
  std::vector<cache::Entry> entries;
  std::set<std::string> keys;
  for (const std::string &input : inputs) {
    llvm::Expected<cache::Bundle> bundle = cache::Bundle::open(input);
    if (!bundle)
      return fail(llvm::toString(bundle.takeError()));
    for (const cache::Entry &entry : bundle->entries())
      if (keys.insert(entry.key).second)
        entries.push_back(entry);
  }
  if (llvm::Error e = cache::Bundle::write(outPath, entries))
    return fail(llvm::toString(std::move(e)));
  llvm::outs() << llvm::formatv("merged {0} bundles: {1} entries in {2}\n",
                                inputs.size(), entries.size(),
                                outPath.getValue());
  return 0;
}

int importBundle(cache::DiskCache &disk, const std::string &argument) {
  if (argument.empty())
    return fail("import needs a bundle file: kvq-cache import FILE");
  llvm::Expected<cache::Bundle> bundle = cache::Bundle::open(argument);
  if (!bundle)
    return fail(llvm::toString(bundle.takeError()));
  int installed = 0, present = 0, refused = 0;
  for (const cache::Entry &entry : bundle->entries()) {
    std::string spec = entry.info.count("spec") ? entry.info.at("spec") : "?";
    std::string why = entryMismatch(entry.info.at("key_inputs"));
    if (!why.empty()) {
      llvm::errs() << "kvq-cache: refused entry " << entry.key.substr(0, 16)
                   << " ('" << spec << "'): " << why << "\n";
      ++refused;
      continue;
    }
    if (disk.load(entry.key)) {
      ++present;
      continue;
    }
    if (llvm::Error e = disk.store(entry))
      return fail(llvm::toString(std::move(e)));
    ++installed;
  }
  llvm::outs() << llvm::formatv(
      "imported {0}: {1} entries installed, {2} already present, {3} "
      "refused ({4})\n",
      argument, installed, present, refused, disk.directory());
  return refused ? 1 : 0;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // --help lists this tool's options, not every LLVM library's.
  cl::HideUnrelatedOptions(toolCategory);
  cl::ParseCommandLineOptions(argc, argv, "kvq kernel cache tool\n");
  std::string dir = cacheDir.empty() ? cache::defaultCacheDir() : cacheDir;
  std::string argument = arguments.empty() ? "" : arguments.front();
  if (command == "merge")
    return mergeBundles({arguments.begin(), arguments.end()});
  if (remote && command != "warm")
    return remoteCommand(command);
  if (command == "warm") {
    // With --remote the Runtime publishes what it compiles; what it found
    // on disk is published after.
    std::vector<std::string> warmed;
    if (int status =
            forEachSelected(dir, [&](Runtime &, const CompiledKernels &k) {
              warmed.push_back(k.key);
            }))
      return status;
    if (!remote)
      return 0;
    llvm::Expected<cache::DiskCache> disk = cache::DiskCache::open(dir);
    if (!disk)
      return fail(llvm::toString(disk.takeError()));
    return publishWarmed(*disk, warmed);
  }
  llvm::Expected<cache::DiskCache> opened = cache::DiskCache::open(dir);
  if (!opened)
    return fail(llvm::toString(opened.takeError()));
  cache::DiskCache &disk = *opened;
  if (command == "export")
    return exportBundle(dir, disk);
  if (command == "import")
    return importBundle(disk, argument);

  if (command == "list") {
    uint64_t total = 0;
    std::vector<cache::EntrySummary> entries = disk.list();
    for (const cache::EntrySummary &e : entries) {
      total += e.bytes;
      llvm::outs() << llvm::formatv(
          "{0}  {1,8} KB  {2,-9}  {3}\n", e.key.substr(0, 16), e.bytes / 1024,
          age(e.lastUsed),
          e.info.count("spec") ? e.info.at("spec") : std::string("?"));
    }
    llvm::outs() << llvm::formatv("{0} entries, {1} KB in {2}\n",
                                  entries.size(), total / 1024, dir);
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
    cache::VerifyReport report = disk.verify();
    for (const std::string &key : report.corrupt)
      llvm::outs() << "removed corrupt entry " << key << "\n";
    for (const std::string &name : report.removedStrays)
      llvm::outs() << "removed " << name
                   << " (not an entry: a link, an older-format folder or a "
                      "stale temporary file; not followed)\n";
    llvm::outs() << report.intact << " of "
                 << report.intact + report.corrupt.size()
                 << " entries intact\n";
    return report.corrupt.empty() && report.removedStrays.empty() ? 0 : 1;
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
  return fail(
      "unknown command '" + command +
      "' (list, show, verify, prune, clear, warm, export, import, merge)");
}
