//===- Context.cpp - the public API over the runtime ----------------------===//
//
// Translates the typed llvm::Errors of the runtime into Status codes, so the
// public header needs no LLVM types.
//
//===----------------------------------------------------------------------===//

#include "kvq/kvq.h"

#include "ContextCompiler.h"
#include "kvq/Cache/Bundle.h"
#include "kvq/Runtime/CudaDriver.h"
#include "kvq/Runtime/KernelCompiler.h"
#include "kvq/Runtime/Runtime.h"

using namespace kvq;

struct Context::Impl {
  std::unique_ptr<Runtime> runtime;
};

namespace {

Status toStatus(llvm::Error error,
                StatusCode otherwise = StatusCode::RuntimeFailed) {
  if (!error)
    return Status();
  StatusCode code = otherwise;
  std::string message;
  llvm::handleAllErrors(
      std::move(error),
      [&](const LaunchError &e) {
        code = e.message().rfind("invalid kernel spec", 0) == 0
                   ? StatusCode::InvalidSpec
                   : StatusCode::InvalidArgument;
        message = e.message();
      },
      [&](const cuda::NoDriverError &e) {
        code = StatusCode::NoDevice;
        message = e.message();
      },
      [&](const CompileError &e) {
        code = StatusCode::CompileFailed;
        message = e.message();
      },
      [&](const MissingKernelError &e) {
        code = StatusCode::MissingKernel;
        message = e.message();
      },
      [&](const cache::BundleError &e) {
        code = StatusCode::BadBundle;
        message = e.message();
      },
      [&](const llvm::ErrorInfoBase &e) { message = e.message(); });
  return Status(code, message);
}

Backend toBackend(BackendKind kind) {
  switch (kind) {
  case BackendKind::Auto:
    return Backend::Auto;
  case BackendKind::Cuda:
    return Backend::Cuda;
  case BackendKind::Emulator:
    return Backend::Emulator;
  case BackendKind::Reference:
    return Backend::Reference;
  }
  return Backend::Auto;
}

} // namespace

std::unique_ptr<Context> Context::create(const ContextOptions &options,
                                         Status *status) {
  if (int(options.backend) < int(BackendKind::Auto) ||
      int(options.backend) > int(BackendKind::Reference)) {
    if (status)
      *status = Status(StatusCode::InvalidArgument,
                       "backend has no such value (" +
                           std::to_string(int(options.backend)) + ")");
    return nullptr;
  }
  if (options.device < 0) {
    if (status)
      *status = Status(StatusCode::InvalidArgument,
                       "device must not be negative, got " +
                           std::to_string(options.device));
    return nullptr;
  }
  RuntimeOptions runtimeOptions;
  runtimeOptions.device = options.device;
  runtimeOptions.backend = toBackend(options.backend);
  runtimeOptions.arch = options.arch;
  runtimeOptions.cacheDir = options.cacheDir;
  runtimeOptions.diskCache = options.diskCache;
  runtimeOptions.bundle = options.bundle;
  runtimeOptions.compiler = contextCompiler();
  llvm::Expected<std::unique_ptr<Runtime>> runtime =
      Runtime::create(runtimeOptions);
  if (!runtime) {
    Status failure = toStatus(runtime.takeError());
    if (status)
      *status = failure;
    return nullptr;
  }
  auto context = std::unique_ptr<Context>(new Context());
  context->impl = std::make_shared<Impl>();
  context->impl->runtime = std::move(*runtime);
  if (status)
    *status = Status();
  return context;
}

Context::~Context() = default;

std::unique_ptr<Context> Context::share() const {
  auto context = std::unique_ptr<Context>(new Context());
  context->impl = impl;
  return context;
}

BackendKind Context::backend() const {
  switch (impl->runtime->backend()) {
  case Backend::Cuda:
    return BackendKind::Cuda;
  case Backend::Reference:
    return BackendKind::Reference;
  default:
    return BackendKind::Emulator;
  }
}

const char *Context::backendName() const {
  return kvq::backendName(impl->runtime->backend());
}

std::string Context::arch() const { return impl->runtime->arch(); }

Status Context::prepare(const KernelSpec &spec) {
  auto kernels = impl->runtime->prepare(spec);
  return kernels ? Status()
                 : toStatus(kernels.takeError(), StatusCode::CompileFailed);
}

Status Context::quantize(const KernelSpec &spec, const QuantizeCall &call) {
  return toStatus(impl->runtime->quantize(spec, call));
}

Status Context::dequantize(const KernelSpec &spec, const DequantizeCall &call) {
  return toStatus(impl->runtime->dequantize(spec, call));
}

Status Context::append(const KernelSpec &spec, const AppendCall &call) {
  return toStatus(impl->runtime->append(spec, call));
}

Status Context::attention(const KernelSpec &spec, const AttentionCall &call) {
  return toStatus(impl->runtime->attention(spec, call));
}

size_t Context::attentionWorkspaceBytes(const KernelSpec &spec,
                                        const AttentionCall &call) {
  llvm::Expected<size_t> bytes =
      impl->runtime->attentionWorkspaceBytes(spec, call);
  if (!bytes) {
    llvm::consumeError(bytes.takeError());
    return 0;
  }
  return *bytes;
}

void *Context::allocate(size_t bytes, Status *status) {
  llvm::Expected<void *> pointer = impl->runtime->allocate(bytes);
  if (!pointer) {
    Status failure = toStatus(pointer.takeError());
    if (status)
      *status = failure;
    return nullptr;
  }
  if (status)
    *status = Status();
  return *pointer;
}

void Context::release(void *pointer) { impl->runtime->release(pointer); }

Status Context::copyIn(void *device, const void *host, size_t bytes,
                       void *stream) {
  return toStatus(impl->runtime->copyIn(device, host, bytes, stream));
}

Status Context::copyOut(void *host, const void *device, size_t bytes) {
  return toStatus(impl->runtime->copyOut(host, device, bytes));
}

Status Context::copyOnDevice(void *dst, const void *src, size_t bytes,
                             void *stream) {
  return toStatus(impl->runtime->copyOnDevice(dst, src, bytes, stream));
}

Status Context::copyRowsOnDevice(void *dst, size_t dstPitch, const void *src,
                                 size_t srcPitch, size_t rowBytes, size_t rows,
                                 void *stream) {
  return toStatus(impl->runtime->copyRowsOnDevice(dst, dstPitch, src, srcPitch,
                                                  rowBytes, rows, stream));
}

CacheStatistics Context::statistics() const {
  RuntimeStatistics s = impl->runtime->statistics();
  return {s.compiled,   s.diskHits,   s.bundleHits,
          s.memoryHits, s.remoteHits, s.launches};
}
