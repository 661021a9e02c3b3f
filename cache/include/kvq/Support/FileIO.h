//===- FileIO.h - writing files without unchecked errors --------*- C++ -*-===//
//
// llvm::raw_fd_ostream aborts the process ("IO failure on output stream")
// when it is destroyed with an unchecked write error, as on a full disk.
// kvq writes every file through this one function instead: the error comes
// back (naming the path and errno's text) and a partial file is removed.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_SUPPORT_FILEIO_H
#define KVQ_SUPPORT_FILEIO_H

#include "llvm/Support/Error.h"

#include <string>

namespace kvq {

/// Writes all of `bytes` to the open descriptor `fd`, retrying short writes
/// and EINTR. Returns 0, or the errno that stopped it.
int writeAll(int fd, const std::string &bytes);

/// Creates or truncates `path` and writes `bytes` to it.
llvm::Error writeWholeFile(const std::string &path, const std::string &bytes);

} // namespace kvq

#endif // KVQ_SUPPORT_FILEIO_H
