//===- DiskCache.cpp - compiled kernels across processes
//-------------------===//

#include "kvq/Cache/DiskCache.h"

#include "kvq/Cache/CacheKey.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>

using namespace kvq::cache;
namespace fs = llvm::sys::fs;

char CacheError::ID = 0;

namespace {

llvm::Error cacheError(const std::string &message) {
  return llvm::make_error<CacheError>(message);
}

bool isKey(const std::string &key) {
  return key.size() == 64 && std::all_of(key.begin(), key.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

/// Integrity, not identity (the key is SHA-256): XXH3 reads a 200 KB CUBIN
/// in microseconds, which keeps a disk hit well under a millisecond.
std::string contentChecksum(const std::string &bytes) {
  uint64_t hash = llvm::xxh3_64bits(llvm::ArrayRef<uint8_t>(
      reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size()));
  return llvm::utohexstr(hash, /*LowerCase=*/true, /*Width=*/16);
}

bool isFileName(const std::string &name) {
  return !name.empty() && name != "manifest.json" && name[0] != '.' &&
         name.find('/') == std::string::npos;
}

std::optional<std::string> readFile(const std::string &path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return std::nullopt;
  return (*buffer)->getBuffer().str();
}

llvm::Error writeFile(const std::string &path, const std::string &bytes) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec, fs::OF_None);
  if (ec)
    return cacheError("cannot write " + path + ": " + ec.message());
  os << bytes;
  os.close();
  if (os.has_error())
    return cacheError("cannot write " + path + ": " + os.error().message());
  return llvm::Error::success();
}

std::string manifestText(const Entry &entry) {
  llvm::json::Object info, files;
  for (const auto &[name, value] : entry.info)
    info[name] = value;
  for (const auto &[name, bytes] : entry.files)
    files[name] = llvm::json::Object{{"size", int64_t(bytes.size())},
                                     {"xxh3_64", contentChecksum(bytes)}};
  llvm::json::Object manifest{{"format", kFormatVersion},
                              {"key", entry.key},
                              {"info", std::move(info)},
                              {"files", std::move(files)}};
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", llvm::json::Value(std::move(manifest)));
  return text;
}

/// Parses a manifest; on failure says why.
std::optional<llvm::json::Object> parseManifest(const std::string &text,
                                                std::string &why) {
  llvm::Expected<llvm::json::Value> value = llvm::json::parse(text);
  if (!value) {
    why = "manifest is not JSON: " + llvm::toString(value.takeError());
    return std::nullopt;
  }
  llvm::json::Object *object = value->getAsObject();
  if (!object) {
    why = "manifest is not a JSON object";
    return std::nullopt;
  }
  if (object->getInteger("format") != kFormatVersion) {
    why = "manifest format is not " + std::to_string(kFormatVersion);
    return std::nullopt;
  }
  return std::move(*object);
}

uint64_t directoryBytes(const std::string &path) {
  uint64_t total = 0;
  std::error_code ec;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end;
       it.increment(ec)) {
    fs::file_status status;
    if (!fs::status(it->path(), status))
      total += status.getSize();
  }
  return total;
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
  if (std::error_code ec = fs::create_directories(dir, /*IgnoreExisting=*/true,
                                                  fs::perms(fs::owner_all)))
    return cacheError("cannot create cache directory " + dir + ": " +
                      ec.message());
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
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
  return DiskCache(dir, maxBytes);
}

std::optional<Entry> DiskCache::load(const std::string &key,
                                     std::string *problem) const {
  if (!isKey(key))
    return std::nullopt;
  std::string entryDir = dir + "/" + key;
  if (!fs::is_directory(entryDir))
    return std::nullopt;
  auto corrupt = [&](const std::string &why) -> std::optional<Entry> {
    if (problem)
      *problem = "cache entry " + key + ": " + why;
    remove(key);
    return std::nullopt;
  };
  std::string manifestPath = entryDir + "/manifest.json";
  std::optional<std::string> text = readFile(manifestPath);
  if (!text)
    return corrupt("no manifest (partial entry)");
  std::string why;
  std::optional<llvm::json::Object> manifest = parseManifest(*text, why);
  if (!manifest)
    return corrupt(why);
  if (manifest->getString("key") != key)
    return corrupt("manifest names another key");

  Entry entry;
  entry.key = key;
  if (const llvm::json::Object *info = manifest->getObject("info"))
    for (const auto &[name, value] : *info)
      if (auto s = value.getAsString())
        entry.info[name.str()] = s->str();
  const llvm::json::Object *files = manifest->getObject("files");
  if (!files)
    return corrupt("manifest lists no files");
  for (const auto &[name, description] : *files) {
    const llvm::json::Object *file = description.getAsObject();
    if (!file || !isFileName(name.str()))
      return corrupt("bad file entry '" + name.str() + "'");
    std::optional<std::string> bytes = readFile(entryDir + "/" + name.str());
    if (!bytes)
      return corrupt("file " + name.str() + " is missing");
    if (file->getInteger("size") != int64_t(bytes->size()))
      return corrupt("file " + name.str() + " has " +
                     std::to_string(bytes->size()) +
                     " bytes, the manifest says " +
                     std::to_string(file->getInteger("size").value_or(-1)));
    if (file->getString("xxh3_64") != contentChecksum(*bytes))
      return corrupt("file " + name.str() + " does not match its checksum");
    entry.files[name.str()] = std::move(*bytes);
  }
  ::utime(manifestPath.c_str(), nullptr); // last used, for eviction
  return entry;
}

llvm::Error DiskCache::store(const Entry &entry) const {
  if (!isKey(entry.key))
    return cacheError("bad cache key '" + entry.key + "'");
  for (const auto &[name, bytes] : entry.files)
    if (!isFileName(name))
      return cacheError("bad artefact name '" + name + "'");
  static std::atomic<unsigned> counter{0};
  std::string temp = dir + "/.tmp." + entry.key.substr(0, 16) + "." +
                     std::to_string(getpid()) + "." + std::to_string(counter++);
  if (std::error_code ec = fs::create_directory(temp, /*IgnoreExisting=*/false,
                                                fs::perms(fs::owner_all)))
    return cacheError("cannot write to cache directory " + dir + ": " +
                      ec.message());
  auto cleanup = [&]() { (void)fs::remove_directories(temp); };
  for (const auto &[name, bytes] : entry.files)
    if (llvm::Error e = writeFile(temp + "/" + name, bytes)) {
      cleanup();
      return e;
    }
  // The manifest last: its presence is what makes an entry complete.
  if (llvm::Error e = writeFile(temp + "/manifest.json", manifestText(entry))) {
    cleanup();
    return e;
  }
  std::string target = dir + "/" + entry.key;
  if (::rename(temp.c_str(), target.c_str()) != 0) {
    // Another writer published this key first; keep theirs if it is intact.
    std::string problem;
    if (load(entry.key, &problem)) {
      cleanup();
      return llvm::Error::success();
    }
    if (::rename(temp.c_str(), target.c_str()) != 0) {
      cleanup();
      return cacheError("cannot publish cache entry " + entry.key + " in " +
                        dir);
    }
  }
  prune(maxBytes);
  return llvm::Error::success();
}

std::vector<EntrySummary> DiskCache::list() const {
  std::vector<EntrySummary> entries;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::string name = llvm::sys::path::filename(it->path()).str();
    if (!isKey(name))
      continue;
    EntrySummary summary;
    summary.key = name;
    summary.bytes = directoryBytes(it->path());
    std::string manifestPath = it->path() + "/manifest.json";
    struct stat st;
    if (::stat(manifestPath.c_str(), &st) == 0)
      summary.lastUsed = st.st_mtime;
    if (std::optional<std::string> text = readFile(manifestPath)) {
      std::string why;
      if (auto manifest = parseManifest(*text, why))
        if (const llvm::json::Object *info = manifest->getObject("info"))
          for (const auto &[field, value] : *info)
            if (auto s = value.getAsString())
              summary.info[field.str()] = s->str();
    }
    entries.push_back(std::move(summary));
  }
  std::sort(entries.begin(), entries.end(),
            [](const EntrySummary &a, const EntrySummary &b) {
              return a.key < b.key;
            });
  return entries;
}

std::vector<std::string> DiskCache::verify() const {
  std::vector<std::string> corrupt;
  for (const EntrySummary &summary : list()) {
    std::string problem;
    if (!load(summary.key, &problem) && !problem.empty())
      corrupt.push_back(summary.key);
  }
  return corrupt;
}

size_t DiskCache::prune(uint64_t bound) const {
  std::vector<EntrySummary> entries = list();
  uint64_t total = 0;
  for (const EntrySummary &e : entries)
    total += e.bytes;
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
    (void)fs::remove_directories(dir + "/" + key);
}

void DiskCache::clear() const {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::string name = llvm::sys::path::filename(it->path()).str();
    if (isKey(name) || name.rfind(".tmp.", 0) == 0)
      (void)fs::remove_directories(it->path());
  }
}
