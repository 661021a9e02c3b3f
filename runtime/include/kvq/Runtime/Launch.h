//===- Launch.h - validated launches of generated kernels -------*- C++ -*-===//
//
// Turns the arguments of a quantize, dequantize or attention call into the
// kernel launches of KernelABI.h (grid, block, argument array), after
// checking everything a user can get wrong: null or misaligned pointers,
// token ranges outside a buffer's capacity, channel-axis ranges that are not
// whole groups, per-sequence lengths beyond capacity, 32-bit index overflow.
// Every failure is a kvq::LaunchError naming the bad value; nothing is
// launched then.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_LAUNCH_H
#define KVQ_RUNTIME_LAUNCH_H

#include "kvq/Calls.h"
#include "kvq/Codegen/GeneratedSource.h"
#include "kvq/Codegen/KernelSpec.h"

#include "kvq/Support/MessageError.h"
#include "llvm/Support/Error.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace kvq {

/// A user-caused problem with a launch, before anything ran.
class LaunchError : public MessageError<LaunchError> {
public:
  static char ID;
  using MessageError::MessageError;
};

/// One kernel launch: geometry plus the argument values (owned) and the
/// cuLaunchKernel-style pointers to them.
struct KernelLaunch {
  std::string kernel;
  std::array<unsigned, 3> grid{1, 1, 1}, block{1, 1, 1};
  std::vector<uint64_t> values; ///< one 8-byte slot per argument
  std::vector<void *> args;     ///< &values[i]
  void *stream = nullptr;       ///< the call's stream (cuda)
};

llvm::Expected<KernelLaunch> planQuantize(const KernelSpec &spec,
                                          const GeneratedSource &source,
                                          const QuantizeCall &call);
llvm::Expected<KernelLaunch> planDequantize(const KernelSpec &spec,
                                            const GeneratedSource &source,
                                            const DequantizeCall &call);
llvm::Expected<KernelLaunch> planAppend(const KernelSpec &spec,
                                        const GeneratedSource &source,
                                        const AppendCall &call);
/// The attention kernel and its combine kernel, in launch order.
llvm::Expected<std::vector<KernelLaunch>>
planAttention(const KernelSpec &spec, const GeneratedSource &source,
              const AttentionCall &call);

/// The body is split so that the attention kernel launches about this many
/// blocks per SM. Measured on an H200 with the CUDA-core kernels
/// (bench/results/gpu-h200-split-sweep.md: 4 beat 2 in all 50 cases, 1.31x
/// geomean; 8 leaves a partial second round of resident blocks) and again
/// with the tensor-core ones (gpu-h200-split-sweep-tensor-cores.md: no
/// other count beats 4 on the geometric mean).
inline constexpr int64_t kAttentionBlocksPerSm = 4;

/// Splits of the body the attention launch will use.
int attentionBodySplits(const KernelSpec &spec, const GeneratedSource &source,
                        const AttentionCall &call);
/// Bytes of workspace attention needs for `call`.
size_t attentionWorkspaceBytes(const KernelSpec &spec,
                               const GeneratedSource &source,
                               const AttentionCall &call);

} // namespace kvq

#endif // KVQ_RUNTIME_LAUNCH_H
