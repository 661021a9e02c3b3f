// RUN: kvq-opt %s | kvq-opt | FileCheck %s
// RUN: kvq-opt %s --mlir-print-op-generic | kvq-opt | FileCheck %s

// KIVI-2: keys per channel, values per token, both 2-bit, group 32.
// CHECK-LABEL: func.func @kivi2
// CHECK: kvq.quantized_attention %{{.*}}, keys(%{{.*}}, %{{.*}}, %{{.*}}) scheme <bits = 2, group = 32, axis = channel>,
// CHECK-SAME: values(%{{.*}}, %{{.*}}, %{{.*}}) scheme <bits = 2, group = 32, axis = token>
// CHECK-SAME: sink(%{{.*}}, %{{.*}}) residual(%{{.*}}, %{{.*}}) lengths(%{{.*}}) scale 0.0883883461
func.func @kivi2(%q: tensor<1x32x128xf16>,
    %kw: tensor<1x8x16x128xi32>, %ks: tensor<1x8x8x128xf16>, %kz: tensor<1x8x8x128xf16>,
    %vw: tensor<1x8x256x8xi32>, %vs: tensor<1x8x256x4xf16>, %vz: tensor<1x8x256x4xf16>,
    %sk: tensor<1x8x4x128xf16>, %sv: tensor<1x8x4x128xf16>,
    %rk: tensor<1x8x128x128xf16>, %rv: tensor<1x8x128x128xf16>,
    %lens: tensor<1x3xi32>) -> tensor<1x32x128xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 2, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
      sink(%sk, %sv) residual(%rk, %rv) lengths(%lens) scale 0.0883883461
      : (tensor<1x32x128xf16>, tensor<1x8x16x128xi32>, tensor<1x8x8x128xf16>,
         tensor<1x8x8x128xf16>, tensor<1x8x256x8xi32>, tensor<1x8x256x4xf16>,
         tensor<1x8x256x4xf16>, tensor<1x8x4x128xf16>, tensor<1x8x4x128xf16>,
         tensor<1x8x128x128xf16>, tensor<1x8x128x128xf16>, tensor<1x3xi32>)
      -> tensor<1x32x128xf16>
  return %o : tensor<1x32x128xf16>
}

// Symmetric 8-bit keys (no zero points) with asymmetric 4-bit values.
// CHECK-LABEL: func.func @mixed_modes
// CHECK: keys(%{{[^,]*}}, %{{[^,)]*}}) scheme <bits = 8, group = 64, axis = token, mode = symmetric>,
// CHECK-SAME: values(%{{.*}}, %{{.*}}, %{{.*}}) scheme <bits = 4, group = head_dim, axis = token>
// CHECK-SAME: lengths(
func.func @mixed_modes(%q: tensor<2x4x64xbf16>,
    %kw: tensor<2x4x?x16xi32>, %ks: tensor<2x4x?x1xf16>,
    %vw: tensor<2x4x?x8xi32>, %vs: tensor<2x4x?x1xf16>, %vz: tensor<2x4x?x1xf16>,
    %lens: tensor<2x3xi32>) -> tensor<2x4x64xbf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 8, group = 64, axis = token, mode = symmetric>,
      values(%vw, %vs, %vz) scheme <bits = 4, group = head_dim, axis = token>
      lengths(%lens) scale 0.125
      : (tensor<2x4x64xbf16>, tensor<2x4x?x16xi32>, tensor<2x4x?x1xf16>,
         tensor<2x4x?x8xi32>, tensor<2x4x?x1xf16>, tensor<2x4x?x1xf16>,
         tensor<2x3xi32>) -> tensor<2x4x64xbf16>
  return %o : tensor<2x4x64xbf16>
}

// Chunked: five query rows over two sequences' sink, residual and block
// table rows (a runtime table maps rows to sequences).
// CHECK-LABEL: func.func @chunked_rows
// CHECK: lengths(%{{.*}}) pages(%{{.*}}, 64) chunked scale 1.250000e-01
func.func @chunked_rows(%q: tensor<5x4x64xf16>,
    %kw: tensor<?x2x4x64xi32>, %ks: tensor<?x2x2x64xf16>, %kz: tensor<?x2x2x64xf16>,
    %vw: tensor<?x2x64x4xi32>, %vs: tensor<?x2x64x2xf16>, %vz: tensor<?x2x64x2xf16>,
    %sk: tensor<2x2x4x64xf16>, %sv: tensor<2x2x4x64xf16>,
    %rk: tensor<2x2x96x64xf16>, %rv: tensor<2x2x96x64xf16>,
    %lens: tensor<5x3xi32>, %table: tensor<2x?xi32>) -> tensor<5x4x64xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 2, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
      sink(%sk, %sv) residual(%rk, %rv) lengths(%lens) pages(%table, 64)
      chunked scale 0.125
      : (tensor<5x4x64xf16>, tensor<?x2x4x64xi32>, tensor<?x2x2x64xf16>,
         tensor<?x2x2x64xf16>, tensor<?x2x64x4xi32>, tensor<?x2x64x2xf16>,
         tensor<?x2x64x2xf16>, tensor<2x2x4x64xf16>, tensor<2x2x4x64xf16>,
         tensor<2x2x96x64xf16>, tensor<2x2x96x64xf16>, tensor<5x3xi32>,
         tensor<2x?xi32>) -> tensor<5x4x64xf16>
  return %o : tensor<5x4x64xf16>
}

// Token-major pages (vLLM's NHD layout) of FP8 keys and values with given
// per-tensor scales: `nhd` after the pages.
// CHECK-LABEL: func.func @fp8_token_major_pages
// CHECK: lengths(%{{.*}}) pages(%{{.*}}, 16) nhd scale 1.250000e-01
func.func @fp8_token_major_pages(%q: tensor<2x4x64xf16>,
    %kw: tensor<?x2x16x16xi32>, %ks: tensor<1x1x1x1xf32>,
    %vw: tensor<?x2x16x16xi32>, %vs: tensor<1x1x1x1xf32>,
    %lens: tensor<2x3xi32>, %table: tensor<2x?xi32>) -> tensor<2x4x64xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e4m3, static = tensor>,
      values(%vw, %vs) scheme <bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e4m3, static = tensor>
      lengths(%lens) pages(%table, 16) nhd scale 0.125
      : (tensor<2x4x64xf16>, tensor<?x2x16x16xi32>, tensor<1x1x1x1xf32>,
         tensor<?x2x16x16xi32>, tensor<1x1x1x1xf32>, tensor<2x3xi32>,
         tensor<2x?xi32>) -> tensor<2x4x64xf16>
  return %o : tensor<2x4x64xf16>
}
