//===- SassStats.cpp - instruction counts from cuobjdump -sass ------------===//

#include "SassStats.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"

#include <cstdlib>
#include <regex>
#include <sstream>

using namespace kvq;

namespace {

struct Instruction {
  uint64_t address;
  std::string text; ///< opcode and operands, predicate removed
};

bool startsWith(const std::string &s, const char *prefix) {
  return s.rfind(prefix, 0) == 0;
}

sass::Function summarize(const std::vector<Instruction> &code) {
  sass::Function f;
  static const std::regex branch(R"(^BRA(\.[A-Z]+)* (0x[0-9a-f]+))");
  std::vector<sass::Loop> loops;
  for (const Instruction &i : code) {
    if (startsWith(i.text, "NOP"))
      continue;
    ++f.instructions;
    if (startsWith(i.text, "LDG.E.128"))
      ++f.wideLoads;
    else if (startsWith(i.text, "LDG"))
      ++f.otherGlobalLoads;
    else if (startsWith(i.text, "LDS"))
      ++f.sharedLoads;
    else if (startsWith(i.text, "STS"))
      ++f.sharedStores;
    else if (startsWith(i.text, "SHFL"))
      ++f.shuffles;
    else if (startsWith(i.text, "HMMA"))
      ++f.hmmas;
    std::smatch m;
    if (std::regex_search(i.text, m, branch)) {
      uint64_t target = std::stoull(m[2].str(), nullptr, 16);
      if (target < i.address) // a backward branch closes a loop
        loops.push_back({target, i.address, 0, 0});
    }
  }
  for (sass::Loop &loop : loops)
    for (const Instruction &i : code)
      if (i.address >= loop.begin && i.address <= loop.end &&
          !startsWith(i.text, "NOP")) {
        ++loop.instructions;
        loop.wideLoads += startsWith(i.text, "LDG.E.128");
        loop.globalLoads += startsWith(i.text, "LDG");
        loop.sharedLoads += startsWith(i.text, "LDS");
        loop.ffmas += startsWith(i.text, "FFMA");
        loop.hmmas += startsWith(i.text, "HMMA");
      }
  auto nests = [&](const sass::Loop &outer, const sass::Loop &inner) {
    return &outer != &inner && inner.begin >= outer.begin &&
           inner.end <= outer.end;
  };
  // The loops holding a kind of instruction with no other such loop nested
  // inside: streaming loops (128-bit global loads), tensor-core step loops.
  auto innermost = [&](int sass::Loop::*count, std::vector<sass::Loop> &out) {
    for (const sass::Loop &loop : loops) {
      if (!(loop.*count))
        continue;
      bool inner = true;
      for (const sass::Loop &other : loops)
        if (other.*count && nests(loop, other))
          inner = false;
      if (inner)
        out.push_back(loop);
    }
  };
  innermost(&sass::Loop::wideLoads, f.streamingLoops);
  innermost(&sass::Loop::hmmas, f.stepLoops);
  for (const sass::Loop &loop : loops) {
    if (loop.ffmas < 8 || !loop.sharedLoads || loop.globalLoads)
      continue;
    bool innermost = true;
    for (const sass::Loop &other : loops)
      if (nests(loop, other))
        innermost = false;
    if (innermost)
      f.computeLoops.push_back(loop);
  }
  return f;
}

} // namespace

std::map<std::string, sass::Function> sass::parse(const std::string &listing) {
  static const std::regex function(R"(Function : (\S+))");
  static const std::regex instruction(
      R"(/\*([0-9a-f]{4,})\*/\s+(@!?U?P[0-9T]\s+)?([A-Z][^;]*);)");
  std::map<std::string, Function> result;
  std::string name, line;
  std::vector<Instruction> code;
  std::istringstream in(listing);
  auto flush = [&] {
    if (!name.empty())
      result[name] = summarize(code);
    code.clear();
  };
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, function)) {
      flush();
      name = m[1].str();
    } else if (std::regex_search(line, m, instruction)) {
      code.push_back({std::stoull(m[1].str(), nullptr, 16), m[3].str()});
    }
  }
  flush();
  return result;
}

llvm::Expected<std::string> sass::disassemble(const std::string &cubin,
                                              const std::string &toolsDir) {
  std::string cuobjdump = toolsDir + "/cuobjdump";
  if (!llvm::sys::fs::can_execute(cuobjdump)) {
    llvm::ErrorOr<std::string> found =
        llvm::sys::findProgramByName("cuobjdump");
    if (!found)
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          "cuobjdump not found in " + toolsDir +
              " or on PATH (scripts/fetch-sass-tools.sh installs it)");
    cuobjdump = *found;
  }
  llvm::SmallString<128> input, output;
  int fd;
  if (std::error_code ec =
          llvm::sys::fs::createTemporaryFile("kvq-sass", "cubin", fd, input))
    return llvm::errorCodeToError(ec);
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << cubin;
  }
  if (std::error_code ec =
          llvm::sys::fs::createTemporaryFile("kvq-sass", "txt", output))
    return llvm::errorCodeToError(ec);
  // cuobjdump finds nvdisasm through NVDISASM_PATH.
  std::string disasmDir = llvm::sys::fs::can_execute(toolsDir + "/nvdisasm")
                              ? toolsDir
                              : llvm::sys::path::parent_path(cuobjdump).str();
  ::setenv("NVDISASM_PATH", disasmDir.c_str(), /*overwrite=*/1);
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, output.str(),
                                                output.str()};
  std::string error;
  int rc =
      llvm::sys::ExecuteAndWait(cuobjdump, {cuobjdump, "-sass", input.str()},
                                std::nullopt, redirects, 0, 0, &error);
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> text =
      llvm::MemoryBuffer::getFile(output);
  llvm::sys::fs::remove(input);
  llvm::sys::fs::remove(output);
  if (rc != 0 || !text)
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        "cuobjdump -sass failed (exit " + std::to_string(rc) + ")" +
            (error.empty() ? "" : ": " + error) +
            (text ? ": " + (*text)->getBuffer().str() : ""));
  return (*text)->getBuffer().str();
}
