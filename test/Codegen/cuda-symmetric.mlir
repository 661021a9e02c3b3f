// RUN: kvq-translate --spec="quantize 4t64s d=64" --to=cuda | FileCheck %s

// Symmetric 4-bit: q = clamp(rint(x / scale), -7, 7) + 8. Negative
// constants keep their sign (a regression the emulator caught: `(7.0f)`).
// CHECK: rintf(
// CHECK-NEXT: fmaxf({{.*}}, (-7.0f));
// CHECK-NEXT: fminf({{.*}}, 7.0f);
// CHECK: + 8.0f;
