//===- RemoteCache.h - kernels shared by a fleet through Redis --*- C++ -*-===//
//
// The tier behind the disk cache: memory -> disk -> remote -> compile. One
// Redis value per cache key, holding the entry as a one-entry bundle (every
// byte checksummed, Bundle.h) signed with HMAC-SHA256 under a key the fleet
// shares (KVQ_CACHE_KEY_FILE). Loading a kernel is executing code, so a
// value that is unsigned or badly signed is refused before it is parsed;
// whoever can write to the Redis cannot inject code without the key.
// Without a key the remote tier is off: an entry that cannot be verified
// cannot be used, and one that cannot be signed must not be published.
//
// Single flight across processes: before compiling, a process takes a lock
// key (SET NX PX); the others wait for the entry up to a bound, then
// compile themselves. A slow or dead Redis costs at most the command
// timeout once: the first failure turns the tier off for the process, with
// one warning.
//
// Configuration (environment, read by fromEnvironment):
//   KVQ_REMOTE_CACHE        redis://host:port/db
//   KVQ_REMOTE_CACHE_PREFIX key prefix, default "kvq:"
//   KVQ_CACHE_KEY_FILE      the signing key (a file of at least 16 bytes)
//   KVQ_REMOTE_TIMEOUT_MS   connect and per-command timeout, default 250
//   KVQ_REMOTE_WAIT_MS      how long to wait for another process's
//                           compile, default 30000
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CACHE_REMOTECACHE_H
#define KVQ_CACHE_REMOTECACHE_H

#include "kvq/Cache/DiskCache.h"

#include "llvm/Support/Error.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvq::cache {

struct RemoteOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  int database = 0;
  std::string prefix = "kvq:";
  std::string signingKey;
  int timeoutMs = 250;
  int waitMs = 30000;
  int lockMs = 120000; ///< a lock outlives a crashed holder this long
};

/// Parses `redis://host[:port][/db]` into `options`; an error names the bad
/// part.
llvm::Error parseRemoteUrl(const std::string &url, RemoteOptions &options);

class RemoteCache {
public:
  /// The remote tier the environment configures: none when
  /// KVQ_REMOTE_CACHE is unset, an error (the caller warns and goes on
  /// without it) when the URL or the key file is unusable.
  static llvm::Expected<std::unique_ptr<RemoteCache>> fromEnvironment();

  /// Connects (within the timeout). An unreachable server is an error.
  static llvm::Expected<std::unique_ptr<RemoteCache>>
  connect(const RemoteOptions &options);

  ~RemoteCache();

  /// `host:port/db prefix`, for messages.
  std::string describe() const;
  const RemoteOptions &options() const;

  /// False once a command failed or timed out: every later call returns at
  /// once (load: nothing; store: an error; acquire: true).
  bool available() const;
  /// Why the tier turned off (empty while available).
  std::string failure() const;

  /// The verified entry for `key`, or nothing. `problem` says why a value
  /// that exists was refused (unsigned, bad signature, corrupt).
  std::optional<Entry> load(const std::string &key,
                            std::string *problem = nullptr);
  /// Signs and publishes `entry` under its key.
  llvm::Error store(const Entry &entry);
  /// The value stored for `key` as it is, unverified (for kvq-cache and
  /// tests that tamper with it).
  std::optional<std::string> rawValue(const std::string &key);
  llvm::Error setRawValue(const std::string &key, const std::string &bytes);

  /// Single flight: true if this process should build `key` now (it took
  /// the lock, or the store is down). False: another process holds it;
  /// wait with waitFor.
  bool acquire(const std::string &key);
  /// Waits up to the configured bound for another process to publish
  /// `key`; the entry, or nothing (then build it yourself).
  std::optional<Entry> waitFor(const std::string &key,
                               std::string *problem = nullptr);
  /// Drops the lock this process took for `key`.
  void release(const std::string &key);

  /// Every key with an entry under the prefix.
  std::vector<std::string> keys();
  void remove(const std::string &key);

  struct Impl;

private:
  explicit RemoteCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace kvq::cache

#endif // KVQ_CACHE_REMOTECACHE_H
