//===- FakeCudaDriver.cpp - a libcuda stand-in for tests without a GPU ----===//
//
// Exports the driver entry points kvq resolves, by the symbols cuda.h binds
// them to, over host memory: "device" pointers are malloc'ed, copies are
// memcpy, events read the host clock, modules are accepted and launches are
// counted (no kernel runs). The runtime's driver layer (which symbols it
// resolves, how it calls them) is then testable on a machine with no GPU.
//
// Built twice: KVQ_FAKE_OMIT_DTOD leaves cuMemcpyDtoD_v2 out, the shape of
// a driver that lacks one entry point.
//
//===----------------------------------------------------------------------===//

#include <cuda.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#define FAKE extern "C" __attribute__((visibility("default")))

namespace {
// Two devices; device 1 has half the SMs, so a test sees which one it got.
constexpr int kDevices = 2;
int contexts[kDevices];                  // their addresses are the contexts
thread_local int current = 0;            // the device of the current context
std::map<const void *, int> allocatedOn; // pointer -> device
int launches = 0, lastLaunchDevice = -1;
// What a call did, for tests of the engine contract (no allocation, copy
// or synchronisation inside a decode step).
int allocations = 0, copies = 0, synchronizations = 0, lookups = 0;
/// Fault injection (kvqFakeFail): the entry point that fails, and how many
/// of its calls succeed first.
std::string failing;
int failAfter = -1;
bool injectFailure(const char *entry) {
  if (failAfter < 0 || failing != entry)
    return false;
  if (failAfter-- > 0)
    return false;
  failing.clear(); // one failure, then the driver works again
  return true;
}
/// The stream the next copy is queued on: the async entry points set it
/// and call the synchronous ones, which queue on the default stream.
CUstream queuedOn = nullptr;
/// Launches and copies queued on each stream (null: the default stream).
/// (A few streams at most: a linear search beats a map, and keeps the
/// bookkeeping out of kvq-host-bench's numbers.)
std::vector<std::pair<const void *, int>> onStream;
void countOn(const void *stream) {
  for (auto &[s, n] : onStream)
    if (s == stream) {
      ++n;
      return;
    }
  onStream.push_back({stream, 1});
}
/// The start of every copy: false for an injected failure, else the copy
/// is counted, on the stream it was queued on.
bool startCopy(const char *entry) {
  CUstream stream = queuedOn;
  queuedOn = nullptr;
  if (injectFailure(entry))
    return false;
  countOn(stream);
  ++copies;
  return true;
}
/// Live allocations, for tests that nothing leaks after a failure.
int live = 0;

int moduleToken = 0; // distinct addresses to hand out as handles
/// KVQ_FAKE_NO_DATA=1: copies are counted but move nothing, so a host-cost
/// benchmark does not time the data movement a GPU would do.
bool moveData() {
  static const bool move = [] {
    const char *value = std::getenv("KVQ_FAKE_NO_DATA");
    return !(value && *value == '1');
  }();
  return move;
}
double nowMillis() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
} // namespace

FAKE int kvqFakeLaunchCount() { return launches; }
/// The device whose context was current when `pointer` was allocated, -1
/// for none; the device of the last launch.
FAKE int kvqFakeDeviceOf(const void *pointer) {
  auto found = allocatedOn.find(pointer);
  return found == allocatedOn.end() ? -1 : found->second;
}
FAKE int kvqFakeLastLaunchDevice() { return lastLaunchDevice; }
/// Makes call number `after` (0: the next) of entry point `entry`
/// ("cuMemAlloc_v2", "cuLaunchKernel", "cuMemcpy2D_v2", ...) fail once.
FAKE void kvqFakeFail(const char *entry, int after) {
  failing = entry;
  failAfter = after;
}
FAKE int kvqFakeLiveAllocations() { return live; }
/// Function lookups in a module (cuModuleGetFunction) so far.
FAKE int kvqFakeFunctionLookups() { return lookups; }
/// Launches and copies queued on `stream` so far (null: the default one).
FAKE int kvqFakeOperationsOn(const void *stream) {
  for (auto [s, n] : onStream)
    if (s == stream)
      return n;
  return 0;
}
/// Counts so far: launches (graph replays included), allocations and
/// frees, copies of any direction, synchronisations of any kind.
FAKE void kvqFakeCounts(int *launchCount, int *allocationCount, int *copyCount,
                        int *synchronizationCount) {
  *launchCount = launches;
  *allocationCount = allocations;
  *copyCount = copies;
  *synchronizationCount = synchronizations;
}

FAKE CUresult cuInit(unsigned) { return CUDA_SUCCESS; }
FAKE CUresult cuDeviceGetCount(int *count) {
  *count = kDevices;
  return CUDA_SUCCESS;
}
FAKE CUresult cuDeviceGet(CUdevice *device, int ordinal) {
  if (ordinal < 0 || ordinal >= kDevices)
    return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}
FAKE CUresult cuDeviceGetName(char *name, int length, CUdevice) {
  std::strncpy(name, "kvq fake device", size_t(length));
  return CUDA_SUCCESS;
}
FAKE CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attribute,
                                   CUdevice device) {
  switch (attribute) {
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
    *value = 9;
    break;
  case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
    *value = device == 0 ? 132 : 66;
    break;
  case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE:
    *value = 1 << 20;
    break;
  default:
    *value = 0;
  }
  return CUDA_SUCCESS;
}
FAKE CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice) {
  *bytes = size_t(1) << 30;
  return CUDA_SUCCESS;
}
FAKE CUresult cuDevicePrimaryCtxRetain(CUcontext *context, CUdevice device) {
  *context = reinterpret_cast<CUcontext>(&contexts[device]);
  return CUDA_SUCCESS;
}
FAKE CUresult cuCtxSetCurrent(CUcontext context) {
  for (int d = 0; d < kDevices; ++d)
    if (reinterpret_cast<int *>(context) == &contexts[d]) {
      current = d;
      return CUDA_SUCCESS;
    }
  return CUDA_ERROR_INVALID_CONTEXT;
}
FAKE CUresult cuCtxSynchronize() {
  ++synchronizations;
  return CUDA_SUCCESS;
}
FAKE CUresult cuModuleLoadData(CUmodule *module, const void *image) {
  if (!image)
    return CUDA_ERROR_INVALID_IMAGE;
  *module = reinterpret_cast<CUmodule>(new int(++moduleToken));
  return CUDA_SUCCESS;
}
FAKE CUresult cuModuleUnload(CUmodule module) {
  delete reinterpret_cast<int *>(module);
  return CUDA_SUCCESS;
}
FAKE CUresult cuModuleGetFunction(CUfunction *function, CUmodule module,
                                  const char *) {
  ++lookups;
  *function = reinterpret_cast<CUfunction>(module);
  return CUDA_SUCCESS;
}
FAKE CUresult cuFuncSetAttribute(CUfunction, CUfunction_attribute, int) {
  return CUDA_SUCCESS;
}
FAKE CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, unsigned, CUstream stream,
                             void **, void **) {
  if (injectFailure("cuLaunchKernel"))
    return CUDA_ERROR_LAUNCH_FAILED;
  countOn(stream);
  ++launches;
  lastLaunchDevice = current;
  return CUDA_SUCCESS;
}
FAKE CUresult cuMemAlloc_v2(CUdeviceptr *pointer, size_t bytes) {
  if (injectFailure("cuMemAlloc_v2"))
    return CUDA_ERROR_OUT_OF_MEMORY;
  ++allocations;
  ++live;
  // 256-byte aligned, as cuMemAlloc promises (the runtime checks it).
  void *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  if (!p)
    return CUDA_ERROR_OUT_OF_MEMORY;
  *pointer = reinterpret_cast<CUdeviceptr>(p);
  allocatedOn[p] = current;
  return CUDA_SUCCESS;
}
FAKE CUresult cuMemFree_v2(CUdeviceptr pointer) {
  ++allocations;
  if (allocatedOn.erase(reinterpret_cast<void *>(pointer)))
    --live;
  std::free(reinterpret_cast<void *>(pointer));
  return CUDA_SUCCESS;
}
FAKE CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t bytes) {
  if (!startCopy("cuMemcpyHtoD_v2"))
    return CUDA_ERROR_INVALID_VALUE;
  if (moveData())
    std::memcpy(reinterpret_cast<void *>(dst), src, bytes);
  return CUDA_SUCCESS;
}
FAKE CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t bytes) {
  ++copies;
  if (moveData())
    std::memcpy(dst, reinterpret_cast<const void *>(src), bytes);
  return CUDA_SUCCESS;
}
#ifndef KVQ_FAKE_OMIT_DTOD
FAKE CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
  if (!startCopy("cuMemcpyDtoD_v2"))
    return CUDA_ERROR_INVALID_VALUE;
  // The driver promises nothing for overlapping ranges: refuse them, so a
  // caller that relies on it fails here.
  if (dst != src && dst < src + bytes && src < dst + bytes)
    return CUDA_ERROR_INVALID_VALUE;
  if (moveData())
    std::memcpy(reinterpret_cast<void *>(dst),
                reinterpret_cast<const void *>(src), bytes);
  return CUDA_SUCCESS;
}
#endif
FAKE CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *copy) {
  if (!startCopy("cuMemcpy2D_v2"))
    return CUDA_ERROR_INVALID_VALUE;
  if (copy->srcMemoryType != CU_MEMORYTYPE_DEVICE ||
      copy->dstMemoryType != CU_MEMORYTYPE_DEVICE)
    return CUDA_ERROR_NOT_SUPPORTED; // kvq copies device rows only
  if (moveData())
    for (size_t r = 0; r < copy->Height; ++r)
      std::memcpy(
          reinterpret_cast<char *>(copy->dstDevice + copy->dstXInBytes) +
              (copy->dstY + r) * copy->dstPitch,
          reinterpret_cast<const char *>(copy->srcDevice + copy->srcXInBytes) +
              (copy->srcY + r) * copy->srcPitch,
          copy->WidthInBytes);
  return CUDA_SUCCESS;
}
// The stream-ordered copies: the same copies, counted on their stream.
FAKE CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src,
                                   size_t bytes, CUstream stream) {
  queuedOn = stream;
  return cuMemcpyHtoD_v2(dst, src, bytes);
}
#ifndef KVQ_FAKE_OMIT_DTOD
FAKE CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src,
                                   size_t bytes, CUstream stream) {
  queuedOn = stream;
  return cuMemcpyDtoD_v2(dst, src, bytes);
}
#endif
FAKE CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *copy, CUstream stream) {
  queuedOn = stream;
  return cuMemcpy2D_v2(copy);
}
FAKE CUresult cuGetErrorString(CUresult, const char **text) {
  *text = "fake driver error";
  return CUDA_SUCCESS;
}
FAKE CUresult cuEventCreate(CUevent *event, unsigned) {
  *event = reinterpret_cast<CUevent>(new double(0));
  return CUDA_SUCCESS;
}
FAKE CUresult cuEventRecord(CUevent event, CUstream) {
  *reinterpret_cast<double *>(event) = nowMillis();
  return CUDA_SUCCESS;
}
FAKE CUresult cuEventSynchronize(CUevent) {
  ++synchronizations;
  return CUDA_SUCCESS;
}
FAKE CUresult cuEventElapsedTime_v2(float *millis, CUevent start,
                                    CUevent stop) {
  *millis = float(*reinterpret_cast<double *>(stop) -
                  *reinterpret_cast<double *>(start));
  return CUDA_SUCCESS;
}
FAKE CUresult cuEventDestroy_v2(CUevent event) {
  delete reinterpret_cast<double *>(event);
  return CUDA_SUCCESS;
}

// Streams and graphs: handles only. A capture records nothing; replaying a
// graph counts one launch per replay.
FAKE CUresult cuStreamCreate(CUstream *stream, unsigned) {
  *stream = reinterpret_cast<CUstream>(new int(0));
  return CUDA_SUCCESS;
}
FAKE CUresult cuStreamDestroy_v2(CUstream stream) {
  delete reinterpret_cast<int *>(stream);
  return CUDA_SUCCESS;
}
FAKE CUresult cuStreamSynchronize(CUstream) {
  ++synchronizations;
  return CUDA_SUCCESS;
}
FAKE CUresult cuStreamBeginCapture_v2(CUstream stream, CUstreamCaptureMode) {
  if (!stream) // the legacy default stream cannot be captured
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return CUDA_SUCCESS;
}
FAKE CUresult cuStreamEndCapture(CUstream, CUgraph *graph) {
  *graph = reinterpret_cast<CUgraph>(new int(0));
  return CUDA_SUCCESS;
}
FAKE CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph,
                                          unsigned long long) {
  *exec = reinterpret_cast<CUgraphExec>(new int(0));
  return CUDA_SUCCESS;
}
FAKE CUresult cuGraphLaunch(CUgraphExec, CUstream) {
  ++launches;
  return CUDA_SUCCESS;
}
FAKE CUresult cuGraphExecDestroy(CUgraphExec exec) {
  delete reinterpret_cast<int *>(exec);
  return CUDA_SUCCESS;
}
FAKE CUresult cuGraphDestroy(CUgraph graph) {
  delete reinterpret_cast<int *>(graph);
  return CUDA_SUCCESS;
}
