//===- RemoteCommands.cpp - kvq-cache --remote ----------------------------===//

#include "RemoteCommands.h"

#include "kvq/Cache/RemoteCache.h"
#include "kvq/Runtime/KernelKey.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace kvq;

namespace {

int fail(const llvm::Twine &message) {
  llvm::errs() << "kvq-cache: " << message << "\n";
  return 1;
}

/// The remote the environment configures, or a message why there is none.
std::unique_ptr<cache::RemoteCache> openRemote(std::string &problem) {
  llvm::Expected<std::unique_ptr<cache::RemoteCache>> remote =
      cache::RemoteCache::fromEnvironment();
  if (!remote) {
    problem = llvm::toString(remote.takeError());
    return nullptr;
  }
  if (!*remote)
    problem = "--remote needs KVQ_REMOTE_CACHE=redis://host:port/db (and "
              "KVQ_CACHE_KEY_FILE)";
  return std::move(*remote);
}

} // namespace

int kvq::remoteCommand(const std::string &command) {
  std::string problem;
  std::unique_ptr<cache::RemoteCache> remote = openRemote(problem);
  if (!remote)
    return fail(problem);
  std::vector<std::string> keys = remote->keys();
  if (command == "list") {
    for (const std::string &key : keys) {
      std::string why;
      std::optional<cache::Entry> entry = remote->load(key, &why);
      std::string spec =
          entry ? (entry->info.count("spec") ? entry->info.at("spec") : "?")
                : why;
      llvm::outs() << llvm::formatv("{0}  {1}\n", key.substr(0, 16), spec);
    }
    llvm::outs() << keys.size() << " entries in " << remote->describe() << "\n";
  } else if (command == "verify" || command == "prune") {
    // verify: refused entries (unsigned, badly signed, corrupt) are removed.
    // prune: so are entries another kvq build made (their key inputs are
    // not this build's), which no process of this build will ask for.
    size_t intact = 0, removed = 0;
    for (const std::string &key : keys) {
      std::string why;
      std::optional<cache::Entry> entry = remote->load(key, &why);
      if (entry && command == "prune") {
        std::string mismatch = entryMismatch(entry->info["key_inputs"]);
        if (!mismatch.empty())
          why = "entry " + key + " is stale: " + mismatch;
      }
      if (!why.empty()) {
        remote->remove(key);
        ++removed;
        llvm::outs() << "removed " << why << "\n";
      } else {
        ++intact;
      }
    }
    llvm::outs() << intact << " of " << keys.size() << " entries kept in "
                 << remote->describe() << "\n";
    if (!remote->available())
      return fail(remote->failure());
    return command == "verify" && removed ? 1 : 0;
  } else {
    return fail("--remote works with list, verify, prune and warm, not '" +
                command + "'");
  }
  if (!remote->available())
    return fail(remote->failure());
  return 0;
}

int kvq::publishWarmed(cache::DiskCache &disk,
                       const std::vector<std::string> &keys) {
  std::string problem;
  std::unique_ptr<cache::RemoteCache> remote = openRemote(problem);
  if (!remote)
    return fail(problem);
  size_t published = 0, present = 0;
  for (const std::string &key : keys) {
    if (remote->load(key)) {
      ++present;
      continue;
    }
    std::string why;
    std::optional<cache::Entry> entry = disk.load(key, &why);
    if (!entry)
      return fail("cannot publish " + key + ": " +
                  (why.empty() ? "not on disk" : why));
    if (llvm::Error e = remote->store(*entry))
      return fail(llvm::toString(std::move(e)));
    ++published;
  }
  llvm::outs() << llvm::formatv(
      "remote {0}: {1} published, {2} already there\n", remote->describe(),
      published, present);
  return 0;
}
