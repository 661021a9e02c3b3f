// RUN: kvq-opt %s | kvq-opt | FileCheck %s
// RUN: kvq-opt %s --mlir-print-op-generic | kvq-opt | FileCheck %s

// GQA 4:1 with fp16 sink and residual segments.
// CHECK-LABEL: func.func @gqa_with_sink_and_residual
// CHECK: kvq.attention %{{.*}}, keys(%{{.*}}), values(%{{.*}}) sink(%{{.*}}, %{{.*}}) residual(%{{.*}}, %{{.*}}) lengths(%{{.*}}) scale 0.0883883461
// CHECK-SAME: -> tensor<2x32x128xf16>
func.func @gqa_with_sink_and_residual(%q: tensor<2x32x128xf16>,
    %k: tensor<2x8x256x128xf16>, %v: tensor<2x8x256x128xf16>,
    %sk: tensor<2x8x4x128xf16>, %sv: tensor<2x8x4x128xf16>,
    %rk: tensor<2x8x128x128xf16>, %rv: tensor<2x8x128x128xf16>,
    %lens: tensor<2x3xi32>) -> tensor<2x32x128xf16> {
  %o = kvq.attention %q, keys(%k), values(%v) sink(%sk, %sv) residual(%rk, %rv)
      lengths(%lens) scale 0.0883883461
      : (tensor<2x32x128xf16>, tensor<2x8x256x128xf16>, tensor<2x8x256x128xf16>,
         tensor<2x8x4x128xf16>, tensor<2x8x4x128xf16>, tensor<2x8x128x128xf16>,
         tensor<2x8x128x128xf16>, tensor<2x3xi32>) -> tensor<2x32x128xf16>
  return %o : tensor<2x32x128xf16>
}

// MQA, no optional segments, dynamic batch and tokens.
// CHECK-LABEL: func.func @mqa_plain
// CHECK: kvq.attention %{{.*}}, keys(%{{.*}}), values(%{{.*}}) lengths(%{{.*}}) scale 1.250000e-01 :
func.func @mqa_plain(%q: tensor<?x8x64xbf16>, %k: tensor<?x1x?x64xbf16>,
    %v: tensor<?x1x?x64xbf16>, %lens: tensor<?x3xi32>) -> tensor<?x8x64xbf16> {
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%lens) scale 0.125
      : (tensor<?x8x64xbf16>, tensor<?x1x?x64xbf16>, tensor<?x1x?x64xbf16>,
         tensor<?x3xi32>) -> tensor<?x8x64xbf16>
  return %o : tensor<?x8x64xbf16>
}

// Only a residual segment (no sinks).
// CHECK-LABEL: func.func @residual_only
// CHECK: kvq.attention %{{.*}} keys(%{{.*}}), values(%{{.*}}) residual(%{{.*}}, %{{.*}}) lengths
// CHECK-NOT: sink
func.func @residual_only(%q: tensor<1x4x64xf16>, %k: tensor<1x4x32x64xf16>,
    %v: tensor<1x4x32x64xf16>, %rk: tensor<1x4x16x64xf16>,
    %rv: tensor<1x4x16x64xf16>, %lens: tensor<1x3xi32>) -> tensor<1x4x64xf16> {
  %o = kvq.attention %q, keys(%k), values(%v) residual(%rk, %rv) lengths(%lens) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x32x64xf16>, tensor<1x4x32x64xf16>,
         tensor<1x4x16x64xf16>, tensor<1x4x16x64xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return %o : tensor<1x4x64xf16>
}
