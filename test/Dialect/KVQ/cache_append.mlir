// RUN: kvq-opt %s | kvq-opt | FileCheck %s
// RUN: kvq-opt %s --mlir-print-op-generic | kvq-opt | FileCheck %s

// CHECK-LABEL: func.func @kivi2_step
// CHECK: kvq.cache_append %{{.*}}, %{{.*}} lengths(%{{.*}}) pages(%{{.*}})
// CHECK-SAME: keys scheme <bits = 2, group = 32, axis = channel>
// CHECK-SAME: values scheme <bits = 2, group = 32, axis = token>
func.func @kivi2_step(%k: tensor<?x8x1x128xf16>, %v: tensor<?x8x1x128xf16>,
                      %lens: tensor<?x3xi32>, %table: tensor<?x?xi32>) {
  kvq.cache_append %k, %v lengths(%lens) pages(%table)
      keys scheme <bits = 2, group = 32, axis = channel>
      values scheme <bits = 2, group = 32, axis = token>
      : tensor<?x8x1x128xf16>, tensor<?x8x1x128xf16>, tensor<?x3xi32>, tensor<?x?xi32>
  return
}

// The op writes the cache: the canonicalizer keeps it though it has no
// results.
// RUN: kvq-opt %s --canonicalize | FileCheck %s --check-prefix=KEPT
// KEPT: kvq.cache_append
