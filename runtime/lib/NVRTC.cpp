//===- NVRTC.cpp - in-process CUDA compilation ----------------------------===//

#include "kvq/Runtime/NVRTC.h"

#include "kvq/Codegen/Generator.h"

#include "llvm/Support/raw_ostream.h"

#include <nvrtc.h>

#include <chrono>
#include <cstdlib>
#include <regex>
#include <sstream>

using namespace kvq;

namespace {

/// Owns an nvrtcProgram.
struct Program {
  nvrtcProgram handle = nullptr;
  ~Program() {
    if (handle)
      nvrtcDestroyProgram(&handle);
  }
};

std::string programLog(nvrtcProgram program) {
  size_t size = 0;
  if (nvrtcGetProgramLogSize(program, &size) != NVRTC_SUCCESS || size <= 1)
    return {};
  std::string log(size, '\0');
  nvrtcGetProgramLog(program, log.data());
  log.resize(size - 1);
  return log;
}

} // namespace

std::string kvq::nvrtcVersionString() {
  int major = 0, minor = 0;
  nvrtcVersion(&major, &minor);
  return std::to_string(major) + "." + std::to_string(minor);
}

std::map<std::string, PtxasStats> kvq::parsePtxasLog(const std::string &log) {
  std::map<std::string, PtxasStats> stats;
  std::istringstream lines(log);
  std::string line, current;
  static const std::regex function(R"(Function properties for (\S+))");
  static const std::regex compiling(R"(Compiling entry function '([^']+)')");
  static const std::regex frame(
      R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)");
  static const std::regex used(R"(Used (\d+) registers)");
  static const std::regex barriers(R"(used (\d+) barriers)");
  static const std::regex smem(R"((\d+) bytes smem)");
  std::smatch m;
  while (std::getline(lines, line)) {
    if (std::regex_search(line, m, compiling) ||
        std::regex_search(line, m, function)) {
      current = m[1];
      stats[current];
      continue;
    }
    if (current.empty())
      continue;
    PtxasStats &s = stats[current];
    if (std::regex_search(line, m, frame)) {
      s.stackBytes = std::stoi(m[1]);
      s.spillStoreBytes = std::stoi(m[2]);
      s.spillLoadBytes = std::stoi(m[3]);
    }
    if (std::regex_search(line, m, used))
      s.registers = std::stoi(m[1]);
    if (std::regex_search(line, m, barriers))
      s.barriers = std::stoi(m[1]);
    if (std::regex_search(line, m, smem))
      s.sharedBytes = std::stoi(m[1]);
  }
  return stats;
}

std::string kvq::cudaIncludeDir() {
  if (const char *dir = std::getenv("KVQ_CUDA_INCLUDE"))
    return dir;
  return KVQ_CUDA_INCLUDE_DIR;
}

llvm::Expected<CompiledModule> kvq::compileCuda(const std::string &source,
                                                const std::string &programName,
                                                const NVRTCOptions &options) {
  auto start = std::chrono::steady_clock::now();
  bool realArch = options.arch.rfind("sm_", 0) == 0;
  bool virtualArch = options.arch.rfind("compute_", 0) == 0;
  if (!realArch && !virtualArch)
    return llvm::make_error<CompileError>("bad target arch '" + options.arch +
                                              "': expected sm_XX or compute_XX",
                                          "", "");
  if (options.cubin && !realArch)
    return llvm::make_error<CompileError>(
        "a CUBIN needs a real arch (sm_XX), got '" + options.arch + "'", "",
        "");

  Program program;
  const char *headers[] = {devicePrelude()};
  const char *headerNames[] = {kPreludeName};
  if (nvrtcCreateProgram(&program.handle, source.c_str(), programName.c_str(),
                         1, headers, headerNames) != NVRTC_SUCCESS)
    return llvm::make_error<CompileError>("nvrtcCreateProgram failed", "",
                                          source);

  std::vector<std::string> args = {"--gpu-architecture=" + options.arch,
                                   "-std=c++17",
                                   "--include-path=" + cudaIncludeDir()};
  if (options.cubin)
    args.push_back("--ptxas-options=-v");
  if (options.lineInfo)
    args.push_back("-lineinfo");
  args.insert(args.end(), options.extraOptions.begin(),
              options.extraOptions.end());
  std::vector<const char *> argv;
  for (const std::string &arg : args)
    argv.push_back(arg.c_str());

  nvrtcResult result = nvrtcCompileProgram(
      program.handle, static_cast<int>(argv.size()), argv.data());
  std::string log = programLog(program.handle);
  if (result != NVRTC_SUCCESS)
    return llvm::make_error<CompileError>(
        "nvrtc failed to compile " + programName + " for " + options.arch +
            ": " + nvrtcGetErrorString(result),
        log, source);

  CompiledModule compiled;
  compiled.log = log;
  size_t size = 0;
  if (nvrtcGetPTXSize(program.handle, &size) == NVRTC_SUCCESS && size > 1) {
    compiled.ptx.resize(size);
    nvrtcGetPTX(program.handle, compiled.ptx.data());
    compiled.ptx.resize(size - 1);
  }
  if (options.cubin) {
    if (nvrtcGetCUBINSize(program.handle, &size) != NVRTC_SUCCESS || size == 0)
      return llvm::make_error<CompileError>(
          "nvrtc produced no CUBIN for " + options.arch, log, source);
    compiled.cubin.resize(size);
    nvrtcGetCUBIN(program.handle, compiled.cubin.data());
    compiled.stats = parsePtxasLog(log);
  }
  compiled.millis = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start)
                        .count();
  return compiled;
}
