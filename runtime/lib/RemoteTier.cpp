//===- RemoteTier.cpp - the Runtime's view of the fleet cache -------------===//

#include "RemoteTier.h"

#include "RuntimeLog.h"

#include "llvm/Support/raw_ostream.h"

using namespace kvq;

RemoteTier RemoteTier::fromEnvironment(std::string &warning) {
  RemoteTier tier;
  llvm::Expected<std::unique_ptr<cache::RemoteCache>> remote =
      cache::RemoteCache::fromEnvironment();
  if (!remote) {
    warning =
        "kvq: remote kernel cache off: " + llvm::toString(remote.takeError());
    llvm::errs() << warning << "\n";
    return tier;
  }
  tier.remote = std::move(*remote);
  if (tier.remote)
    logLine("remote kernel cache " + tier.remote->describe());
  return tier;
}

void RemoteTier::reportFailure() {
  if (remote && !remote->available() && !reported->exchange(true))
    llvm::errs() << "kvq: the remote kernel cache " << remote->describe()
                 << " failed (" << remote->failure()
                 << "); going on without it\n";
}

void RemoteTier::reportRefusal(const std::string &problem) {
  if (!problem.empty())
    llvm::errs() << "kvq: " << problem << "; rebuilding it\n";
}

std::optional<cache::Entry> RemoteTier::fetch(
    llvm::function_ref<std::optional<cache::Entry>(std::string *)> read) {
  if (!enabled())
    return std::nullopt;
  std::string problem;
  std::optional<cache::Entry> entry = read(&problem);
  reportRefusal(problem);
  reportFailure();
  return entry;
}

std::optional<cache::Entry> RemoteTier::load(const std::string &key) {
  return fetch(
      [&](std::string *problem) { return remote->load(key, problem); });
}

std::optional<cache::Entry> RemoteTier::waitFor(const std::string &key) {
  return fetch(
      [&](std::string *problem) { return remote->waitFor(key, problem); });
}

bool RemoteTier::shouldBuild(const std::string &key) {
  bool build = !enabled() || remote->acquire(key);
  reportFailure();
  return build;
}

void RemoteTier::finished(const std::string &key) {
  if (enabled()) // a lock left behind expires (RemoteOptions::lockMs)
    remote->release(key);
}

void RemoteTier::publish(const cache::Entry &entry) {
  if (!enabled())
    return;
  if (llvm::Error e = remote->store(entry))
    llvm::consumeError(std::move(e)); // a failed server: reported below
  reportFailure();
}
