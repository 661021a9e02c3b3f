//===- EmulatorBuild.cpp - generated CUDA to a host shared object ---------===//
//
// The emulator's compiler half (JIT library only): the generated source, the
// device prelude and the shim header go through the host C++ compiler into a
// shared object that Module::load runs. The runtime-only library loads such
// objects from the cache or a bundle and never runs a compiler.
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/Emulator.h"

#include "EmulatorShim.h"
#include "kvq/Cache/CacheKey.h"
#include "kvq/Codegen/Generator.h"
#include "kvq/Runtime/NVRTC.h"
#include "kvq/Support/FileIO.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <unistd.h>

using namespace kvq;
using namespace kvq::emu;

llvm::Expected<std::string>
kvq::emu::buildSharedObject(const GeneratedSource &source,
                            const std::string &cacheDir, double *millis) {
  if (millis)
    *millis = 0;
  // A trampoline per kernel turns cuLaunchKernel-style void** arguments
  // into a typed call.
  std::string unit = source.cuda + "\n// emulator launch trampolines\n";
  for (const GeneratedKernel &kernel : source.kernels) {
    unit += "extern \"C\" void kvq_emu_launch_" + kernel.name +
            "(void **a) {\n  " + kernel.name + "(";
    for (size_t i = 0; i < kernel.argTypes.size(); ++i)
      unit += (i ? ", " : "") + std::string("*static_cast<") +
              kernel.argTypes[i] + " *>(a[" + std::to_string(i) + "])";
    unit += ");\n}\n";
  }
  const char *compiler = hostCompiler();
  const std::vector<std::string> &flags = hostFlags();
  std::string identity = unit + shimSource() + shimAbiSource() +
                         devicePrelude() + hostCompilerIdentity();
  std::string dir = cacheDir + "/" + cache::sha256Hex(identity).substr(0, 32);
  std::string library = dir + "/kernels.so";

  if (!llvm::sys::fs::exists(library)) {
    // Several processes may compile the same kernel at once (lit runs tests
    // in parallel): each works in its own folder and the shared object is
    // published by an atomic rename.
    auto start = std::chrono::steady_clock::now();
    std::string work = dir + "/tmp." + std::to_string(getpid());
    if (std::error_code ec = llvm::sys::fs::create_directories(work))
      return llvm::createStringError(ec, "cannot create " + work);
    if (llvm::Error e = writeWholeFile(work + "/kernels.cu", unit))
      return std::move(e);
    if (llvm::Error e =
            writeWholeFile(work + "/" + kPreludeName, devicePrelude()))
      return std::move(e);
    if (llvm::Error e =
            writeWholeFile(work + "/kvq_emulator_shim.h", shimSource()))
      return std::move(e);
    if (llvm::Error e =
            writeWholeFile(work + "/kvq_emulator_abi.h", shimAbiSource()))
      return std::move(e);
    llvm::ErrorOr<std::string> path = llvm::sys::findProgramByName(compiler);
    if (!path)
      return llvm::createStringError(path.getError(),
                                     std::string("host compiler '") + compiler +
                                         "' not found (set CXX)");
    std::vector<std::string> args = {*path};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"-include", work + "/kvq_emulator_shim.h", "-I",
                             work, "-I", cudaIncludeDir(), "-x", "c++",
                             work + "/kernels.cu", "-o", work + "/kernels.so"});
    std::vector<llvm::StringRef> argv(args.begin(), args.end());
    std::string log = work + "/compile.log";
    std::optional<llvm::StringRef> redirects[] = {std::nullopt, log, log};
    std::string message;
    int rc = llvm::sys::ExecuteAndWait(*path, argv, std::nullopt, redirects, 0,
                                       0, &message);
    if (rc != 0) {
      auto text = llvm::MemoryBuffer::getFile(log);
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          "host compiler failed on " + work + "/kernels.cu" + message + ":\n" +
              (text ? (*text)->getBuffer().str() : std::string()));
    }
    // Keep the source next to the library for users who want to read it.
    (void)llvm::sys::fs::rename(work + "/kernels.cu", dir + "/kernels.cu");
    if (std::error_code ec =
            llvm::sys::fs::rename(work + "/kernels.so", library))
      return llvm::createStringError(ec, "cannot publish " + library);
    (void)llvm::sys::fs::remove_directories(work);
    if (millis)
      *millis = std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - start)
                    .count();
  }
  return library;
}

llvm::Expected<std::unique_ptr<Module>>
Module::compile(const GeneratedSource &source, const std::string &cacheDir) {
  double millis = 0;
  llvm::Expected<std::string> library =
      buildSharedObject(source, cacheDir, &millis);
  if (!library)
    return library.takeError();
  llvm::Expected<std::unique_ptr<Module>> module =
      load(*library, source.kernels);
  if (module)
    (*module)->compileMs = millis;
  return module;
}
