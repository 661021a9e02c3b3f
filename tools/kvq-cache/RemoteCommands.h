//===- RemoteCommands.h - kvq-cache --remote --------------------*- C++ -*-===//

#ifndef KVQ_TOOLS_KVQCACHE_REMOTECOMMANDS_H
#define KVQ_TOOLS_KVQCACHE_REMOTECOMMANDS_H

#include "kvq/Cache/DiskCache.h"

#include <string>
#include <vector>

namespace kvq {

/// list, verify and prune on the remote cache the environment configures
/// (KVQ_REMOTE_CACHE, KVQ_CACHE_KEY_FILE): the exit status.
int remoteCommand(const std::string &command);

/// After `kvq-cache warm --remote`: publishes each of `keys` that the
/// remote lacks from the disk cache `disk` (a kernel found on disk was not
/// compiled, so the Runtime did not publish it). The exit status.
int publishWarmed(cache::DiskCache &disk, const std::vector<std::string> &keys);

} // namespace kvq

#endif // KVQ_TOOLS_KVQCACHE_REMOTECOMMANDS_H
