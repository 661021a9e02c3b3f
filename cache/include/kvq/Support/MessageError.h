//===- MessageError.h - typed errors that carry a message -------*- C++ -*-===//
//
// The base of kvq's typed errors (CacheError, LaunchError, NoDriverError):
// a distinct llvm::Error type per kind of failure, so callers can tell them
// apart (handleErrors), each carrying a message that names the bad value.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_SUPPORT_MESSAGEERROR_H
#define KVQ_SUPPORT_MESSAGEERROR_H

#include "llvm/Support/Error.h"

#include <string>

namespace kvq {

template <typename Derived>
class MessageError : public llvm::ErrorInfo<Derived> {
public:
  explicit MessageError(std::string description)
      : description(std::move(description)) {}
  void log(llvm::raw_ostream &os) const override { os << description; }
  std::error_code convertToErrorCode() const override {
    return llvm::inconvertibleErrorCode();
  }

private:
  std::string description;
};

} // namespace kvq

#endif // KVQ_SUPPORT_MESSAGEERROR_H
