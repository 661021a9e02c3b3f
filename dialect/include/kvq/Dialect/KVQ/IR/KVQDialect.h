//===- KVQDialect.h - kvq dialect -------------------------------*- C++ -*-===//

#ifndef KVQ_DIALECT_KVQ_IR_KVQDIALECT_H
#define KVQ_DIALECT_KVQ_IR_KVQDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "kvq/Dialect/KVQ/IR/KVQOpsDialect.h.inc"

#endif // KVQ_DIALECT_KVQ_IR_KVQDIALECT_H
