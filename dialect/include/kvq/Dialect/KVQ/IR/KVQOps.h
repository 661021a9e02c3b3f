//===- KVQOps.h - kvq operations --------------------------------*- C++ -*-===//

#ifndef KVQ_DIALECT_KVQ_IR_KVQOPS_H
#define KVQ_DIALECT_KVQ_IR_KVQOPS_H

#include "kvq/Dialect/KVQ/IR/KVQAttrs.h"
#include "kvq/Dialect/KVQ/IR/KVQDialect.h"

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "kvq/Dialect/KVQ/IR/KVQOps.h.inc"

namespace mlir::kvq {

/// The launch plan of an op that is lowered to kernels (quantize,
/// dequantize, attention, quantized_attention); null if it has none yet.
PlanAttr getLaunchPlan(Operation *op);
/// Sets it; `op` must be one of those ops.
void setLaunchPlan(Operation *op, PlanAttr plan);

/// Why kvq-plan put an attention op on the tensor or the CUDA cores (a
/// string attribute beside its plan; the kernel's header comment repeats it).
inline constexpr const char *kAttentionPathReasonAttr = "kvq.attention_path";

} // namespace mlir::kvq

#endif // KVQ_DIALECT_KVQ_IR_KVQOPS_H
