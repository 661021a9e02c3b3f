//===- Passes.td - kvq -> kvq rewrites ---------------------*- tablegen -*-===//

#ifndef KVQ_TRANSFORMS_PASSES_TD
#define KVQ_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def KVQFuse : Pass<"kvq-fuse"> {
  let summary = "Fuse quantize+pack and dequantize+attention";
  let description = [{
    Three rewrites, each of which removes a tensor that would otherwise be
    written to memory and read back:

    - `kvq.pack` of the codes of a `kvq.quantize` becomes one `kvq.quantize`
      producing packed words (the quantize kernel packs in registers);
    - `kvq.dequantize` of `kvq.unpack` reads the packed words directly;
    - `kvq.attention` whose keys and values are both `kvq.dequantize` of
      packed words becomes `kvq.quantized_attention`, which unpacks in
      registers: the dequantized cache is never materialized.

    Before:
    ```mlir
    %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token>
        : tensor<1x8x64x128xf16> -> tensor<1x8x64x128xi8>, ...
    %w = kvq.pack %c scheme <bits = 4, group = 64, axis = token>
        : tensor<1x8x64x128xi8> -> tensor<1x8x64x16xi32>
    ```
    After:
    ```mlir
    %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token>
        : tensor<1x8x64x128xf16> -> tensor<1x8x64x16xi32>, ...
    ```
    `kvq.dequantize` of `kvq.quantize` is deliberately left alone: the round
    trip loses information and is not the identity.
  }];
  let dependentDialects = ["::mlir::kvq::KVQDialect"];
}

#endif // KVQ_TRANSFORMS_PASSES_TD
