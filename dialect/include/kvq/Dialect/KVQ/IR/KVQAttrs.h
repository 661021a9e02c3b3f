//===- KVQAttrs.h - kvq enums and attributes --------------------*- C++ -*-===//

#ifndef KVQ_DIALECT_KVQ_IR_KVQATTRS_H
#define KVQ_DIALECT_KVQ_IR_KVQATTRS_H

#include "kvq/Dialect/KVQ/IR/LaunchPlan.h"

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"

#include "kvq/Dialect/KVQ/IR/KVQEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "kvq/Dialect/KVQ/IR/KVQAttrs.h.inc"

#endif // KVQ_DIALECT_KVQ_IR_KVQATTRS_H
