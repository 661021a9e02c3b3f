//===- SassStats.h - instruction counts from cuobjdump -sass ----*- C++ -*-===//
//
// kvq-perf-report's view of the machine code ptxas produced: per kernel, the
// static instruction count, the 128-bit global loads, and the innermost
// loops that contain them (the loops that stream the KV cache), with the
// instructions each such loop issues per byte it loads. Needs cuobjdump and
// nvdisasm (scripts/fetch-sass-tools.sh); without them there is no SASS.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_BENCH_SASSSTATS_H
#define KVQ_BENCH_SASSSTATS_H

#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kvq::sass {

/// A loop closed by a backward branch: instructions [begin, end].
struct Loop {
  uint64_t begin = 0, end = 0;
  int instructions = 0;
  int wideLoads = 0;   ///< LDG.E.128 inside
  int globalLoads = 0; ///< any LDG inside
  int sharedLoads = 0; ///< LDS inside
  int ffmas = 0;       ///< FFMA inside
  int hmmas = 0;       ///< HMMA (tensor-core MMA) inside
  /// Per thread: instructions per byte the loop's 128-bit loads bring in.
  double instructionsPerByte() const {
    return wideLoads ? double(instructions) / (16.0 * wideLoads) : 0;
  }
  double instructionsPerFma() const {
    return ffmas ? double(instructions) / ffmas : 0;
  }
};

struct Function {
  int instructions = 0; ///< excluding NOP padding
  int wideLoads = 0;    ///< LDG.E.128*
  int otherGlobalLoads = 0;
  int sharedLoads = 0, sharedStores = 0, shuffles = 0;
  int hmmas = 0; ///< HMMA: tensor-core MMAs
  /// Innermost loops containing a 128-bit global load, in address order.
  std::vector<Loop> streamingLoops;
  /// Innermost loops (no loop inside) that compute from shared memory: at
  /// least 8 FFMA and an LDS, no global load. In attention these are the
  /// unrolled score (q·k) and P·V loops and their remainders.
  std::vector<Loop> computeLoops;
  /// Innermost loops holding HMMA: the tensor-core body's steps of 16
  /// tokens (the body's, then the fp16 sink's and residual's), in address
  /// order.
  std::vector<Loop> stepLoops;
};

/// Parses `cuobjdump -sass` output: kernel name -> statistics.
std::map<std::string, Function> parse(const std::string &listing);

/// Runs cuobjdump -sass on `cubin` with the tools found in `toolsDir`, then
/// on PATH. Fails with a message saying how to get them.
llvm::Expected<std::string> disassemble(const std::string &cubin,
                                        const std::string &toolsDir);

} // namespace kvq::sass

#endif // KVQ_BENCH_SASSSTATS_H
