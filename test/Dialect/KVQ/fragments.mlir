// RUN: kvq-opt %s --split-input-file --verify-diagnostics | FileCheck %s

// The warp-level ops of the tensor-core kernel round-trip through their
// syntax.
// CHECK-LABEL: func.func @fragments
// CHECK: kvq.mma %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} f16 : vector<4xf32>
// CHECK: kvq.pack_pair %{{.*}}, %{{.*}} bf16
// CHECK: kvq.pack_pair_error %{{.*}}, %{{.*}}, %{{.*}} f16
// CHECK: kvq.transpose_pairs %{{.*}}
// CHECK: kvq.select_halves %{{.*}}, %{{.*}} high
// CHECK: kvq.dequantize_pair %{{.*}} scales(%{{.*}}, %{{.*}}) centre 0
// CHECK: kvq.dequantize_pair %{{.*}} centre 8
// CHECK: kvq.permute_bytes %{{.*}}, %{{.*}}, %{{.*}}
// CHECK: kvq.half_pair %{{.*}}, %{{.*}} : f16
// CHECK: kvq.multiply_pair %[[Q:.*]], %[[S:.*]]{{$}}
// CHECK: kvq.multiply_pair %[[Q]], %[[S]] error %{{.*}}
func.func @fragments(%a: i32, %b: i32, %c: vector<4xf32>, %x: f32, %y: f32, %lo: f16, %hi: f16) -> (vector<4xf32>, i32, i32, i32, i32, i32, i32, i32, i32, i32) {
  %d = kvq.mma %a, %a, %a, %a, %b, %b, %c f16 : vector<4xf32>
  %p = kvq.pack_pair %x, %y bf16
  %e = kvq.pack_pair_error %x, %y, %p f16
  %t = kvq.transpose_pairs %e
  %h = kvq.select_halves %a, %b high
  %v = kvq.dequantize_pair %h scales(%a, %b) centre 0
  %s = kvq.dequantize_pair %h centre 8
  %r = kvq.permute_bytes %a, %b, %h
  %w = kvq.half_pair %lo, %hi : f16
  %m = kvq.multiply_pair %a, %w
  %n = kvq.multiply_pair %a, %w error %m
  return %d, %p, %e, %t, %h, %v, %s, %r, %m, %n : vector<4xf32>, i32, i32, i32, i32, i32, i32, i32, i32, i32
}

// -----

func.func @half_pair_of_one_type(%lo: f16, %hi: bf16) -> i32 {
  // expected-error @+1 {{'kvq.half_pair' op failed to verify that all of {low, high} have same type}}
  %w = "kvq.half_pair"(%lo, %hi) : (f16, bf16) -> i32
  return %w : i32
}

// -----

func.func @zeros_without_scales(%a: i32, %z: i32) -> i32 {
  // expected-error @+1 {{'kvq.dequantize_pair' op zero points need scales}}
  %v = "kvq.dequantize_pair"(%a, %z) <{centre = 0 : i64, operandSegmentSizes = array<i32: 1, 0, 1>}> : (i32, i32) -> i32
  return %v : i32
}

// -----

func.func @mma_takes_f16_or_bf16(%a: i32, %c: vector<4xf32>) -> vector<4xf32> {
  // expected-error @+1 {{'kvq.mma' op attribute 'input_type' failed to satisfy constraint}}
  %d = kvq.mma %a, %a, %a, %a, %a, %a, %c f32 : vector<4xf32>
  return %d : vector<4xf32>
}
