//===- Registration.h - what every kvq tool registers -----------*- C++ -*-===//
//
// One place that says which dialects and passes the kvq tools know, so that
// kvq-opt, kvq-translate and the runtime agree (Triton's
// RegisterTritonDialects.h plays the same role).
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_REGISTRATION_REGISTRATION_H
#define KVQ_REGISTRATION_REGISTRATION_H

namespace mlir {
class DialectRegistry;

namespace kvq {

/// Registers the kvq dialect and the upstream dialects the kvq pipeline
/// parses and produces. Deliberately not registerAllDialects.
void registerKVQDialects(DialectRegistry &registry);

/// Registers every kvq pass and pipeline with the global pass registry.
void registerKVQPasses();

} // namespace kvq
} // namespace mlir

#endif // KVQ_REGISTRATION_REGISTRATION_H
