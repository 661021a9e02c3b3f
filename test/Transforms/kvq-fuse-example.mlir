// The checked-in example that scripts/demo.sh shows stays valid and fuses
// into the two kernels kvq generates.
// RUN: kvq-opt %S/../../examples/kivi2_decode.mlir --kvq-fuse --canonicalize | FileCheck %s

// CHECK-LABEL: func.func @decode_step
// CHECK-NOT: kvq.unpack
// CHECK-NOT: kvq.dequantize
// CHECK: kvq.quantized_attention {{.*}} scheme <bits = 2, group = 32, axis = channel>, {{.*}} scheme <bits = 2, group = 32, axis = token> sink
// CHECK-LABEL: func.func @flush_residual_keys
// CHECK: kvq.quantize {{.*}} -> tensor<1x32x8x128xi32>
// CHECK-NOT: kvq.pack
