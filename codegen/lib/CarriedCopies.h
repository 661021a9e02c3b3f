//===- CarriedCopies.h - read loop-carried variables in place --*- C++ -*-===//
//
// MLIR lowers a loop-carried value (scf.for iter_args, scf.if results) to a
// C variable, assigned at the end of each iteration, and reads it through a
// copy: `float v11 = v9;` at the top of every iteration and
// `float v15 = v9;` after the loop. dropCarriedCopies removes each copy
// whose variable is not assigned while the copy is in use, and uses the
// variable itself: `fmaxf(v9, ...)`. ptxas sees through the copies either
// way (the SASS is the same); a reader no longer has to.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CODEGEN_CARRIEDCOPIES_H
#define KVQ_CODEGEN_CARRIEDCOPIES_H

#include <string>

namespace kvq {

/// The emitted text of one function with its safe variable copies removed.
std::string dropCarriedCopies(const std::string &body);

} // namespace kvq

#endif // KVQ_CODEGEN_CARRIEDCOPIES_H
