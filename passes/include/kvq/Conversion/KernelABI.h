//===- KernelABI.h - argument lists of the generated kernels ----*- C++ -*-===//
//
// The contract between the kernels KVQToGPU generates and the runtime that
// launches them. Pointers are device pointers to dense row-major tensors in
// the [batch, heads, tokens, head_dim] layout (KVQLayout.h gives the shapes
// of packed words and scales); `H` is the half type (__half or
// __nv_bfloat16), `S` the scale storage type. Optional arguments in [ ] are
// present only when the spec has them (zero points for asymmetric schemes,
// sink/residual segments).
//
// quantize   (const H* input, uint32_t* words, S* scales, [S* zeros],
//             int rows, int tokens, int in_tokens, int out_tokens,
//             int out_offset)
//   Quantizes tokens [0, tokens) of each of `rows` (= batch × heads) input
//   rows of `in_tokens` tokens into token positions [out_offset,
//   out_offset + tokens) of a store holding `out_tokens` tokens per row.
//   grid (ceil(work / threads)), block (threads).
//
// dequantize (const uint32_t* words, const S* scales, [const S* zeros],
//             H* output, int rows, int tokens, int in_tokens, int in_offset,
//             int out_tokens)
//   The inverse: token positions [in_offset, in_offset + tokens) of the
//   store into tokens [0, tokens) of an output of `out_tokens` per row.
//
// attention  (const H* q, float* partial_out, float* partial_max,
//             float* partial_sum, const uint32_t* key_words,
//             const S* key_scales, [const S* key_zeros],
//             const uint32_t* value_words, const S* value_scales,
//             [const S* value_zeros], [const H* sink_keys,
//             const H* sink_values], [const H* residual_keys,
//             const H* residual_values], const int* lengths, int kv_heads,
//             int body_capacity, int sink_capacity, int residual_capacity,
//             int tokens_per_split, float softmax_scale,
//             [int* block_table, int max_pages, int num_pages],
//             [int* row_sequences, int sequences, int rows])
//   grid (body_splits + 1, kv_heads, batch): split s < body_splits handles
//   quantized tokens [s·tokens_per_split, (s+1)·tokens_per_split); the last
//   split handles the fp16 sink and residual tokens. Partial results are
//   [batch, q_heads, splits, head_dim] (unnormalized) and [batch, q_heads,
//   splits] (running max and sum). Paged: the body is a pool of pages
//   found through block_table. Chunked: `batch` counts query rows (q,
//   lengths and partial results have a row each), and row b reads the
//   sink, residual and block table row of sequence row_sequences[b]
//   (clamped into [0, sequences)). A plan of queryRows R > 1 (tensor
//   cores) gives a block R consecutive rows: grid z is ceil(rows / R), and
//   the block reads each sequence among its rows once for all of them.
//
// combine    (const float* partial_out, const float* partial_max,
//             const float* partial_sum, H* out, int splits)
//   grid (q_heads, batch): merges the splits by log-sum-exp.
//
// append     (const H* keys, const H* values, int head_stride,
//             int token_stride, int* lengths, int* block_table,
//             int* free_pages, int* free_count, H* sink_keys,
//             H* sink_values, H* residual_keys, H* residual_values,
//             uint32_t* key_words, S* key_scales, [S* key_zeros],
//             uint32_t* value_words, S* value_scales, [S* value_zeros],
//             int batch, int kv_heads, int max_pages, int num_pages,
//             int page_tokens, int sink_capacity, int sink_tokens,
//             int residual_capacity, int residual_tokens, int flush_tokens)
//   One decode step of a paged cache (kvq.cache_append; the runtime's
//   AppendCall says it in full): every sequence b with lengths[b] = {sink,
//   quantized, residual} not all zero takes the token at b * token_stride
//   (+ h * head_stride for kv head h) into its sink or residual
//   ([batch, kv_heads, capacity, head_dim]); a residual reaching
//   residual_tokens + flush_tokens sends its oldest flush_tokens to the
//   page of quantized token `quantized` ([pages, kv_heads, page_tokens]
//   packed, as paged attention reads them), popped from free_pages
//   (count at *free_count) when block_table has none. grid (batch), block
//   (threads): a block per sequence.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CONVERSION_KERNELABI_H
#define KVQ_CONVERSION_KERNELABI_H

namespace mlir::kvq {

/// Names of the discardable attributes KVQToGPU puts on each gpu.func, read
/// by codegen (the header comment) and by the runtime (launch geometry).
namespace abi {
inline constexpr const char *kKernelKind = "kvq.kind"; // quantize, ...
inline constexpr const char *kThreads = "kvq.threads";
inline constexpr const char *kSpec = "kvq.spec";          // human-readable spec
inline constexpr const char *kPlan = "kvq.plan";          // its #kvq.plan
inline constexpr const char *kArgNames = "kvq.arg_names"; // C++ names
/// A NameLoc `kvq.name=head_row` on an op names its result (or, on a loop,
/// its variable) in the generated C++ (KernelBuilder::named).
inline constexpr const char *kSourceNamePrefix = "kvq.name=";
} // namespace abi

} // namespace mlir::kvq

#endif // KVQ_CONVERSION_KERNELABI_H
