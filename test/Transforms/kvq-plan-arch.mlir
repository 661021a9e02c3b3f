// RUN: not kvq-opt %s --kvq-plan=arch=sm_52 2>&1 | FileCheck %s
// RUN: not kvq-opt %s --kvq-plan=arch=gfx90a 2>&1 | FileCheck %s --check-prefix=AMD

// CHECK: kvq-plan: arch must be sm_75 .. sm_121, got 'sm_52'
// AMD: kvq-plan: arch must be sm_75 .. sm_121, got 'gfx90a'
func.func @f() {
  return
}
