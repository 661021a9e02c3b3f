//===- RemoteTier.h - the Runtime's view of the fleet cache -----*- C++ -*-===//
//
// What the Runtime asks of the remote kernel cache (kvq/Cache/RemoteCache.h)
// between its disk cache and a compile, with the messages a user sees: a
// refused entry is reported (and rebuilt), a failed server once (and the
// process goes on without it). Everything here is a no-op without a remote
// cache configured.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_REMOTETIER_H
#define KVQ_RUNTIME_REMOTETIER_H

#include "kvq/Cache/RemoteCache.h"

#include "llvm/ADT/STLFunctionalExtras.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>

namespace kvq {

class RemoteTier {
public:
  /// From the environment (RemoteCache::fromEnvironment); a configuration
  /// that cannot be used is `warning`, and the tier stays off.
  static RemoteTier fromEnvironment(std::string &warning);

  bool enabled() const { return remote && remote->available(); }

  /// The verified entry for `key`, or nothing.
  std::optional<cache::Entry> load(const std::string &key);
  /// Single flight: whether to build `key` now; if not, `waitFor` it.
  bool shouldBuild(const std::string &key);
  std::optional<cache::Entry> waitFor(const std::string &key);
  void finished(const std::string &key);
  /// Publishes a freshly built entry (a failure is reported once).
  void publish(const cache::Entry &entry);

private:
  /// `read`'s entry, with a refusal or a failed server reported.
  std::optional<cache::Entry>
  fetch(llvm::function_ref<std::optional<cache::Entry>(std::string *)> read);
  void reportFailure();
  void reportRefusal(const std::string &problem);

  std::shared_ptr<cache::RemoteCache> remote;
  std::shared_ptr<std::atomic<bool>> reported =
      std::make_shared<std::atomic<bool>>(false);
};

} // namespace kvq

#endif // KVQ_RUNTIME_REMOTETIER_H
