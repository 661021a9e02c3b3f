//===- DiskCache.cpp - compiled kernels across processes ------------------===//

#include "kvq/Cache/DiskCache.h"

#include "kvq/Cache/Bundle.h"
#include "kvq/Cache/CacheKey.h"
#include "kvq/Support/FileIO.h"

#include "llvm/Support/FileSystem.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace kvq::cache;

char CacheError::ID = 0;

/// The cache directory, opened once; every access is relative to it.
struct DiskCache::Handle {
  int fd = -1;
  ~Handle() {
    if (fd >= 0)
      ::close(fd);
  }
};

namespace {

constexpr const char *kSuffix = ".kvqe";
constexpr const char *kTempPrefix = ".tmp.";

llvm::Error cacheError(const std::string &message) {
  return llvm::make_error<CacheError>(message);
}

bool isKey(const std::string &key) {
  return key.size() == 64 &&
         key.find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::string entryName(const std::string &key) { return key + kSuffix; }

/// The key of an entry file name, or "".
std::string keyOf(const std::string &name) {
  size_t suffix = std::strlen(kSuffix);
  if (name.size() != 64 + suffix || name.compare(64, suffix, kSuffix) != 0)
    return "";
  std::string key = name.substr(0, 64);
  return isKey(key) ? key : "";
}

/// Names in the directory `fd` (without . and ..).
std::vector<std::string> names(int fd) {
  std::vector<std::string> out;
  int copy = ::dup(fd);
  if (copy < 0)
    return out;
  DIR *dir = ::fdopendir(copy);
  if (!dir) {
    ::close(copy);
    return out;
  }
  ::rewinddir(dir);
  while (struct dirent *e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name != "." && name != "..")
      out.push_back(name);
  }
  ::closedir(dir); // closes `copy`
  return out;
}

/// Reads the regular file `name` in `fd` whole, without following a link.
/// Sets `why` on failure; `isLink` when the name is a symlink (or another
/// non-regular file).
/// `touch` marks the entry used (its mtime orders eviction).
std::optional<std::string> readAt(int fd, const std::string &name,
                                  std::string &why, bool &notRegular,
                                  bool touch) {
  notRegular = false;
  int file =
      ::openat(fd, name.c_str(),
               O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (file < 0) {
    if (errno == ELOOP || errno == ENXIO) {
      notRegular = true;
      why = "is a symlink or a special file";
    } else if (errno != ENOENT) {
      why = std::string("cannot be opened: ") + std::strerror(errno);
    }
    return std::nullopt;
  }
  struct stat st;
  if (::fstat(file, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(file);
    notRegular = true;
    why = "is not a regular file";
    return std::nullopt;
  }
  if (uint64_t(st.st_size) > kMaxEntryBytes) {
    ::close(file);
    why = "has " + std::to_string(st.st_size) + " bytes, more than the " +
          std::to_string(kMaxEntryBytes) + " an entry may have";
    return std::nullopt;
  }
  std::string bytes(size_t(st.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(file, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      why = n < 0 ? std::string("cannot be read: ") + std::strerror(errno)
                  : "was truncated while being read";
      ::close(file);
      return std::nullopt;
    }
    done += size_t(n);
  }
  if (touch)
    ::futimens(file, nullptr);
  ::close(file);
  return bytes;
}

/// Writes `bytes` to a new file `name` in `fd` (0600, never through a link).
/// On any failure the partial file is removed.
llvm::Error writeAt(int fd, const std::string &dir, const std::string &name,
                    const std::string &bytes) {
  int file =
      ::openat(fd, name.c_str(),
               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (file < 0)
    return cacheError("cannot write to cache directory " + dir + ": " +
                      std::strerror(errno));
  int error = kvq::writeAll(file, bytes);
  if (::close(file) != 0 && !error)
    error = errno;
  if (error) {
    ::unlinkat(fd, name.c_str(), 0);
    return cacheError("cannot write to cache directory " + dir + ": " +
                      std::strerror(error));
  }
  return llvm::Error::success();
}

/// Removes `name` from `fd` without following it: a file or link is
/// unlinked; a folder (of an older cache format) is emptied of its files and
/// removed, never descending through a link.
void removeAt(int fd, const std::string &name) {
  if (::unlinkat(fd, name.c_str(), 0) == 0 || errno != EISDIR)
    return;
  int sub = ::openat(fd, name.c_str(),
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (sub < 0)
    return;
  for (const std::string &inner : names(sub))
    ::unlinkat(sub, inner.c_str(), 0); // files only: no recursion
  ::close(sub);
  ::unlinkat(fd, name.c_str(), AT_REMOVEDIR);
}

struct FileInfo {
  bool regular = false, directory = false;
  uint64_t bytes = 0;
  int64_t modified = 0;      ///< seconds
  int64_t modifiedNanos = 0; ///< for ordering uses within one second
};

FileInfo infoAt(int fd, const std::string &name) {
  FileInfo info;
  struct stat st;
  if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return info;
  info.regular = S_ISREG(st.st_mode);
  info.directory = S_ISDIR(st.st_mode);
  info.bytes = uint64_t(st.st_size);
  info.modified = int64_t(st.st_mtime);
  info.modifiedNanos =
      int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return info;
}

/// The entries of the directory `fd`: regular files named `<key>.kvqe`.
std::vector<std::pair<std::string, FileInfo>> entryFiles(int fd) {
  std::vector<std::pair<std::string, FileInfo>> entries;
  for (const std::string &name : names(fd)) {
    std::string key = keyOf(name);
    FileInfo file = infoAt(fd, name);
    if (!key.empty() && file.regular)
      entries.emplace_back(key, file);
  }
  return entries;
}

} // namespace

std::string kvq::cache::defaultCacheDir() {
  if (const char *dir = std::getenv("KVQ_CACHE_DIR"); dir && *dir)
    return dir;
  if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return std::string(xdg) + "/kvq";
  if (const char *home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.cache/kvq";
  return "/tmp/kvq-cache-" + std::to_string(getuid());
}

llvm::Expected<DiskCache> DiskCache::open(const std::string &dir,
                                          uint64_t maxBytes) {
  if (dir.empty())
    return cacheError("the cache directory is an empty path");
  if (std::error_code ec = llvm::sys::fs::create_directories(
          dir, /*IgnoreExisting=*/true,
          llvm::sys::fs::perms(llvm::sys::fs::owner_all)))
    return cacheError("cannot create cache directory " + dir + ": " +
                      ec.message());
  auto handle = std::make_shared<Handle>();
  handle->fd =
      ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (handle->fd < 0)
    return cacheError("cache path " + dir + " is not a directory (or is a " +
                      "symlink): " + std::strerror(errno));
  // Checked on the descriptor every later access goes through.
  struct stat st;
  if (::fstat(handle->fd, &st) != 0 || !S_ISDIR(st.st_mode))
    return cacheError("cache path " + dir + " is not a directory");
  if (st.st_uid != getuid())
    return cacheError("cache directory " + dir +
                      " belongs to another user; refusing to load code "
                      "from it (set KVQ_CACHE_DIR)");
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    std::ostringstream os;
    os << "cache directory " << dir << " is writable by group or others (mode "
       << std::oct << (st.st_mode & 0777)
       << "); refusing to load code from it: chmod 700 it or set "
          "KVQ_CACHE_DIR";
    return cacheError(os.str());
  }
  return DiskCache(dir, maxBytes, std::move(handle));
}

std::optional<Entry> DiskCache::load(const std::string &key,
                                     std::string *problem) const {
  if (!isKey(key))
    return std::nullopt;
  std::string name = entryName(key);
  auto corrupt = [&](const std::string &why) -> std::optional<Entry> {
    if (problem)
      *problem = "cache entry " + key + " " + why;
    removeAt(handle->fd, name);
    return std::nullopt;
  };
  std::string why;
  bool notRegular = false;
  std::optional<std::string> bytes =
      readAt(handle->fd, name, why, notRegular, /*touch=*/true);
  if (!bytes) {
    if (notRegular)
      return corrupt(why + "; removed it (not followed)");
    if (!why.empty())
      return corrupt(why);
    return std::nullopt; // no such entry
  }
  llvm::Expected<Bundle> parsed =
      Bundle::parse(std::move(*bytes), dir + "/" + name);
  if (!parsed)
    return corrupt("is corrupt (" + llvm::toString(parsed.takeError()) + ")");
  if (parsed->entries().size() != 1 || parsed->entries()[0].key != key)
    return corrupt("holds another key's kernels");
  return parsed->entries()[0];
}

llvm::Error DiskCache::store(const Entry &entry) const {
  if (!isKey(entry.key))
    return cacheError("bad cache key '" + entry.key + "'");
  llvm::Expected<std::string> bytes = Bundle::serialize({entry});
  if (!bytes)
    return cacheError(llvm::toString(bytes.takeError()));
  static std::atomic<unsigned> counter{0};
  std::string temp = kTempPrefix + entry.key.substr(0, 16) + "." +
                     std::to_string(getpid()) + "." + std::to_string(counter++);
  if (llvm::Error e = writeAt(handle->fd, dir, temp, *bytes))
    return e;
  std::string name = entryName(entry.key);
  if (::renameat(handle->fd, temp.c_str(), handle->fd, name.c_str()) != 0) {
    int error = errno;
    ::unlinkat(handle->fd, temp.c_str(), 0);
    return cacheError("cannot publish cache entry " + entry.key + " in " + dir +
                      ": " + std::strerror(error));
  }
  prune(maxBytes);
  return llvm::Error::success();
}

std::vector<EntrySummary> DiskCache::list() const {
  std::vector<EntrySummary> entries;
  for (const auto &[key, file] : entryFiles(handle->fd)) {
    EntrySummary summary;
    summary.key = key;
    summary.bytes = file.bytes;
    summary.lastUsed = file.modified;
    // The info shown is that of a verified entry only.
    std::string why;
    bool notRegular = false;
    if (std::optional<std::string> bytes = readAt(
            handle->fd, entryName(key), why, notRegular, /*touch=*/false)) {
      if (llvm::Expected<Bundle> parsed = Bundle::parse(std::move(*bytes), "");
          parsed && parsed->entries().size() == 1)
        summary.info = parsed->entries()[0].info;
      else if (!parsed)
        llvm::consumeError(parsed.takeError());
    }
    entries.push_back(std::move(summary));
  }
  std::sort(entries.begin(), entries.end(),
            [](const EntrySummary &a, const EntrySummary &b) {
              return a.key < b.key;
            });
  return entries;
}

VerifyReport DiskCache::verify() const {
  VerifyReport report;
  int64_t now = std::time(nullptr);
  for (const std::string &name : names(handle->fd)) {
    std::string key = keyOf(name);
    FileInfo file = infoAt(handle->fd, name);
    if (!key.empty() && file.regular) {
      std::string problem;
      if (load(key, &problem))
        ++report.intact;
      else if (!problem.empty())
        report.corrupt.push_back(key);
      continue;
    }
    // Not an entry: a link or folder under an entry's name, a folder of the
    // older one-folder-per-key format, or a temporary file a crashed writer
    // left (an hour old: a live writer's is younger).
    bool stray =
        !key.empty() || isKey(name) ||
        (name.rfind(kTempPrefix, 0) == 0 && now - file.modified > 3600);
    if (stray) {
      removeAt(handle->fd, name);
      report.removedStrays.push_back(name);
    }
  }
  return report;
}

size_t DiskCache::prune(uint64_t bound) const {
  std::vector<EntrySummary> entries;
  uint64_t total = 0;
  for (const auto &[key, file] : entryFiles(handle->fd)) {
    EntrySummary e;
    e.key = key;
    e.bytes = file.bytes;
    e.lastUsed = file.modifiedNanos;
    total += e.bytes;
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(),
            [](const EntrySummary &a, const EntrySummary &b) {
              return a.lastUsed < b.lastUsed;
            });
  size_t removed = 0;
  for (const EntrySummary &e : entries) {
    if (total <= bound)
      break;
    remove(e.key);
    total -= e.bytes;
    ++removed;
  }
  return removed;
}

void DiskCache::remove(const std::string &key) const {
  if (isKey(key))
    ::unlinkat(handle->fd, entryName(key).c_str(), 0); // a link itself
}

void DiskCache::clear() const {
  for (const std::string &name : names(handle->fd))
    if (!keyOf(name).empty() || isKey(name) || name.rfind(kTempPrefix, 0) == 0)
      removeAt(handle->fd, name);
}
