//===- KernelSpec.h - what a user asks kvq to generate ----------*- C++ -*-===//
//
// A plain C++ description of one specialization (no MLIR types), and its
// canonical text: the identity of a kernel for naming, caching and logs.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CODEGEN_KERNELSPEC_H
#define KVQ_CODEGEN_KERNELSPEC_H

#include <optional>
#include <string>

namespace kvq {

/// How a KV tensor is quantized (ARCHITECTURE.md section 4).
struct QuantScheme {
  enum class Axis { Token, Channel };
  int bits = 4;
  int group = 64; ///< 0 means one group per head vector (head_dim).
  Axis axis = Axis::Token;
  bool symmetric = false;
  bool fp32Scales = false;
  bool interleaved = false;

  /// "4t64", "2c32", "8thd", + s (symmetric), i (interleaved), x (fp32).
  std::string tag() const;
  bool operator==(const QuantScheme &other) const;
};

enum class KernelKind { Quantize, Dequantize, Attention };
enum class HalfType { F16, BF16 };

struct KernelSpec {
  KernelKind kind = KernelKind::Attention;
  /// The scheme for quantize/dequantize; the key scheme for attention.
  QuantScheme key;
  /// The value scheme (attention only).
  QuantScheme value;
  int headDim = 128;
  /// Attention: query and kv heads; only their ratio shapes the kernel.
  int queryHeads = 32;
  int kvHeads = 32;
  HalfType dtype = HalfType::F16;
  /// Attention: fp16 sink and residual segments.
  bool sink = true;
  bool residual = true;

  /// A quantize or dequantize spec for one scheme.
  static KernelSpec forScheme(KernelKind kind, const QuantScheme &scheme,
                              int headDim, HalfType dtype);
  /// An attention spec.
  static KernelSpec forAttention(const QuantScheme &key,
                                 const QuantScheme &value, int headDim,
                                 int queryHeads, int kvHeads, HalfType dtype,
                                 bool sink, bool residual);

  /// A stable, human-readable identity, e.g.
  /// "attention k=2c32 v=2t32 d=128 gqa=4 f16 sink residual".
  std::string canonical() const;

  /// Checks the spec the way the dialect verifier would, before any IR is
  /// built; returns a message naming the bad value, or nothing.
  std::optional<std::string> validate() const;
};

/// Parses the canonical text back (`KernelSpec::canonical()`), also
/// accepting the words in any order after the kind and defaults for those
/// left out: "attention k=2c32 v=2t32 d=128 hq=32 hkv=8 f16 sink residual".
/// Returns an error message naming the bad word.
std::optional<std::string> parseKernelSpec(const std::string &text,
                                           KernelSpec &spec);

/// Parses the short scheme tag ("2c32", "4thds", ...) into `scheme`.
std::optional<std::string> parseSchemeTag(const std::string &tag,
                                          QuantScheme &scheme);

} // namespace kvq

#endif // KVQ_CODEGEN_KERNELSPEC_H
