//===- KVQDialect.td - kvq dialect definition --------------*- tablegen -*-===//
//
// The kvq dialect describes quantize, pack, dequantize and decode attention
// over a quantized KV cache. Numeric semantics: docs/architecture.md and
// ARCHITECTURE.md section 4.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_DIALECT_TD
#define KVQ_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"

def KVQ_Dialect : Dialect {
  let name = "kvq";
  let cppNamespace = "::mlir::kvq";
  let summary = "Quantized KV-cache kernels: quantize, pack, dequantize, attention";
  let description = [{
    The kvq dialect works on ranked tensors in the KV-cache layout
    `[batch, heads, tokens, head_dim]`. A `#kvq.scheme` attribute says how a
    tensor is quantized (bits, group size, axis, mode, scale dtype, pack
    order). Passes lower kvq ops to GPU-level IR and then to CUDA C++.
  }];
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    /// Registers the attributes; defined next to them in KVQAttrs.cpp, where
    /// their storage classes are complete.
    void registerAttributes();
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
}

/// Base class of every kvq attribute.
class KVQ_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<KVQ_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

/// Base class of every kvq operation.
class KVQ_Op<string mnemonic, list<Trait> traits = []>
    : Op<KVQ_Dialect, mnemonic, traits>;

#endif // KVQ_DIALECT_TD
