//===- Workload.h - a generated decode step on any backend ------*- C++ -*-===//
//
// Builds KV-cache-like data (Gaussian values with a few large outlier
// channels, as real keys have), quantizes keys and values with the
// runtime's own quantize kernels, and runs one attention call: what kvq-run
// and the backend-agreement tests execute on each backend.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_WORKLOAD_H
#define KVQ_RUNTIME_WORKLOAD_H

#include "kvq/Runtime/Runtime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvq {

struct AttentionWorkload {
  KernelSpec spec; ///< an attention spec
  int batch = 1;
  int tokens = 256; ///< quantized tokens per sequence (rounded to groups)
  int sinkTokens = 4, residualTokens = 32;
  /// A chunked spec's query rows per sequence (a chunk of consecutive
  /// tokens, each seeing one more than the one before); others take one.
  int queryTokens = 1;
  uint32_t seed = 1;
};

struct WorkloadResult {
  std::vector<float> output; ///< [query rows, q heads, head_dim]
  std::vector<uint32_t> keyWords, valueWords;
  /// Scales and zeros as stored (fp16 or fp32 bytes). Every output buffer
  /// starts as 0xFF bytes, so whatever a kernel fails to write differs from
  /// what the reference wrote (or also left alone).
  std::vector<uint8_t> keyScales, keyZeros, valueScales, valueZeros;
  std::vector<float> fp16Output; ///< attention on the unquantized data
  double prepareMillis = 0, quantizeMillis = 0, attentionMillis = 0;
  std::string origin; ///< compiled, disk or memory
};

/// Memory of `runtime`'s backend, released when this goes out of scope.
class DeviceBuffers {
public:
  explicit DeviceBuffers(Runtime &runtime) : runtime(runtime) {}
  DeviceBuffers(const DeviceBuffers &) = delete;
  DeviceBuffers &operator=(const DeviceBuffers &) = delete;
  ~DeviceBuffers();
  /// `bytes` of new memory, filled from `host` unless it is null.
  llvm::Expected<void *> make(const void *host, size_t bytes);

private:
  Runtime &runtime;
  std::vector<void *> owned;
};

/// `count` KV-cache-like values as half bits, deterministic in `seed` and
/// fast for billions of values (a counter-based hash, filled by all cores):
/// roughly Gaussian (a sum of four uniforms, unit variance), and with
/// `outliers` every 29th channel 12x larger, as real keys have outlier
/// channels. The one generator of test and bench data.
std::vector<uint16_t> kvLikeHalves(size_t count, int headDim, HalfType type,
                                   uint64_t seed, bool outliers);

/// Runs the workload on `runtime`'s backend.
llvm::Expected<WorkloadResult> runAttentionWorkload(Runtime &runtime,
                                                    const AttentionWorkload &w);

/// max |a - b| / max |b|; infinite if the sizes differ or only one side
/// has a NaN somewhere.
double normwiseError(const std::vector<float> &a, const std::vector<float> &b);

} // namespace kvq

#endif // KVQ_RUNTIME_WORKLOAD_H
