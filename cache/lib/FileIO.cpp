//===- FileIO.cpp - writing files without unchecked errors ----------------===//

#include "kvq/Support/FileIO.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

int kvq::writeAll(int fd, const std::string &bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n < 0 ? errno : EIO;
    done += size_t(n);
  }
  return 0;
}

llvm::Error kvq::writeWholeFile(const std::string &path,
                                const std::string &bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return llvm::createStringError(
        std::error_code(errno, std::generic_category()),
        "cannot write " + path + ": " + std::strerror(errno));
  int error = writeAll(fd, bytes);
  if (::close(fd) != 0 && !error)
    error = errno;
  if (!error)
    return llvm::Error::success();
  ::unlink(path.c_str());
  return llvm::createStringError(
      std::error_code(error, std::generic_category()),
      "cannot write " + path + ": " + std::strerror(error));
}
