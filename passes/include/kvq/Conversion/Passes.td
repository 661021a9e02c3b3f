//===- Passes.td - kvq lowerings ---------------------------*- tablegen -*-===//

#ifndef KVQ_CONVERSION_PASSES_TD
#define KVQ_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def KVQToGPU : Pass<"kvq-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Generate GPU kernels for fused, planned kvq ops";
  let description = [{
    Every `kvq.quantize` (producing packed words), `kvq.dequantize` (reading
    packed words) and `kvq.quantized_attention` becomes one `gpu.func` kernel
    (attention also gets a `_combine` kernel) in a `gpu.module
    @kvq_kernels`, written with `scf`, `arith`, `math`, 1-D `memref`s and
    `gpu` thread ids, barriers and shuffles. Argument lists follow
    `kvq/Conversion/KernelABI.h`; the kernel name encodes the
    specialization (`kvq_attn_k2c32_v2t32_d128_g4_f16_sr`). The functions
    that held the kvq ops are removed: launching kernels is the runtime's
    job. Ops must be fused (`--kvq-fuse`) and planned (`--kvq-plan`).
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::emitc::EmitCDialect",
    "::mlir::gpu::GPUDialect", "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
    "::mlir::vector::VectorDialect"];
}

def GPUToEmitC : Pass<"kvq-gpu-to-emitc", "::mlir::ModuleOp"> {
  let summary = "Lower kvq's GPU kernels to EmitC for CUDA C++";
  let description = [{
    Turns each `gpu.func` kernel into an `emitc.func` with the specifiers
    `extern "C" __global__`: 1-D memrefs become pointers, and every global or
    shared access becomes an access macro with a site id
    (`KVQ_LDG(site, ptr, i)`, `KVQ_STG(site, ptr, i, v)`, `KVQ_LDS`,
    `KVQ_STS`) that the device prelude expands to a plain access under nvrtc
    and to a traced one in the emulator; shared buffers become
    `KVQ_SHARED(type, name, count)`; thread ids, barriers and shuffles become
    CUDA builtins; f16/bf16 become `__half`/`__nv_bfloat16`. Arithmetic is
    lowered with C semantics (kvq's kernels never shift by 32 or compare
    NaNs where it matters), which keeps the emitted code free of the guards
    the generic arith lowering adds. Fails, naming the op, if anything is
    left unconverted.
  }];
  let dependentDialects = ["::mlir::emitc::EmitCDialect"];
}

#endif // KVQ_CONVERSION_PASSES_TD
