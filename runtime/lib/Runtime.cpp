//===- Runtime.cpp - specialize, compile once, dispatch -------------------===//

#include "kvq/Runtime/Runtime.h"
#include "kvq/BufferSizes.h"

#include "RemoteTier.h"
#include "RuntimeLog.h"
#include "kvq/Cache/Bundle.h"
#include "kvq/Cache/CacheKey.h"
#include "kvq/Cache/DiskCache.h"
#include "kvq/Cache/MemoryCache.h"
#include "kvq/Runtime/ExecutionBackend.h"
#include "kvq/Runtime/KernelKey.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unistd.h>
#include <unordered_map>

using namespace kvq;

namespace {

bool envFlag(const char *name) {
  const char *value = std::getenv(name);
  return value && *value && std::strcmp(value, "0") != 0;
}

double millisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}

//===--- kernel metadata in the cache manifest ---------------------------===//

std::string serializeKernels(const std::vector<GeneratedKernel> &kernels) {
  llvm::json::Array array;
  for (const GeneratedKernel &k : kernels) {
    llvm::json::Object plan{{kPlanArchField, k.plan.arch}};
    for (const LaunchPlanField &field : kPlanIntegerFields)
      plan[field.name] = k.plan.*field.member;
    array.push_back(
        llvm::json::Object{{"name", k.name},
                           {"kind", k.kind},
                           {"spec", k.spec},
                           {"plan_text", k.planText},
                           {"block_threads", k.threads},
                           {"block_shared_bytes", k.sharedBytes},
                           {"arg_names", llvm::json::Array(k.argNames)},
                           {"arg_types", llvm::json::Array(k.argTypes)},
                           {"plan", std::move(plan)}});
  }
  std::string text;
  llvm::raw_string_ostream(text) << llvm::json::Value(std::move(array));
  return text;
}

std::optional<std::vector<GeneratedKernel>>
parseKernels(const std::string &text) {
  llvm::Expected<llvm::json::Value> value = llvm::json::parse(text);
  if (!value) {
    llvm::consumeError(value.takeError());
    return std::nullopt;
  }
  const llvm::json::Array *array = value->getAsArray();
  if (!array)
    return std::nullopt;
  std::vector<GeneratedKernel> kernels;
  for (const llvm::json::Value &item : *array) {
    const llvm::json::Object *o = item.getAsObject();
    if (!o)
      return std::nullopt;
    GeneratedKernel k;
    k.name = o->getString("name").value_or("").str();
    k.kind = o->getString("kind").value_or("").str();
    k.spec = o->getString("spec").value_or("").str();
    k.planText = o->getString("plan_text").value_or("").str();
    k.threads = int(o->getInteger("block_threads").value_or(0));
    k.sharedBytes = int(o->getInteger("block_shared_bytes").value_or(0));
    for (auto [field, out] :
         {std::pair<const char *, std::vector<std::string> *>{"arg_names",
                                                              &k.argNames},
          {"arg_types", &k.argTypes}})
      if (const llvm::json::Array *list = o->getArray(field))
        for (const llvm::json::Value &v : *list)
          out->push_back(v.getAsString().value_or("").str());
    const llvm::json::Object *plan = o->getObject("plan");
    if (!plan)
      return std::nullopt;
    k.plan.arch = plan->getString(kPlanArchField).value_or("").str();
    for (const LaunchPlanField &field : kPlanIntegerFields) {
      k.plan.*field.member = plan->getInteger(field.name).value_or(0);
      if (k.plan.*field.member < 0)
        return std::nullopt;
    }
    // The launch's grid divides the rows by it.
    if (k.plan.queryRows > kMaxQueryRows)
      return std::nullopt;
    // Launch divides by these: an attention kernel without them is not one
    // kvq wrote.
    if (k.kind == "attention" &&
        (!k.plan.tileTokens || !k.plan.minTokensPerSplit || !k.plan.smCount))
      return std::nullopt;
    if (k.name.empty() || k.threads <= 0)
      return std::nullopt;
    kernels.push_back(std::move(k));
  }
  return kernels;
}

} // namespace

//===----------------------------------------------------------------------===//
// Runtime
//===----------------------------------------------------------------------===//

/// A KernelSpec as plain integers: the memory cache's fast path looks specs
/// up by this, without building the canonical text or hashing it.
struct SpecKey {
  std::array<int32_t, 19> fields;
  bool operator==(const SpecKey &o) const { return fields == o.fields; }
};

// Every field of KernelSpec is in its key: one left out would make two
// specs share kernels. A new field changes the size and stops the build
// here until it is added below.
static_assert(sizeof(KernelSpec) == 88,
              "KernelSpec changed: put its new field into specKey");

SpecKey specKey(const KernelSpec &s) {
  auto scheme = [](const QuantScheme &q, int32_t *out) {
    out[0] = q.bits;
    out[1] = q.group;
    out[2] = int32_t(q.axis);
    out[3] = q.symmetric | (q.fp32Scales << 1) | (q.interleaved << 2) |
             (int32_t(q.format) << 3) | (int32_t(q.scales) << 5);
  };
  SpecKey key{};
  key.fields[0] = int32_t(s.kind);
  scheme(s.key, &key.fields[1]);
  scheme(s.value, &key.fields[5]);
  key.fields[9] = s.headDim;
  key.fields[10] = s.queryHeads;
  key.fields[11] = s.kvHeads;
  key.fields[12] = int32_t(s.dtype);
  key.fields[13] =
      s.sink | (s.residual << 1) | (s.chunked << 2) | (s.nhdPages << 3);
  key.fields[14] = s.pageTokens;
  key.fields[15] = int32_t(s.path);
  key.fields[16] = int32_t(s.zeroPoints);
  return key;
}

struct SpecKeyHash {
  size_t operator()(const SpecKey &k) const {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (int32_t f : k.fields) {
      h ^= uint32_t(f);
      h *= 1099511628211ull;
    }
    return size_t(h);
  }
};

struct Runtime::Impl {
  std::unique_ptr<ExecutionBackend> device;
  bool compileOnly = false;
  bool alwaysCompile = false; ///< KVQ_ALWAYS_COMPILE, read at creation
  /// Forced on attention specs that leave the path to the plan.
  AttentionPath attentionPath = AttentionPath::Auto;
  std::mutex fastMutex;
  std::unordered_map<SpecKey, std::shared_ptr<const CompiledKernels>,
                     SpecKeyHash>
      fast;
  std::string arch;
  std::shared_ptr<const KernelCompiler> compiler;
  std::optional<cache::DiskCache> disk;
  std::optional<cache::Bundle> bundle;
  RemoteTier remote;
  cache::MemoryCache<CompiledKernels> memory;
  std::atomic<uint64_t> compiled{0}, diskHits{0}, bundleHits{0}, memoryHits{0},
      remoteHits{0};

  cache::KeyInputs keyInputs(const KernelSpec &spec) const {
    return kernelKeyInputs(spec, device->kind(), arch,
                           compiler ? compiler->nvrtcVersion()
                                    : std::string(buildNvrtcVersion()));
  }

  /// Makes the kernels runnable on this backend from their artefacts, all
  /// in memory: the CUBIN/PTX (cuda) or the shared object's bytes
  /// (emulator) that were just verified or built, never re-read from a path.
  llvm::Error load(CompiledKernels &k, const std::string &sharedObject) {
    if (compileOnly)
      return llvm::Error::success();
    llvm::Expected<std::shared_ptr<LoadedKernels>> loaded =
        device->load(k, sharedObject);
    if (!loaded)
      return loaded.takeError();
    k.executable = std::move(*loaded);
    return llvm::Error::success();
  }

  /// CompiledKernels from a verified cache or bundle entry; null (with
  /// `problem` set) if its kernel metadata is unreadable.
  std::shared_ptr<CompiledKernels> fromEntry(const KernelSpec &spec,
                                             const cache::Entry &entry,
                                             const char *origin,
                                             std::string &problem) {
    auto k = std::make_shared<CompiledKernels>();
    k->spec = spec;
    k->key = entry.key;
    k->origin = origin;
    auto field = [&](const char *name) {
      auto it = entry.info.find(name);
      return it == entry.info.end() ? std::string() : it->second;
    };
    auto file = [&](const char *name) {
      auto it = entry.files.find(name);
      return it == entry.files.end() ? std::string() : it->second;
    };
    std::optional<std::vector<GeneratedKernel>> kernels =
        parseKernels(field("kernels"));
    if (!kernels) {
      problem = "entry " + entry.key + " has unreadable kernel metadata";
      return nullptr;
    }
    k->source.kernels = std::move(*kernels);
    k->source.cuda = file("kernels.cu");
    k->ptx = file("kernels.ptx");
    k->cubin = file("kernels.cubin");
    return k;
  }

  std::shared_ptr<const CompiledKernels> fromDisk(const KernelSpec &spec,
                                                  const std::string &key) {
    if (!disk || alwaysCompile)
      return nullptr;
    auto start = std::chrono::steady_clock::now();
    std::string problem;
    std::optional<cache::Entry> entry = disk->load(key, &problem);
    if (!problem.empty())
      logLine(problem + "; rebuilding it");
    if (!entry)
      return nullptr;
    std::shared_ptr<CompiledKernels> k =
        fromEntry(spec, *entry, "disk", problem);
    if (!k) {
      logLine("cache " + problem + "; rebuilding it");
      disk->remove(key);
      return nullptr;
    }
    auto image = entry->files.find("kernels.so");
    if (llvm::Error e = load(*k, image == entry->files.end() ? std::string()
                                                             : image->second)) {
      logLine("cannot load cached " + key + ": " +
              llvm::toString(std::move(e)));
      return nullptr;
    }
    k->diskMillis = millisSince(start);
    ++diskHits;
    logLine("disk cache hit for '" + spec.canonical() + "'");
    return k;
  }

  /// The bundle was verified as a whole when the runtime was created.
  std::shared_ptr<const CompiledKernels> fromBundle(const KernelSpec &spec,
                                                    const std::string &key) {
    if (!bundle || alwaysCompile)
      return nullptr;
    const cache::Entry *entry = bundle->find(key);
    if (!entry)
      return nullptr;
    auto start = std::chrono::steady_clock::now();
    std::string problem;
    std::shared_ptr<CompiledKernels> k =
        fromEntry(spec, *entry, "bundle", problem);
    if (!k) {
      logLine("bundle " + bundle->path() + ": " + problem);
      return nullptr;
    }
    auto image = entry->files.find("kernels.so");
    llvm::Error loaded =
        load(*k, image == entry->files.end() ? std::string() : image->second);
    if (loaded) {
      logLine("cannot load " + key + " from bundle " + bundle->path() + ": " +
              llvm::toString(std::move(loaded)));
      return nullptr;
    }
    k->diskMillis = millisSince(start);
    ++bundleHits;
    logLine("bundle hit for '" + spec.canonical() + "'");
    return k;
  }

  llvm::Error missing(const KernelSpec &spec, const std::string &key) const {
    std::string where = disk ? "the kernel cache at " + disk->directory()
                             : std::string("the kernel cache (disabled)");
    if (bundle)
      where += " or the bundle " + bundle->path();
    // The entry that would serve it, named as kvq-cache names it.
    cache::KeyInputs wanted = keyInputs(spec);
    std::string warm = "kvq-cache warm --spec=\"" + spec.canonical() +
                       "\" --backend=" + wanted.backend;
    if (wanted.target != "host")
      warm += " --arch=" + wanted.target;
    // A bundle entry for the same spec and target that another build made
    // is not loaded; say why, so the user knows what to rebuild.
    std::string refused;
    if (bundle)
      for (const cache::Entry &entry : bundle->entries()) {
        auto inputs = entry.info.find("key_inputs");
        if (inputs == entry.info.end())
          continue;
        std::map<std::string, std::string> fields =
            cache::parseKeyText(inputs->second);
        if (fields["spec"] == wanted.spec &&
            fields["backend"] == wanted.backend &&
            fields["target"] == wanted.target) {
          refused = "; the bundle's entry for it was not used: " +
                    entryMismatch(inputs->second);
          break;
        }
      }
    return llvm::make_error<MissingKernelError>(
        "no prebuilt kernel for '" + spec.canonical() + "' (" + wanted.backend +
        " " + wanted.target + ", kvq " + kVersion + ", key " +
        key.substr(0, 16) + ") in " + where + refused +
        ", and this runtime has no compiler (it is the runtime-only "
        "library). Build it where kvq's JIT is installed: " +
        warm + " (then `kvq-cache export` to carry it in a bundle)");
  }

  /// A verified entry from the fleet's cache (or, when another process is
  /// building it, the one it publishes); kept on disk too.
  std::shared_ptr<const CompiledKernels>
  fromRemote(const KernelSpec &spec, const std::string &key,
             std::optional<cache::Entry> entry) {
    if (!entry)
      return nullptr;
    std::string problem;
    std::shared_ptr<CompiledKernels> k =
        fromEntry(spec, *entry, "remote", problem);
    if (!k) {
      logLine("remote " + problem + "; rebuilding it");
      return nullptr;
    }
    auto image = entry->files.find("kernels.so");
    if (llvm::Error e = load(*k, image == entry->files.end() ? std::string()
                                                             : image->second)) {
      logLine("cannot load remote " + key + ": " +
              llvm::toString(std::move(e)));
      return nullptr;
    }
    if (disk)
      if (llvm::Error e = disk->store(*entry))
        logLine("cannot keep remote " + key +
                " on disk: " + llvm::toString(std::move(e)));
    ++remoteHits;
    logLine("remote cache hit for '" + spec.canonical() + "'");
    return k;
  }

  llvm::Expected<std::shared_ptr<const CompiledKernels>>
  compile(const KernelSpec &spec, const std::string &key,
          std::string &warning) {
    if (!compiler)
      return missing(spec, key);
    llvm::Expected<CompiledArtefacts> built =
        compiler->compile(spec, device->kind(), arch);
    if (!built)
      return built.takeError();
    auto k = std::make_shared<CompiledKernels>();
    k->spec = spec;
    k->key = key;
    k->origin = "compiled";
    k->source = std::move(built->source);
    k->mlirMillis = k->source.mlirMillis;
    if (k->source.cuda.empty() ||
        (built->cubin.empty() && built->sharedObject.empty()))
      return k; // launch metadata only (the reference backend)
    k->ptx = std::move(built->ptx);
    k->cubin = std::move(built->cubin);
    k->stats = std::move(built->stats);
    k->compileMillis = built->compileMillis;
    ++compiled;
    logLine("compiled '" + spec.canonical() + "' in " +
            std::to_string(int(k->mlirMillis + k->compileMillis)) + " ms");

    // Whatever the compiler produced for this backend is the entry.
    cache::Entry entry;
    entry.key = key;
    entry.files["kernels.cu"] = k->source.cuda;
    for (auto [name, bytes] :
         {std::pair<const char *, const std::string *>{"kernels.ptx", &k->ptx},
          {"kernels.cubin", &k->cubin},
          {"kernels.so", &built->sharedObject}})
      if (!bytes->empty())
        entry.files[name] = *bytes;
    if (!built->ptxasLog.empty())
      entry.info["ptxas"] = built->ptxasLog;
    entry.info["spec"] = spec.canonical();
    entry.info["kernels"] = serializeKernels(k->source.kernels);
    entry.info["key_inputs"] = cache::canonicalKeyText(keyInputs(spec));
    if (disk) {
      auto writeStart = std::chrono::steady_clock::now();
      llvm::Error stored = disk->store(entry);
      k->diskWriteMillis = millisSince(writeStart);
      if (llvm::Error e = std::move(stored)) {
        warning = "kvq: the kernel cache at " + disk->directory() +
                  " cannot be written (" + llvm::toString(std::move(e)) +
                  "); keeping kernels in memory only";
        llvm::errs() << warning << "\n";
        disk.reset();
      }
    }
    remote.publish(entry);
    if (llvm::Error e = load(*k, built->sharedObject))
      return std::move(e);
    return k;
  }
};

Runtime::~Runtime() = default;

llvm::Expected<std::unique_ptr<Runtime>>
Runtime::create(const RuntimeOptions &options) {
  auto runtime = std::unique_ptr<Runtime>(new Runtime());
  runtime->impl = std::make_unique<Impl>();
  Impl &impl = *runtime->impl;
  impl.compileOnly = options.compileOnly;
  impl.compiler = options.compiler;
  impl.alwaysCompile = envFlag("KVQ_ALWAYS_COMPILE") && impl.compiler;
  impl.attentionPath = options.attentionPath;
  if (const char *path = std::getenv("KVQ_ATTENTION_PATH");
      path && *path && impl.attentionPath == AttentionPath::Auto &&
      !parseAttentionPath(path, impl.attentionPath))
    return llvm::make_error<LaunchError>(
        std::string("KVQ_ATTENTION_PATH must be auto, cuda-cores or "
                    "tensor-cores, got '") +
        path + "'");
  llvm::Expected<std::unique_ptr<ExecutionBackend>> device =
      makeExecutionBackend(options.backend, options.compileOnly,
                           options.device);
  if (!device)
    return device.takeError();
  impl.device = std::move(*device);
  runtime->resolved = impl.device->kind();
  impl.arch = options.arch;
  if (impl.arch.empty()) {
    std::optional<cuda::DeviceInfo> gpu = impl.device->device();
    impl.arch = gpu ? "sm_" + std::to_string(gpu->computeCapability) : "sm_90";
  }
  runtime->targetArch = impl.arch;
  std::string bundle = options.bundle;
  if (bundle.empty())
    if (const char *fromEnv = std::getenv("KVQ_BUNDLE"); fromEnv && *fromEnv)
      bundle = fromEnv;
  if (!bundle.empty()) {
    llvm::Expected<cache::Bundle> opened = cache::Bundle::open(bundle);
    if (!opened)
      return opened.takeError();
    impl.bundle.emplace(std::move(*opened));
    runtime->bundleFile = bundle;
  }
  {
    std::string remoteWarning;
    impl.remote = RemoteTier::fromEnvironment(remoteWarning);
    if (!remoteWarning.empty() && runtime->warning.empty())
      runtime->warning = remoteWarning;
  }
  if (options.diskCache) {
    runtime->cacheDir =
        options.cacheDir.empty() ? cache::defaultCacheDir() : options.cacheDir;
    llvm::Expected<cache::DiskCache> disk =
        cache::DiskCache::open(runtime->cacheDir, options.cacheBytes);
    if (disk) {
      impl.disk.emplace(std::move(*disk));
    } else {
      runtime->warning = "kvq: kernel cache disabled, keeping kernels in "
                         "memory only: " +
                         llvm::toString(disk.takeError());
      llvm::errs() << runtime->warning << "\n";
    }
  }
  return runtime;
}

llvm::Expected<std::shared_ptr<const CompiledKernels>>
Runtime::prepare(const KernelSpec &requested) {
  if (requested.isAttention() && requested.path == AttentionPath::Auto &&
      impl->attentionPath != AttentionPath::Auto) {
    KernelSpec forced = requested;
    forced.path = impl->attentionPath;
    return prepare(forced);
  }
  const KernelSpec &spec = requested;
  bool always = impl->alwaysCompile;
  SpecKey fastKey = specKey(spec);
  if (!always) {
    // The hot path of a decode step: no strings, no hashing of text.
    std::lock_guard<std::mutex> lock(impl->fastMutex);
    auto it = impl->fast.find(fastKey);
    if (it != impl->fast.end()) {
      impl->memoryHits.fetch_add(1, std::memory_order_relaxed);
      return it->second;
    }
  }
  if (std::optional<std::string> problem = spec.validate())
    return llvm::make_error<LaunchError>("invalid kernel spec '" +
                                         spec.canonical() + "': " + *problem);
  std::string key = cache::computeKey(impl->keyInputs(spec));
  std::string error;
  std::optional<llvm::Error> failure;
  auto create =
      [&](std::string &message) -> std::shared_ptr<const CompiledKernels> {
    if (auto hit = impl->fromDisk(spec, key))
      return hit;
    if (auto hit = impl->fromBundle(spec, key))
      return hit;
    RemoteTier &remote = impl->remote;
    if (!impl->alwaysCompile)
      if (auto hit = impl->fromRemote(spec, key, remote.load(key)))
        return hit;
    // Single flight across the fleet: one process builds, the others wait
    // (up to a bound) for what it publishes.
    bool building = !impl->compiler || remote.shouldBuild(key);
    if (!building)
      if (auto hit = impl->fromRemote(spec, key, remote.waitFor(key)))
        return hit;
    llvm::Expected<std::shared_ptr<const CompiledKernels>> built =
        impl->compile(spec, key, warning);
    if (building)
      remote.finished(key);
    if (!built) {
      // The creating thread keeps the typed error (CompileError,
      // MissingKernelError, ...); threads that waited on it get its text.
      failure.emplace(llvm::handleErrors(
          built.takeError(),
          [&](std::unique_ptr<llvm::ErrorInfoBase> info) -> llvm::Error {
            message = info->message();
            return llvm::Error(std::move(info));
          }));
      return nullptr;
    }
    return *built;
  };
  std::shared_ptr<const CompiledKernels> kernels =
      always ? create(error) : impl->memory.getOrCreate(key, create, &error);
  if (!kernels) {
    if (failure)
      return std::move(*failure);
    return llvm::createStringError(llvm::inconvertibleErrorCode(), error);
  }
  if (!always) {
    std::lock_guard<std::mutex> lock(impl->fastMutex);
    impl->fast.emplace(fastKey, kernels);
  }
  return kernels;
}

llvm::Error Runtime::quantize(const KernelSpec &spec, const QuantizeCall &c) {
  auto k = prepare(spec);
  if (!k)
    return k.takeError();
  return impl->device->quantize(spec, **k, c);
}

llvm::Error Runtime::dequantize(const KernelSpec &spec,
                                const DequantizeCall &c) {
  auto k = prepare(spec);
  if (!k)
    return k.takeError();
  return impl->device->dequantize(spec, **k, c);
}

llvm::Error Runtime::append(const KernelSpec &spec, const AppendCall &c) {
  auto k = prepare(spec);
  if (!k)
    return k.takeError();
  return impl->device->append(spec, **k, c);
}

llvm::Error Runtime::attention(const KernelSpec &spec, const AttentionCall &c) {
  auto k = prepare(spec);
  if (!k)
    return k.takeError();
  return impl->device->attention(spec, **k, c);
}

llvm::Expected<size_t>
Runtime::attentionWorkspaceBytes(const KernelSpec &spec,
                                 const AttentionCall &call) {
  auto k = prepare(spec);
  if (!k)
    return k.takeError();
  return kvq::attentionWorkspaceBytes(spec, (*k)->source,
                                      impl->device->complete(call));
}

llvm::Expected<void *> Runtime::allocate(size_t bytes) {
  return impl->device->allocate(bytes);
}
void Runtime::release(void *pointer) { impl->device->release(pointer); }
llvm::Error Runtime::copyIn(void *dst, const void *src, size_t bytes,
                            void *stream) {
  return impl->device->copyIn(dst, src, bytes, stream);
}
llvm::Error Runtime::copyOut(void *dst, const void *src, size_t bytes) {
  return impl->device->copyOut(dst, src, bytes);
}
llvm::Error Runtime::copyOnDevice(void *dst, const void *src, size_t bytes,
                                  void *stream) {
  return impl->device->copyOnDevice(dst, src, bytes, stream);
}

llvm::Error Runtime::copyRowsOnDevice(void *dst, size_t dstPitch,
                                      const void *src, size_t srcPitch,
                                      size_t rowBytes, size_t rows,
                                      void *stream) {
  return impl->device->copyRowsOnDevice(dst, dstPitch, src, srcPitch, rowBytes,
                                        rows, stream);
}
llvm::Error Runtime::synchronize() { return impl->device->synchronize(); }
llvm::Expected<double>
Runtime::timeMillis(const std::function<llvm::Error()> &work) {
  return impl->device->timeMillis(work);
}
std::optional<cuda::DeviceInfo> Runtime::device() const {
  return impl->device->device();
}

bool Runtime::canCompile() const { return impl->compiler != nullptr; }

RuntimeStatistics Runtime::statistics() const {
  return {impl->compiled.load(),   impl->diskHits.load(),
          impl->bundleHits.load(), impl->memoryHits.load(),
          impl->remoteHits.load(), impl->device->launches()};
}
