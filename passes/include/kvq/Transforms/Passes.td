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

def KVQPlan : Pass<"kvq-plan"> {
  let summary = "Choose the launch configuration of each kvq kernel";
  let description = [{
    Records, as a `plan` dictionary on every `kvq.quantize`,
    `kvq.dequantize` and `kvq.quantized_attention`, how its kernel will run
    on the target arch: threads per block, tokens per attention tile (sized
    so the fp32 K/V tiles, queries and scores fit the shared-memory budget),
    the smallest split of the token range and the arch's SM count (the
    runtime picks the split count at launch from these and the sequence
    lengths). The plan is a typed `#kvq.plan` attribute (KVQAttrs.td); the
    lowering reads only it, so a human can see the plan in the IR and
    override any field by writing it: fields already present are kept and
    verified, missing ones are filled in.

    ```mlir
    %o = kvq.quantized_attention ... {plan = #kvq.plan<arch = "sm_90",
        threads = 128, halfVector = 8, tileTokens = 32, minTokensPerSplit = 128,
        smCount = 132, keyVectorWords = 4, valueVectorWords = 4,
        scoresPerThread = 2, sharedBytes = 35888>} : ...
    ```
  }];
  let options = [
    Option<"arch", "arch", "std::string", /*default=*/"\"sm_90\"",
           "Target architecture, sm_75 to sm_121">,
  ];
  let dependentDialects = ["::mlir::kvq::KVQDialect"];
}

#endif // KVQ_TRANSFORMS_PASSES_TD
