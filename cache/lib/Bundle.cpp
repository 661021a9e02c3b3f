//===- Bundle.cpp - many cache entries in one verified file ---------------===//

#include "kvq/Cache/Bundle.h"

#include "kvq/Cache/CacheKey.h"
#include "kvq/Support/FileIO.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <unistd.h>

using namespace kvq::cache;

char BundleError::ID = 0;

namespace {

constexpr const char *kMagic = "kvq-bundle ";
/// Far above any real bundle (every preset of several models for two archs
/// is a few tens of MB); a manifest or file claiming more is refused before
/// anything is allocated for it.
constexpr uint64_t kMaxManifestBytes = 64ull << 20;
constexpr int kMaxManifestDepth = 8;

llvm::Error bad(const std::string &bundle, const std::string &why) {
  return llvm::make_error<BundleError>("kernel bundle " + bundle + ": " + why);
}

bool isHex(const std::string &text, size_t length) {
  return text.size() == length &&
         text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

bool isPlainFileName(const std::string &name) {
  return !name.empty() && name.size() <= 64 && name != "manifest.json" &&
         name[0] != '.' &&
         name.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
             std::string::npos;
}

/// A non-negative integer field that fits `limit`.
std::optional<uint64_t> sizeField(const llvm::json::Object &o,
                                  llvm::StringRef name, uint64_t limit) {
  std::optional<int64_t> v = o.getInteger(name);
  if (!v || *v < 0 || uint64_t(*v) > limit)
    return std::nullopt;
  return uint64_t(*v);
}

} // namespace

int kvq::cache::jsonNestingDepth(const std::string &text) {
  int depth = 0, deepest = 0;
  bool inString = false, escaped = false;
  for (char c : text) {
    if (inString) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        inString = false;
      continue;
    }
    if (c == '"')
      inString = true;
    else if (c == '[' || c == '{')
      deepest = std::max(deepest, ++depth);
    else if (c == ']' || c == '}')
      --depth;
  }
  return deepest;
}

std::map<std::string, std::string>
kvq::cache::parseKeyText(const std::string &text) {
  std::map<std::string, std::string> fields;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos)
      end = text.size();
    std::string line = text.substr(start, end - start);
    size_t eq = line.find('=');
    if (eq != std::string::npos)
      fields[line.substr(0, eq)] = line.substr(eq + 1);
    start = end + 1;
  }
  return fields;
}

const Entry *Bundle::find(const std::string &key) const {
  auto it = byKey.find(key);
  return it == byKey.end() ? nullptr : &all[it->second];
}

llvm::Expected<Bundle> Bundle::open(const std::string &path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return bad(path, "cannot read it: " + buffer.getError().message());
  return parse((*buffer)->getBuffer().str(), path);
}

llvm::Expected<Bundle> Bundle::parse(std::string bytes,
                                     const std::string &name) {
  // Header: magic + format, then "<length> <sha256>" of the manifest.
  std::string magic = kMagic + std::to_string(kBundleFormatVersion) + "\n";
  if (bytes.compare(0, magic.size(), magic) != 0) {
    if (bytes.compare(0, std::strlen(kMagic), kMagic) == 0)
      return bad(name, "bundle format '" +
                           bytes
                               .substr(std::strlen(kMagic),
                                       bytes.find('\n') - std::strlen(kMagic))
                               .substr(0, 16) +
                           "' is not the format this kvq reads (" +
                           std::to_string(kBundleFormatVersion) + ")");
    return bad(name, "not a kvq kernel bundle (bad magic)");
  }
  size_t lineEnd = bytes.find('\n', magic.size());
  if (lineEnd == std::string::npos || lineEnd - magic.size() > 100)
    return bad(name, "truncated header");
  std::string header = bytes.substr(magic.size(), lineEnd - magic.size());
  size_t space = header.find(' ');
  std::string lengthText = header.substr(0, space);
  std::string manifestSum =
      space == std::string::npos ? "" : header.substr(space + 1);
  if (lengthText.empty() || lengthText.size() > 12 ||
      lengthText.find_first_not_of("0123456789") != std::string::npos ||
      !isHex(manifestSum, 64))
    return bad(name, "malformed header '" + header.substr(0, 80) + "'");
  uint64_t manifestBytes = std::stoull(lengthText);
  size_t manifestStart = lineEnd + 1;
  if (manifestBytes > kMaxManifestBytes ||
      manifestBytes > bytes.size() - manifestStart)
    return bad(name, "manifest of " + lengthText +
                         " bytes runs past the end of the file (" +
                         std::to_string(bytes.size()) + " bytes)");
  std::string manifestText = bytes.substr(manifestStart, manifestBytes);
  if (sha256Hex(manifestText) != manifestSum)
    return bad(name, "the manifest does not match its checksum (the file is "
                     "corrupt or was edited)");

  // A manifest is 4 levels deep; LLVM's JSON parser recurses per level, so a
  // deeper one (crafted, checksum and all) would overflow the stack.
  if (int depth = jsonNestingDepth(manifestText); depth > kMaxManifestDepth)
    return bad(name, "manifest nests " + std::to_string(depth) +
                         " levels deep; at most " +
                         std::to_string(kMaxManifestDepth) + " are expected");
  llvm::Expected<llvm::json::Value> parsed = llvm::json::parse(manifestText);
  if (!parsed)
    return bad(name,
               "manifest is not JSON: " + llvm::toString(parsed.takeError()));
  const llvm::json::Object *manifest = parsed->getAsObject();
  const llvm::json::Array *entries =
      manifest ? manifest->getArray("entries") : nullptr;
  if (!entries)
    return bad(name, "manifest has no entry list");

  uint64_t payloadStart = manifestStart + manifestBytes;
  uint64_t payloadBytes = bytes.size() - payloadStart;
  uint64_t next = 0; // files tile the payload in order
  Bundle bundle;
  bundle.name = name;
  for (const llvm::json::Value &item : *entries) {
    const llvm::json::Object *o = item.getAsObject();
    if (!o)
      return bad(name, "an entry is not a JSON object");
    Entry entry;
    entry.key = o->getString("key").value_or("").str();
    if (!isHex(entry.key, 64))
      return bad(name, "bad entry key '" + entry.key.substr(0, 80) + "'");
    if (bundle.byKey.count(entry.key))
      return bad(name, "entry " + entry.key + " appears twice");
    if (const llvm::json::Object *info = o->getObject("info"))
      for (const auto &[field, value] : *info) {
        std::optional<llvm::StringRef> text = value.getAsString();
        if (!text)
          return bad(name, "entry " + entry.key + ": info field '" +
                               field.str() + "' is not a string");
        entry.info[field.str()] = text->str();
      }
    // The key must be the hash of the inputs it claims, and those inputs
    // must name the spec it claims: no entry can stand in for another.
    auto keyText = entry.info.find("key_inputs");
    if (keyText == entry.info.end() || sha256Hex(keyText->second) != entry.key)
      return bad(name, "entry " + entry.key +
                           ": its key is not the SHA-256 of its key inputs");
    if (parseKeyText(keyText->second)["spec"] != entry.info["spec"])
      return bad(name, "entry " + entry.key +
                           ": its spec differs from the spec it was keyed by");
    const llvm::json::Array *files = o->getArray("files");
    if (!files || files->empty())
      return bad(name, "entry " + entry.key + " lists no files");
    for (const llvm::json::Value &fileValue : *files) {
      const llvm::json::Object *file = fileValue.getAsObject();
      std::string fileName =
          file ? file->getString("name").value_or("").str() : "";
      if (!isPlainFileName(fileName))
        return bad(name, "entry " + entry.key + ": bad file name '" +
                             fileName.substr(0, 80) + "'");
      std::optional<uint64_t> offset = sizeField(*file, "offset", payloadBytes);
      std::optional<uint64_t> size = sizeField(*file, "size", 1ull << 40);
      std::string sum = file->getString("sha256").value_or("").str();
      if (!offset || !size || !isHex(sum, 64))
        return bad(name, "entry " + entry.key + ": file " + fileName +
                             " has a malformed offset, size or checksum");
      if (*offset != next)
        return bad(name, "entry " + entry.key + ": file " + fileName +
                             " does not follow the previous file in the "
                             "payload (offset " +
                             std::to_string(*offset) + ", expected " +
                             std::to_string(next) + ")");
      if (*size > payloadBytes - *offset)
        return bad(name, "entry " + entry.key + ": file " + fileName + " (" +
                             std::to_string(*size) +
                             " bytes) runs past the end of the file "
                             "(truncated?)");
      next = *offset + *size;
      std::string content = bytes.substr(payloadStart + *offset, *size);
      if (sha256Hex(content) != sum)
        return bad(name, "entry " + entry.key + ": file " + fileName +
                             " does not match its checksum (the file is "
                             "corrupt)");
      if (!entry.files.emplace(fileName, std::move(content)).second)
        return bad(name,
                   "entry " + entry.key + ": file " + fileName + " twice");
    }
    bundle.byKey[entry.key] = bundle.all.size();
    bundle.all.push_back(std::move(entry));
  }
  if (next != payloadBytes)
    return bad(name, std::to_string(payloadBytes - next) +
                         " bytes after the last file (truncated or appended "
                         "to)");
  return bundle;
}

llvm::Expected<std::string>
Bundle::serialize(const std::vector<Entry> &entries) {
  llvm::json::Array list;
  std::string payload;
  for (const Entry &entry : entries) {
    auto keyText = entry.info.find("key_inputs");
    if (keyText == entry.info.end() || sha256Hex(keyText->second) != entry.key)
      return bad("(new)", "entry " + entry.key +
                              " has no key inputs that hash to its key");
    llvm::json::Object info;
    for (const auto &[field, value] : entry.info)
      info[field] = value;
    llvm::json::Array files;
    for (const auto &[fileName, bytes] : entry.files) {
      if (!isPlainFileName(fileName))
        return bad("(new)",
                   "entry " + entry.key + ": bad file name '" + fileName + "'");
      files.push_back(llvm::json::Object{{"name", fileName},
                                         {"offset", int64_t(payload.size())},
                                         {"size", int64_t(bytes.size())},
                                         {"sha256", sha256Hex(bytes)}});
      payload += bytes;
    }
    list.push_back(llvm::json::Object{{"key", entry.key},
                                      {"info", std::move(info)},
                                      {"files", std::move(files)}});
  }
  std::string manifest;
  llvm::raw_string_ostream(manifest) << llvm::json::Value(llvm::json::Object{
      {"format", kBundleFormatVersion}, {"entries", std::move(list)}});
  return kMagic + std::to_string(kBundleFormatVersion) + "\n" +
         std::to_string(manifest.size()) + " " + sha256Hex(manifest) + "\n" +
         manifest + payload;
}

llvm::Error Bundle::write(const std::string &path,
                          const std::vector<Entry> &entries) {
  llvm::Expected<std::string> bytes = serialize(entries);
  if (!bytes)
    return bytes.takeError();

  static std::atomic<unsigned> counter{0};
  std::string temp = path + ".tmp." + std::to_string(getpid()) + "." +
                     std::to_string(counter++);
  if (llvm::Error e = writeWholeFile(temp, *bytes))
    return bad(path, llvm::toString(std::move(e)));
  if (std::error_code ec = llvm::sys::fs::rename(temp, path)) {
    (void)llvm::sys::fs::remove(temp);
    return bad(path, "cannot publish it: " + ec.message());
  }
  return llvm::Error::success();
}
