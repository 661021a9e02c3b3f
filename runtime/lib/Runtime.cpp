//===- Runtime.cpp - specialize, compile once, dispatch
//--------------------===//

#include "kvq/Runtime/Runtime.h"
#include "kvq/BufferSizes.h"

#include "kvq/Cache/Bundle.h"
#include "kvq/Cache/CacheKey.h"
#include "kvq/Cache/DiskCache.h"
#include "kvq/Cache/MemoryCache.h"
#include "kvq/Runtime/CudaDriver.h"
#include "kvq/Runtime/Emulator.h"
#include "kvq/Runtime/KernelKey.h"
#include "kvq/Runtime/Reference.h"

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

struct CompiledKernels::Executable {
  std::unique_ptr<emu::Module> emulator;
  std::unique_ptr<cuda::LoadedModule> gpu;
};

namespace {

bool envFlag(const char *name) {
  const char *value = std::getenv(name);
  return value && *value && std::strcmp(value, "0") != 0;
}

void log(const std::string &message) {
  if (envFlag("KVQ_LOG"))
    llvm::errs() << "kvq: " << message << "\n";
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
    llvm::json::Object plan;
    for (const auto &[key, value] : k.planValues)
      plan[key] = value;
    array.push_back(
        llvm::json::Object{{"name", k.name},
                           {"kind", k.kind},
                           {"spec", k.spec},
                           {"plan", k.plan},
                           {"threads", k.threads},
                           {"shared_bytes", k.sharedBytes},
                           {"arg_names", llvm::json::Array(k.argNames)},
                           {"arg_types", llvm::json::Array(k.argTypes)},
                           {"plan_values", std::move(plan)}});
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
    k.plan = o->getString("plan").value_or("").str();
    k.threads = int(o->getInteger("threads").value_or(0));
    k.sharedBytes = int(o->getInteger("shared_bytes").value_or(0));
    for (auto [field, out] :
         {std::pair<const char *, std::vector<std::string> *>{"arg_names",
                                                              &k.argNames},
          {"arg_types", &k.argTypes}})
      if (const llvm::json::Array *list = o->getArray(field))
        for (const llvm::json::Value &v : *list)
          out->push_back(v.getAsString().value_or("").str());
    if (const llvm::json::Object *plan = o->getObject("plan_values"))
      for (const auto &[key, v] : *plan)
        k.planValues[key.str()] = v.getAsInteger().value_or(0);
    if (k.name.empty() || k.threads <= 0)
      return std::nullopt;
    kernels.push_back(std::move(k));
  }
  return kernels;
}

//===--- reference backend: the kernels' buffers as floats ---------------===//

std::vector<float> readHalf(const void *p, size_t n, HalfType t) {
  std::vector<float> out(n);
  auto *bits = static_cast<const uint16_t *>(p);
  for (size_t i = 0; i < n; ++i)
    out[i] = ref::fromHalfBits(bits[i], t);
  return out;
}

void writeHalf(void *p, const std::vector<float> &x, HalfType t) {
  auto *bits = static_cast<uint16_t *>(p);
  for (size_t i = 0; i < x.size(); ++i)
    bits[i] = ref::toHalfBits(x[i], t);
}

std::vector<float> readStorage(const void *p, size_t n, const QuantScheme &s) {
  if (!p)
    return {};
  if (s.fp32Scales) {
    auto *f = static_cast<const float *>(p);
    return std::vector<float>(f, f + n);
  }
  return readHalf(p, n, HalfType::F16);
}

void writeStorage(void *p, const std::vector<float> &x, size_t offset, size_t n,
                  const QuantScheme &s) {
  if (!p)
    return;
  for (size_t i = offset; i < offset + n; ++i) {
    if (s.fp32Scales)
      static_cast<float *>(p)[i] = x[i];
    else
      static_cast<uint16_t *>(p)[i] = ref::toHalfBits(x[i], HalfType::F16);
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Runtime
//===----------------------------------------------------------------------===//

/// A KernelSpec as plain integers: the memory cache's fast path looks specs
/// up by this, without building the canonical text or hashing it.
struct SpecKey {
  std::array<int32_t, 18> fields;
  bool operator==(const SpecKey &o) const { return fields == o.fields; }
};

SpecKey specKey(const KernelSpec &s) {
  auto scheme = [](const QuantScheme &q, int32_t *out) {
    out[0] = q.bits;
    out[1] = q.group;
    out[2] = int32_t(q.axis);
    out[3] = q.symmetric | (q.fp32Scales << 1) | (q.interleaved << 2);
  };
  SpecKey key{};
  key.fields[0] = int32_t(s.kind);
  scheme(s.key, &key.fields[1]);
  scheme(s.value, &key.fields[5]);
  key.fields[9] = s.headDim;
  key.fields[10] = s.queryHeads;
  key.fields[11] = s.kvHeads;
  key.fields[12] = int32_t(s.dtype);
  key.fields[13] = s.sink | (s.residual << 1);
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
  Backend backend;
  bool compileOnly = false;
  bool alwaysCompile = false; ///< KVQ_ALWAYS_COMPILE, read at creation
  std::mutex fastMutex;
  std::unordered_map<SpecKey, std::shared_ptr<const CompiledKernels>,
                     SpecKeyHash>
      fast;
  std::string arch;
  cuda::Driver *driver = nullptr;
  std::shared_ptr<const KernelCompiler> compiler;
  std::optional<cache::DiskCache> disk;
  std::optional<cache::Bundle> bundle;
  cache::MemoryCache<CompiledKernels> memory;
  std::atomic<uint64_t> compiled{0}, diskHits{0}, bundleHits{0}, memoryHits{0};

  cache::KeyInputs keyInputs(const KernelSpec &spec) const {
    return kernelKeyInputs(spec, backend, arch);
  }

  /// Makes the kernels runnable on this backend from their artefacts, all
  /// in memory: the CUBIN/PTX (cuda) or the shared object's bytes
  /// (emulator) that were just verified or built, never re-read from a path.
  llvm::Error load(CompiledKernels &k, const std::string &sharedObject) {
    k.executable = std::make_shared<CompiledKernels::Executable>();
    if (compileOnly)
      return llvm::Error::success();
    if (backend == Backend::Emulator) {
      llvm::Expected<std::unique_ptr<emu::Module>> module =
          emu::Module::loadImage(sharedObject, k.source.kernels);
      if (!module)
        return module.takeError();
      k.executable->emulator = std::move(*module);
    } else if (backend == Backend::Cuda) {
      llvm::Expected<std::unique_ptr<cuda::LoadedModule>> module =
          driver->load(k.cubin, k.ptx);
      if (!module)
        return module.takeError();
      k.executable->gpu = std::move(*module);
    }
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
      log(problem + "; rebuilding it");
    if (!entry)
      return nullptr;
    std::shared_ptr<CompiledKernels> k =
        fromEntry(spec, *entry, "disk", problem);
    if (!k) {
      log("cache " + problem + "; rebuilding it");
      disk->remove(key);
      return nullptr;
    }
    auto image = entry->files.find("kernels.so");
    if (llvm::Error e = load(*k, image == entry->files.end() ? std::string()
                                                             : image->second)) {
      log("cannot load cached " + key + ": " + llvm::toString(std::move(e)));
      return nullptr;
    }
    k->diskMillis = millisSince(start);
    ++diskHits;
    log("disk cache hit for '" + spec.canonical() + "'");
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
      log("bundle " + bundle->path() + ": " + problem);
      return nullptr;
    }
    auto image = entry->files.find("kernels.so");
    llvm::Error loaded =
        load(*k, image == entry->files.end() ? std::string() : image->second);
    if (loaded) {
      log("cannot load " + key + " from bundle " + bundle->path() + ": " +
          llvm::toString(std::move(loaded)));
      return nullptr;
    }
    k->diskMillis = millisSince(start);
    ++bundleHits;
    log("bundle hit for '" + spec.canonical() + "'");
    return k;
  }

  llvm::Error missing(const KernelSpec &spec, const std::string &key) const {
    std::string where = disk ? "the kernel cache at " + disk->directory()
                             : std::string("the kernel cache (disabled)");
    if (bundle)
      where += " or the bundle " + bundle->path();
    std::string target = backend == Backend::Emulator ? "emulator" : arch;
    std::string warm =
        "kvq-cache warm --spec=\"" + spec.canonical() + "\" " +
        (backend == Backend::Emulator ? std::string("--backend=emulator")
                                      : "--arch=" + arch);
    return llvm::make_error<MissingKernelError>(
        "no prebuilt kernel for '" + spec.canonical() + "' (" + target +
        ", kvq " + kVersion + ", key " + key.substr(0, 16) + ") in " + where +
        ", and this runtime has no compiler (it is the runtime-only "
        "library). Build it where kvq's JIT is installed: " +
        warm + " (then `kvq-cache export` to carry it in a bundle)");
  }

  llvm::Expected<std::shared_ptr<const CompiledKernels>>
  compile(const KernelSpec &spec, const std::string &key,
          std::string &warning) {
    if (!compiler)
      return missing(spec, key);
    llvm::Expected<CompiledArtefacts> built =
        compiler->compile(spec, backend, arch);
    if (!built)
      return built.takeError();
    auto k = std::make_shared<CompiledKernels>();
    k->spec = spec;
    k->key = key;
    k->origin = "compiled";
    k->source = std::move(built->source);
    k->mlirMillis = k->source.mlirMillis;
    if (backend == Backend::Reference)
      return k; // validation metadata only
    k->ptx = std::move(built->ptx);
    k->cubin = std::move(built->cubin);
    k->stats = std::move(built->stats);
    k->compileMillis = built->compileMillis;
    ++compiled;
    log("compiled '" + spec.canonical() + "' in " +
        std::to_string(int(k->mlirMillis + k->compileMillis)) + " ms");

    cache::Entry entry;
    entry.key = key;
    entry.files["kernels.cu"] = k->source.cuda;
    if (backend == Backend::Cuda) {
      entry.files["kernels.ptx"] = k->ptx;
      entry.files["kernels.cubin"] = k->cubin;
      entry.info["ptxas"] = built->ptxasLog;
    } else {
      entry.files["kernels.so"] = built->sharedObject;
    }
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
  Backend backend = options.backend;
  impl.compileOnly = options.compileOnly;
  impl.compiler = options.compiler;
  impl.alwaysCompile = envFlag("KVQ_ALWAYS_COMPILE") && impl.compiler;
  if (options.compileOnly && backend == Backend::Auto)
    backend = Backend::Cuda; // warming the cache is for the GPU
  if ((backend == Backend::Cuda && !options.compileOnly) ||
      backend == Backend::Auto) {
    llvm::Expected<cuda::Driver *> driver = cuda::Driver::get();
    if (driver) {
      impl.driver = *driver;
      backend = Backend::Cuda;
    } else if (backend == Backend::Cuda) {
      return driver.takeError();
    } else {
      log(llvm::toString(driver.takeError()) + "; using the emulator");
      backend = Backend::Emulator;
    }
  }
  impl.backend = runtime->resolved = backend;
  impl.arch = options.arch;
  if (impl.arch.empty())
    impl.arch =
        impl.driver
            ? "sm_" + std::to_string(impl.driver->device().computeCapability)
            : "sm_90";
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
Runtime::prepare(const KernelSpec &spec) {
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
    llvm::Expected<std::shared_ptr<const CompiledKernels>> built =
        impl->compile(spec, key, warning);
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

namespace {
llvm::Error run(const CompiledKernels &k, const KernelLaunch &launch) {
  if (k.executable && k.executable->emulator)
    return k.executable->emulator->launch(launch);
  if (k.executable && k.executable->gpu)
    return k.executable->gpu->launch(launch.kernel, launch.grid, launch.block,
                                     launch.args);
  return llvm::createStringError(
      llvm::inconvertibleErrorCode(),
      "kernels of '" + k.spec.canonical() +
          "' are not loaded (the runtime was created compile-only)");
}
} // namespace

llvm::Error Runtime::quantize(const KernelSpec &spec, const QuantizeCall &c) {
  auto k = prepare(spec);
  if (!k)
    return k.takeError();
  llvm::Expected<KernelLaunch> launch = planQuantize(spec, (*k)->source, c);
  if (!launch)
    return launch.takeError();
  if (resolved != Backend::Reference)
    return run(**k, *launch);
  int d = spec.headDim;
  size_t scales = scaleCount(spec.key, d, 1, c.outTokens) * c.rows;
  std::vector<float> input =
      readHalf(c.input, size_t(c.rows) * c.inTokens * d, spec.dtype);
  std::vector<float> s = readStorage(c.scales, scales, spec.key);
  std::vector<float> z = readStorage(c.zeros, scales, spec.key);
  ref::quantize(spec.key, d, input.data(), c.rows, c.tokens, c.inTokens,
                c.outTokens, c.outOffset, static_cast<uint32_t *>(c.words),
                s.data(), spec.key.symmetric ? nullptr : z.data());
  writeStorage(c.scales, s, 0, scales, spec.key);
  if (!spec.key.symmetric)
    writeStorage(c.zeros, z, 0, scales, spec.key);
  return llvm::Error::success();
}

llvm::Error Runtime::dequantize(const KernelSpec &spec,
                                const DequantizeCall &c) {
  auto k = prepare(spec);
  if (!k)
    return k.takeError();
  llvm::Expected<KernelLaunch> launch = planDequantize(spec, (*k)->source, c);
  if (!launch)
    return launch.takeError();
  if (resolved != Backend::Reference)
    return run(**k, *launch);
  int d = spec.headDim;
  size_t scales = scaleCount(spec.key, d, 1, c.inTokens) * c.rows;
  std::vector<float> s = readStorage(c.scales, scales, spec.key);
  std::vector<float> z = readStorage(c.zeros, scales, spec.key);
  std::vector<float> out(size_t(c.rows) * c.outTokens * d);
  std::vector<float> existing = readHalf(c.output, out.size(), spec.dtype);
  ref::dequantize(spec.key, d, static_cast<const uint32_t *>(c.words), s.data(),
                  spec.key.symmetric ? nullptr : z.data(), c.rows, c.tokens,
                  c.inTokens, c.inOffset, c.outTokens, out.data());
  // Only tokens [0, tokens) of each output row are written.
  for (int r = 0; r < c.rows; ++r)
    for (int t = c.tokens; t < c.outTokens; ++t)
      for (int i = 0; i < d; ++i) {
        size_t at = (size_t(r) * c.outTokens + t) * d + i;
        out[at] = existing[at];
      }
  writeHalf(c.output, out, spec.dtype);
  return llvm::Error::success();
}

/// `call` with the device's SM count filled in on the cuda backend: the
/// split count, hence the workspace size, follows the GPU it runs on.
static AttentionCall onDevice(const AttentionCall &call,
                              const std::optional<cuda::DeviceInfo> &device) {
  AttentionCall c = call;
  if (c.smCount == 0 && device && device->smCount > 0)
    c.smCount = device->smCount;
  return c;
}

llvm::Expected<size_t>
Runtime::attentionWorkspaceBytes(const KernelSpec &spec,
                                 const AttentionCall &call) {
  auto k = prepare(spec);
  if (!k)
    return k.takeError();
  return kvq::attentionWorkspaceBytes(spec, (*k)->source,
                                      onDevice(call, device()));
}

llvm::Error Runtime::attention(const KernelSpec &spec, const AttentionCall &c) {
  auto k = prepare(spec);
  if (!k)
    return k.takeError();
  AttentionCall call = onDevice(c, device());
  if (resolved == Backend::Reference && !call.hostLengths)
    call.hostLengths = c.lengths;       // host memory on this backend
  if (resolved == Backend::Reference) { // no kernels: no workspace used
    if (!call.workspace)
      call.workspace = reinterpret_cast<void *>(uintptr_t(256));
    call.workspaceBytes = 0;
  }
  llvm::Expected<std::vector<KernelLaunch>> launches =
      planAttention(spec, (*k)->source, call);
  if (!launches)
    return launches.takeError();
  if (resolved != Backend::Reference) {
    for (const KernelLaunch &launch : *launches)
      if (llvm::Error e = run(**k, launch))
        return e;
    return llvm::Error::success();
  }
  int d = spec.headDim;
  size_t kvRows = size_t(c.batch) * spec.kvHeads;
  bool dense = spec.kind == KernelKind::DenseAttention;
  std::vector<float> q =
      readHalf(c.q, size_t(c.batch) * spec.queryHeads * d, spec.dtype);
  auto segment = [&](const void *p, int capacity) {
    return p ? readHalf(p, kvRows * capacity * d, spec.dtype)
             : std::vector<float>();
  };
  std::vector<float> ks, kz, vs, vz, keys, values;
  if (dense) {
    keys = segment(c.keys, c.bodyCapacity);
    values = segment(c.values, c.bodyCapacity);
  } else {
    ks = readStorage(c.keyScales,
                     kvRows * scaleCount(spec.key, d, 1, c.bodyCapacity),
                     spec.key);
    if (!spec.key.symmetric)
      kz = readStorage(c.keyZeros, ks.size(), spec.key);
    vs = readStorage(c.valueScales,
                     kvRows * scaleCount(spec.value, d, 1, c.bodyCapacity),
                     spec.value);
    if (!spec.value.symmetric)
      vz = readStorage(c.valueZeros, vs.size(), spec.value);
  }
  std::vector<float> sk = segment(spec.sink ? c.sinkKeys : nullptr,
                                  c.sinkCapacity),
                     sv = segment(spec.sink ? c.sinkValues : nullptr,
                                  c.sinkCapacity),
                     rk = segment(spec.residual ? c.residualKeys : nullptr,
                                  c.residualCapacity),
                     rv = segment(spec.residual ? c.residualValues : nullptr,
                                  c.residualCapacity);
  ref::AttentionInputs in;
  in.q = q.data();
  in.keyWords = static_cast<const uint32_t *>(c.keyWords);
  in.keyScales = ks.data();
  in.keyZeros = kz.empty() ? nullptr : kz.data();
  in.valueWords = static_cast<const uint32_t *>(c.valueWords);
  in.valueScales = vs.data();
  in.valueZeros = vz.empty() ? nullptr : vz.data();
  in.keys = keys.data();
  in.values = values.data();
  in.sinkKeys = sk.data();
  in.sinkValues = sv.data();
  in.residualKeys = rk.data();
  in.residualValues = rv.data();
  in.lengths = c.lengths;
  in.batch = c.batch;
  in.bodyCapacity = c.bodyCapacity;
  in.sinkCapacity = c.sinkCapacity;
  in.residualCapacity = c.residualCapacity;
  in.softmaxScale =
      c.softmaxScale > 0 ? c.softmaxScale : 1.0f / std::sqrt(float(d));
  std::vector<float> out(size_t(c.batch) * spec.queryHeads * d);
  ref::attention(spec, in, out.data());
  writeHalf(c.out, out, spec.dtype);
  return llvm::Error::success();
}

llvm::Expected<void *> Runtime::allocate(size_t bytes) {
  if (impl->driver && resolved == Backend::Cuda)
    return impl->driver->allocate(bytes);
  void *p = emu::deviceAlloc(bytes);
  if (!p)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "out of host memory allocating " +
                                       std::to_string(bytes) + " bytes");
  return p;
}

void Runtime::release(void *pointer) {
  if (impl->driver && resolved == Backend::Cuda)
    impl->driver->release(pointer);
  else if (!emu::deviceFree(pointer))
    llvm::errs() << "kvq: release of " << pointer
                 << ", which is not a live allocation (freed twice, or not "
                    "from allocate); ignored\n";
}

namespace {
/// On the emulator "device" memory is checked as a GPU would fault (its
/// kernels check every access the same way): a copy must stay inside one
/// allocation. The reference backend works on any host memory.
llvm::Error checkDeviceRange(Backend backend, const char *what, const void *p,
                             size_t bytes) {
  if (backend != Backend::Emulator || bytes == 0 ||
      emu::isDeviceRange(p, bytes))
    return llvm::Error::success();
  std::ostringstream os;
  os << what << ": [" << p << ", +" << bytes
     << ") is not inside one allocation of this runtime";
  return llvm::make_error<LaunchError>(os.str());
}
} // namespace

llvm::Error Runtime::copyIn(void *dst, const void *src, size_t bytes) {
  if (impl->driver && resolved == Backend::Cuda)
    return impl->driver->copyToDevice(dst, src, bytes);
  if (llvm::Error e =
          checkDeviceRange(resolved, "copyIn destination", dst, bytes))
    return e;
  std::memcpy(dst, src, bytes);
  return llvm::Error::success();
}

llvm::Error Runtime::copyOut(void *dst, const void *src, size_t bytes) {
  if (impl->driver && resolved == Backend::Cuda) {
    if (llvm::Error e = impl->driver->synchronize())
      return e;
    return impl->driver->copyToHost(dst, src, bytes);
  }
  if (llvm::Error e = checkDeviceRange(resolved, "copyOut source", src, bytes))
    return e;
  std::memcpy(dst, src, bytes);
  return llvm::Error::success();
}

llvm::Error Runtime::copyOnDevice(void *dst, const void *src, size_t bytes) {
  if (impl->driver && resolved == Backend::Cuda)
    return impl->driver->copyOnDevice(dst, src, bytes);
  if (llvm::Error e =
          checkDeviceRange(resolved, "copyOnDevice source", src, bytes))
    return e;
  if (llvm::Error e =
          checkDeviceRange(resolved, "copyOnDevice destination", dst, bytes))
    return e;
  std::memmove(dst, src, bytes);
  return llvm::Error::success();
}

llvm::Error Runtime::synchronize() {
  if (impl->driver && resolved == Backend::Cuda)
    return impl->driver->synchronize();
  return llvm::Error::success();
}

llvm::Expected<double>
Runtime::timeMillis(const std::function<llvm::Error()> &work) {
  if (impl->driver && resolved == Backend::Cuda)
    return impl->driver->timeMillis(work);
  auto start = std::chrono::steady_clock::now();
  if (llvm::Error e = work())
    return std::move(e);
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}

std::optional<cuda::DeviceInfo> Runtime::device() const {
  if (impl->driver && resolved == Backend::Cuda)
    return impl->driver->device();
  return std::nullopt;
}

bool Runtime::canCompile() const { return impl->compiler != nullptr; }

RuntimeStatistics Runtime::statistics() const {
  return {impl->compiled.load(), impl->diskHits.load(), impl->bundleHits.load(),
          impl->memoryHits.load()};
}
