//===- CudaDriver.cpp - the CUDA driver, loaded at first use --------------===//
//
// Only the few entry points kvq needs, resolved with dlsym. The toolkit's
// cuda.h supplies the types; nothing links libcuda.
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/CudaDriver.h"

#include <cuda.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

using namespace kvq::cuda;

char NoDriverError::ID = 0;

// Every driver entry point kvq calls, named once: the member's type comes
// from cuda.h's prototype and its symbol from cuda.h's versioning macros
// (cuMemAlloc -> cuMemAlloc_v2), exactly what linking libcuda would bind.
// Declaring and resolving from one list means no entry point can be called
// without having been resolved (a missing one was a null call on the GPU).
#define KVQ_CUDA_ENTRY_POINTS(X)                                               \
  X(cuInit)                                                                    \
  X(cuDeviceGetCount)                                                          \
  X(cuDeviceGet)                                                               \
  X(cuDeviceGetName)                                                           \
  X(cuDeviceGetAttribute)                                                      \
  X(cuDevicePrimaryCtxRetain)                                                  \
  X(cuCtxSetCurrent)                                                           \
  X(cuCtxSynchronize)                                                          \
  X(cuModuleLoadData)                                                          \
  X(cuModuleUnload)                                                            \
  X(cuModuleGetFunction)                                                       \
  X(cuFuncSetAttribute)                                                        \
  X(cuLaunchKernel)                                                            \
  X(cuMemAlloc)                                                                \
  X(cuMemFree)                                                                 \
  X(cuMemcpyHtoD)                                                              \
  X(cuMemcpyDtoH)                                                              \
  X(cuMemcpyDtoD)                                                              \
  X(cuMemcpy2D)                                                                \
  X(cuMemcpyHtoDAsync)                                                         \
  X(cuMemcpyDtoDAsync)                                                         \
  X(cuMemcpy2DAsync)                                                           \
  X(cuGetErrorString)                                                          \
  X(cuDeviceTotalMem)                                                          \
  X(cuEventCreate)                                                             \
  X(cuEventRecord)                                                             \
  X(cuEventSynchronize)                                                        \
  X(cuEventDestroy)                                                            \
  X(cuStreamCreate)                                                            \
  X(cuStreamDestroy)                                                           \
  X(cuStreamSynchronize)                                                       \
  X(cuStreamBeginCapture)                                                      \
  X(cuStreamEndCapture)                                                        \
  X(cuGraphInstantiate)                                                        \
  X(cuGraphLaunch)                                                             \
  X(cuGraphExecDestroy)                                                        \
  X(cuGraphDestroy)

// The symbol a name binds to, after cuda.h's #defines have renamed it.
#define KVQ_SYMBOL_OF(name) KVQ_STRINGIFY(name)
#define KVQ_STRINGIFY(name) #name

struct Driver::Api {
  void *handle = nullptr;
#define KVQ_DECLARE(name) decltype(&::name) name = nullptr;
  KVQ_CUDA_ENTRY_POINTS(KVQ_DECLARE)
#undef KVQ_DECLARE
  /// cuEventElapsedTime_v2 since CUDA 12.8; older drivers have only v1 (same
  /// signature), so it is resolved apart from the list.
  CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent) = nullptr;
  int deviceCount = 0;

  llvm::Error check(CUresult result, const char *what) const {
    if (result == CUDA_SUCCESS)
      return llvm::Error::success();
    const char *text = "unknown error";
    if (cuGetErrorString)
      cuGetErrorString(result, &text);
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   std::string(what) + " failed: " + text);
  }
};

namespace {

template <typename F> bool resolve(void *handle, const char *name, F &out) {
  out = reinterpret_cast<F>(dlsym(handle, name));
  return out != nullptr;
}

class CudaModule : public LoadedModule {
public:
  CudaModule(std::shared_ptr<Driver::Api> api, CUmodule module,
             CUcontext context)
      : api(std::move(api)), module(module), context(context) {}
  ~CudaModule() override {
    api->cuCtxSetCurrent(context);
    api->cuModuleUnload(module);
  }

  llvm::Error launch(const std::string &kernel, std::array<unsigned, 3> grid,
                     std::array<unsigned, 3> block,
                     const std::vector<void *> &args, void *stream) override {
    // The module's device: its context current in this thread.
    api->cuCtxSetCurrent(context);
    llvm::Expected<CUfunction> function = lookup(kernel);
    if (!function)
      return function.takeError();
    std::vector<void *> params(args);
    CUresult result = api->cuLaunchKernel(
        *function, grid[0], grid[1], grid[2], block[0], block[1], block[2], 0,
        static_cast<CUstream>(stream), params.data(), nullptr);
    if (result == CUDA_SUCCESS) // the message is built only for a failure
      return llvm::Error::success();
    return api->check(result, ("cuLaunchKernel(" + kernel + ")").c_str());
  }

private:
  /// The kernel's function handle, looked up in the module once (a decode
  /// step launches the same few kernels over and over, from any thread).
  llvm::Expected<CUfunction> lookup(const std::string &kernel) {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto found = functions.find(kernel); found != functions.end())
      return found->second;
    CUfunction function = nullptr;
    CUresult result =
        api->cuModuleGetFunction(&function, module, kernel.c_str());
    if (result != CUDA_SUCCESS)
      return api->check(result,
                        ("cuModuleGetFunction(" + kernel + ")").c_str());
    functions.emplace(kernel, function);
    return function;
  }

  std::shared_ptr<Driver::Api> api;
  CUmodule module;
  CUcontext context;
  std::mutex mutex;
  std::unordered_map<std::string, CUfunction> functions;
};

} // namespace

namespace {
/// Loads driver library `name` and resolves every entry point kvq calls;
/// the error says why not.
llvm::Expected<std::shared_ptr<Driver::Api>>
loadDriverLibrary(const std::string &name) {
  auto api = std::make_shared<Driver::Api>();
  api->handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!api->handle)
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        name + " could not be loaded (" + dlerror() +
            "); kernels can still be compiled and cached, and the emulator "
            "backend runs them on the CPU");
  std::string missing;
  auto need = [&](const char *symbol, auto &slot) {
    if (!resolve(api->handle, symbol, slot))
      missing += (missing.empty() ? "" : ", ") + std::string(symbol);
  };
#define KVQ_RESOLVE(name) need(KVQ_SYMBOL_OF(name), api->name);
  KVQ_CUDA_ENTRY_POINTS(KVQ_RESOLVE)
#undef KVQ_RESOLVE
  if (!resolve(api->handle, "cuEventElapsedTime_v2", api->cuEventElapsedTime))
    need("cuEventElapsedTime", api->cuEventElapsedTime);
  if (!missing.empty())
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        name + " lacks driver API entry points kvq needs: " + missing);
  if (api->cuInit(0) != CUDA_SUCCESS ||
      api->cuDeviceGetCount(&api->deviceCount) != CUDA_SUCCESS ||
      api->deviceCount == 0)
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        "the driver loaded but reports no CUDA device");
  return api;
}
} // namespace

llvm::Expected<Driver *> Driver::get(int ordinal, const std::string &library) {
  static std::mutex mutex;
  // One library load per file name (its failure remembered), one Driver per
  // (library, device): a process may use several GPUs side by side.
  static std::map<std::string, std::shared_ptr<Api>> libraries;
  static std::map<std::string, std::string> failures;
  static std::map<std::pair<std::string, int>, std::unique_ptr<Driver>> drivers;
  std::lock_guard<std::mutex> lock(mutex);

  // KVQ_CUDA_DRIVER: a driver outside the loader's path (or the tests'
  // fake driver, test/unit/fake-driver).
  const char *fromEnv = std::getenv("KVQ_CUDA_DRIVER");
  std::string name = !library.empty()      ? library
                     : fromEnv && *fromEnv ? std::string(fromEnv)
                                           : std::string("libcuda.so.1");
  if (auto found = drivers.find({name, ordinal}); found != drivers.end())
    return found->second.get();
  auto fail = [&](const std::string &why) -> llvm::Error {
    return llvm::make_error<NoDriverError>("no CUDA driver: " + why);
  };
  if (auto failed = failures.find(name); failed != failures.end())
    return fail(failed->second);
  std::shared_ptr<Api> &api = libraries[name];
  if (!api) {
    llvm::Expected<std::shared_ptr<Api>> loaded = loadDriverLibrary(name);
    if (!loaded) {
      libraries.erase(name);
      std::string why = llvm::toString(loaded.takeError());
      failures[name] = why;
      return fail(why);
    }
    api = *loaded;
  }
  if (ordinal < 0 || ordinal >= api->deviceCount)
    return fail(
        "there is no CUDA device " + std::to_string(ordinal) +
        ": the driver reports " + std::to_string(api->deviceCount) +
        (api->deviceCount == 1
             ? " device (0)"
             : " devices (0 to " + std::to_string(api->deviceCount - 1) + ")"));
  CUdevice device;
  if (llvm::Error e =
          api->check(api->cuDeviceGet(&device, ordinal), "cuDeviceGet"))
    return fail(llvm::toString(std::move(e)));
  CUcontext context = nullptr;
  if (llvm::Error e =
          api->check(api->cuDevicePrimaryCtxRetain(&context, device),
                     "cuDevicePrimaryCtxRetain"))
    return fail(llvm::toString(std::move(e)));

  auto loaded = std::unique_ptr<Driver>(new Driver());
  loaded->api = api;
  loaded->context = context;
  char deviceName[256] = {0};
  api->cuDeviceGetName(deviceName, sizeof deviceName, device);
  int major = 0, minor = 0, sms = 0;
  api->cuDeviceGetAttribute(
      &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device);
  api->cuDeviceGetAttribute(
      &minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device);
  api->cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                            device);
  int memoryClockKHz = 0, busBits = 0, l2 = 0;
  api->cuDeviceGetAttribute(&memoryClockKHz,
                            CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, device);
  api->cuDeviceGetAttribute(
      &busBits, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, device);
  api->cuDeviceGetAttribute(&l2, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, device);
  size_t total = 0;
  api->cuDeviceTotalMem(&total, device);
  loaded->info.name = deviceName;
  loaded->info.ordinal = ordinal;
  loaded->info.computeCapability = major * 10 + minor;
  loaded->info.smCount = sms;
  // Double data rate: two transfers per clock over the bus.
  loaded->info.peakBandwidth = 2.0 * memoryClockKHz * 1e3 * busBits / 8;
  loaded->info.l2Bytes = l2;
  loaded->info.memoryBytes = total;
  Driver *result = loaded.get();
  drivers[{name, ordinal}] = std::move(loaded);
  return result;
}

void Driver::makeCurrent() const {
  api->cuCtxSetCurrent(static_cast<CUcontext>(context));
}

llvm::Expected<std::unique_ptr<LoadedModule>>
Driver::load(const std::string &cubin, const std::string &ptx) {
  makeCurrent();
  CUmodule module = nullptr;
  CUresult result = cubin.empty()
                        ? CUDA_ERROR_INVALID_IMAGE
                        : api->cuModuleLoadData(&module, cubin.data());
  if (result != CUDA_SUCCESS && !ptx.empty()) // CUBIN for another arch: JIT
    result = api->cuModuleLoadData(&module, ptx.c_str());
  if (llvm::Error e = api->check(result, "cuModuleLoadData"))
    return std::move(e);
  return std::make_unique<CudaModule>(api, module,
                                      static_cast<CUcontext>(context));
}

llvm::Expected<void *> Driver::allocate(size_t bytes) {
  makeCurrent();
  CUdeviceptr pointer = 0;
  if (llvm::Error e =
          api->check(api->cuMemAlloc(&pointer, bytes), "cuMemAlloc"))
    return std::move(e);
  return reinterpret_cast<void *>(pointer);
}

void Driver::release(void *pointer) {
  makeCurrent();
  if (pointer)
    api->cuMemFree(reinterpret_cast<CUdeviceptr>(pointer));
}

llvm::Error Driver::copyToDevice(void *dst, const void *src, size_t bytes,
                                 void *stream) {
  makeCurrent();
  auto to = reinterpret_cast<CUdeviceptr>(dst);
  if (stream) // ordered on the caller's stream
    return api->check(
        api->cuMemcpyHtoDAsync(to, src, bytes, static_cast<CUstream>(stream)),
        "cuMemcpyHtoDAsync");
  return api->check(api->cuMemcpyHtoD(to, src, bytes), "cuMemcpyHtoD");
}

llvm::Error Driver::copyToHost(void *dst, const void *src, size_t bytes) {
  makeCurrent();
  return api->check(
      api->cuMemcpyDtoH(dst, reinterpret_cast<CUdeviceptr>(src), bytes),
      "cuMemcpyDtoH");
}

llvm::Error Driver::copyOnDevice(void *dst, const void *src, size_t bytes,
                                 void *stream) {
  makeCurrent();
  auto to = reinterpret_cast<CUdeviceptr>(dst);
  auto from = reinterpret_cast<CUdeviceptr>(src);
  auto copy = [&](size_t at, size_t n) {
    if (stream) // ordered on the caller's stream
      return api->check(api->cuMemcpyDtoDAsync(to + at, from + at, n,
                                               static_cast<CUstream>(stream)),
                        "cuMemcpyDtoDAsync");
    return api->check(api->cuMemcpyDtoD(to + at, from + at, n), "cuMemcpyDtoD");
  };
  // The driver's copy does not promise memmove semantics: overlapping
  // ranges go in chunks no longer than the distance between them, in the
  // direction that reads every byte before it is overwritten.
  size_t gap = to > from ? to - from : from - to;
  if (gap == 0 || gap >= bytes)
    return copy(0, bytes);
  for (size_t done = 0; done < bytes;) {
    size_t chunk = std::min(gap, bytes - done);
    if (llvm::Error e = copy(to < from ? done : bytes - done - chunk, chunk))
      return e;
    done += chunk;
  }
  return llvm::Error::success();
}

llvm::Error Driver::copyRowsOnDevice(void *dst, size_t dstPitch,
                                     const void *src, size_t srcPitch,
                                     size_t rowBytes, size_t rows,
                                     void *stream) {
  makeCurrent();
  CUDA_MEMCPY2D copy{};
  copy.srcMemoryType = CU_MEMORYTYPE_DEVICE;
  copy.srcDevice = reinterpret_cast<CUdeviceptr>(src);
  copy.srcPitch = srcPitch;
  copy.dstMemoryType = CU_MEMORYTYPE_DEVICE;
  copy.dstDevice = reinterpret_cast<CUdeviceptr>(dst);
  copy.dstPitch = dstPitch;
  copy.WidthInBytes = rowBytes;
  copy.Height = rows;
  if (stream) // ordered on the caller's stream
    return api->check(
        api->cuMemcpy2DAsync(&copy, static_cast<CUstream>(stream)),
        "cuMemcpy2DAsync");
  return api->check(api->cuMemcpy2D(&copy), "cuMemcpy2D");
}

llvm::Error Driver::synchronize() {
  makeCurrent();
  return api->check(api->cuCtxSynchronize(), "cuCtxSynchronize");
}

llvm::Expected<double>
Driver::timeMillis(const std::function<llvm::Error()> &work) {
  makeCurrent();
  CUevent start = nullptr, stop = nullptr;
  auto cleanup = [&] {
    if (start)
      api->cuEventDestroy(start);
    if (stop)
      api->cuEventDestroy(stop);
  };
  if (llvm::Error e =
          api->check(api->cuEventCreate(&start, 0), "cuEventCreate"))
    return std::move(e);
  if (llvm::Error e =
          api->check(api->cuEventCreate(&stop, 0), "cuEventCreate")) {
    cleanup();
    return std::move(e);
  }
  llvm::Error error =
      api->check(api->cuEventRecord(start, nullptr), "cuEventRecord");
  if (!error)
    error = work();
  if (!error)
    error = api->check(api->cuEventRecord(stop, nullptr), "cuEventRecord");
  if (!error)
    error = api->check(api->cuEventSynchronize(stop), "cuEventSynchronize");
  float millis = 0;
  if (!error)
    error = api->check(api->cuEventElapsedTime(&millis, start, stop),
                       "cuEventElapsedTime");
  cleanup();
  if (error)
    return std::move(error);
  return double(millis);
}

namespace {
class CudaGraph final : public CapturedGraph {
public:
  CudaGraph(std::shared_ptr<Driver::Api> api, CUgraph graph, CUgraphExec exec)
      : api(std::move(api)), graph(graph), exec(exec) {}
  ~CudaGraph() override {
    api->cuGraphExecDestroy(exec);
    api->cuGraphDestroy(graph);
  }
  llvm::Error launch(void *stream) override {
    return api->check(api->cuGraphLaunch(exec, static_cast<CUstream>(stream)),
                      "cuGraphLaunch");
  }

private:
  std::shared_ptr<Driver::Api> api;
  CUgraph graph;
  CUgraphExec exec;
};
} // namespace

llvm::Expected<void *> Driver::createStream() {
  makeCurrent();
  CUstream stream = nullptr;
  if (llvm::Error e = api->check(
          api->cuStreamCreate(&stream, CU_STREAM_DEFAULT), "cuStreamCreate"))
    return std::move(e);
  return static_cast<void *>(stream);
}

void Driver::destroyStream(void *stream) {
  makeCurrent();
  if (stream)
    api->cuStreamDestroy(static_cast<CUstream>(stream));
}

llvm::Error Driver::synchronize(void *stream) {
  makeCurrent();
  return api->check(api->cuStreamSynchronize(static_cast<CUstream>(stream)),
                    "cuStreamSynchronize");
}

llvm::Expected<std::unique_ptr<CapturedGraph>>
Driver::capture(void *stream, const std::function<llvm::Error()> &work) {
  makeCurrent();
  auto s = static_cast<CUstream>(stream);
  // Global mode: any call that may synchronize or allocate, from any
  // thread, while the capture is open invalidates it, so a capture that
  // succeeds shows `work` did neither.
  if (llvm::Error e = api->check(
          api->cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL),
          "cuStreamBeginCapture"))
    return std::move(e);
  llvm::Error failure = work();
  CUgraph graph = nullptr;
  llvm::Error ended =
      api->check(api->cuStreamEndCapture(s, &graph), "cuStreamEndCapture");
  if (failure || ended) {
    if (graph)
      api->cuGraphDestroy(graph);
    return llvm::joinErrors(std::move(failure), std::move(ended));
  }
  CUgraphExec exec = nullptr;
  if (llvm::Error e = api->check(api->cuGraphInstantiate(&exec, graph, 0),
                                 "cuGraphInstantiate")) {
    api->cuGraphDestroy(graph);
    return std::move(e);
  }
  return std::make_unique<CudaGraph>(api, graph, exec);
}
