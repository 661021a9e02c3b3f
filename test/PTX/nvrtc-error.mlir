// REQUIRES: nvrtc
// RUN: not kvq-translate --spec="quantize 4t64 d=128" --to=cubin --arch=compute_90 2>&1 | FileCheck %s
// RUN: not kvq-translate --spec="quantize 4t64 d=128" --to=ptx --arch=gfx90a 2>&1 | FileCheck %s --check-prefix=ARCH

// CHECK: a CUBIN needs a real arch (sm_XX), got 'compute_90'
// ARCH: kvq-plan: arch must be sm_75 .. sm_121, got 'gfx90a'
