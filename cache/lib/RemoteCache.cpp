//===- RemoteCache.cpp - kernels shared by a fleet through Redis ----------===//

#include "kvq/Cache/RemoteCache.h"

#include "kvq/Cache/Bundle.h"
#include "kvq/Cache/Hmac.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/MemoryBuffer.h"

#include <hiredis/hiredis.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>
#include <unistd.h>

using namespace kvq::cache;

namespace {

/// First line of every stored value; the signature follows on the second.
constexpr llvm::StringLiteral kMagic = "kvq-remote-entry 1\n";
/// A shorter key is too easy to guess to protect code.
constexpr size_t kMinKeyBytes = 16;

llvm::Error problem(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

struct ReplyDeleter {
  void operator()(redisReply *reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

timeval toTimeval(int ms) { return timeval{ms / 1000, (ms % 1000) * 1000}; }

int envInt(const char *name, int fallback) {
  const char *text = std::getenv(name);
  if (!text || !*text)
    return fallback;
  int value = 0;
  if (llvm::StringRef(text).getAsInteger(10, value) || value < 0)
    return fallback;
  return value;
}

} // namespace

llvm::Error kvq::cache::parseRemoteUrl(const std::string &url,
                                       RemoteOptions &options) {
  llvm::StringRef rest(url);
  if (!rest.consume_front("redis://"))
    return problem("KVQ_REMOTE_CACHE must be redis://host[:port][/db], got '" +
                   url + "'");
  auto [hostPort, db] = rest.split('/');
  auto [host, port] = hostPort.split(':');
  if (host.empty())
    return problem("KVQ_REMOTE_CACHE '" + url + "' names no host");
  options.host = host.str();
  if (!port.empty() && (port.getAsInteger(10, options.port) ||
                        options.port <= 0 || options.port > 65535))
    return problem("KVQ_REMOTE_CACHE '" + url + "': port '" + port +
                   "' is not a number in [1, 65535]");
  if (!db.empty() &&
      (db.getAsInteger(10, options.database) || options.database < 0))
    return problem("KVQ_REMOTE_CACHE '" + url + "': database '" + db +
                   "' is not a non-negative number");
  return llvm::Error::success();
}

struct RemoteCache::Impl {
  RemoteOptions options;
  std::mutex mutex; // one command at a time on the connection
  redisContext *context = nullptr;
  std::string failure;
  std::atomic<bool> down{false};
  std::string token; // this process's lock value

  ~Impl() {
    if (context)
      redisFree(context);
  }

  std::string entryKey(const std::string &key) const {
    return options.prefix + "entry:" + key;
  }
  std::string lockKey(const std::string &key) const {
    return options.prefix + "lock:" + key;
  }

  /// Runs one command (argv form: binary safe); null, with the tier turned
  /// off, if the server failed or timed out.
  Reply command(std::initializer_list<llvm::StringRef> args) {
    if (down)
      return nullptr;
    std::vector<const char *> argv;
    std::vector<size_t> lengths;
    for (llvm::StringRef arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    std::lock_guard<std::mutex> lock(mutex);
    Reply reply(static_cast<redisReply *>(redisCommandArgv(
        context, int(argv.size()), argv.data(), lengths.data())));
    if (!reply || context->err) {
      fail(std::string("redis ") + args.begin()->str() + ": " +
           (context->err ? context->errstr : "no reply"));
      return nullptr;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      fail(std::string("redis ") + args.begin()->str() + ": " +
           std::string(reply->str, reply->len));
      return nullptr;
    }
    return reply;
  }

  /// Called with `mutex` held. `failure` is written once, before `down`
  /// is set, so a reader that sees `down` reads it whole.
  void fail(std::string why) {
    if (down)
      return;
    failure = std::move(why);
    down = true;
  }

  std::string sign(const std::string &key, llvm::StringRef bundle) const {
    return hmacSha256Hex(options.signingKey, key + "\n" + bundle.str());
  }
};

RemoteCache::RemoteCache(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
RemoteCache::~RemoteCache() = default;

llvm::Expected<std::unique_ptr<RemoteCache>>
RemoteCache::connect(const RemoteOptions &options) {
  if (options.signingKey.size() < kMinKeyBytes)
    return problem("the remote kernel cache needs a signing key of at least " +
                   llvm::Twine(kMinKeyBytes) + " bytes (KVQ_CACHE_KEY_FILE)");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  std::random_device entropy;
  impl->token = std::to_string(::getpid()) + "-" + std::to_string(entropy()) +
                std::to_string(entropy());
  impl->context = redisConnectWithTimeout(options.host.c_str(), options.port,
                                          toTimeval(options.timeoutMs));
  std::string where = options.host + ":" + std::to_string(options.port);
  if (!impl->context)
    return problem("cannot reach the remote kernel cache at " + where);
  if (impl->context->err)
    return problem("cannot reach the remote kernel cache at " + where + ": " +
                   impl->context->errstr);
  redisSetTimeout(impl->context, toTimeval(options.timeoutMs));
  if (options.database != 0) {
    std::string db = std::to_string(options.database);
    if (!impl->command({"SELECT", db}))
      return problem("the remote kernel cache at " + where +
                     " refused database " + db + ": " + impl->failure);
  }
  return std::unique_ptr<RemoteCache>(new RemoteCache(std::move(impl)));
}

llvm::Expected<std::unique_ptr<RemoteCache>> RemoteCache::fromEnvironment() {
  const char *url = std::getenv("KVQ_REMOTE_CACHE");
  if (!url || !*url)
    return nullptr;
  RemoteOptions options;
  if (llvm::Error e = parseRemoteUrl(url, options))
    return std::move(e);
  if (const char *prefix = std::getenv("KVQ_REMOTE_CACHE_PREFIX"))
    options.prefix = prefix;
  options.timeoutMs = std::max(1, envInt("KVQ_REMOTE_TIMEOUT_MS", 250));
  options.waitMs = envInt("KVQ_REMOTE_WAIT_MS", 30000);
  const char *keyFile = std::getenv("KVQ_CACHE_KEY_FILE");
  if (!keyFile || !*keyFile)
    return problem("KVQ_REMOTE_CACHE is set but KVQ_CACHE_KEY_FILE is not: "
                   "the remote tier is off (entries that cannot be verified "
                   "are never loaded)");
  auto bytes = llvm::MemoryBuffer::getFile(keyFile, /*IsText=*/false,
                                           /*RequiresNullTerminator=*/false);
  if (!bytes)
    return problem(llvm::Twine("cannot read KVQ_CACHE_KEY_FILE '") + keyFile +
                   "': " + bytes.getError().message());
  options.signingKey = llvm::StringRef((*bytes)->getBuffer()).trim().str();
  return connect(options);
}

std::string RemoteCache::describe() const {
  const RemoteOptions &o = impl->options;
  return "redis://" + o.host + ":" + std::to_string(o.port) + "/" +
         std::to_string(o.database) + " (prefix '" + o.prefix + "')";
}

const RemoteOptions &RemoteCache::options() const { return impl->options; }
bool RemoteCache::available() const { return !impl->down; }
std::string RemoteCache::failure() const {
  return impl->down ? impl->failure : std::string();
}

std::optional<std::string> RemoteCache::rawValue(const std::string &key) {
  Reply reply = impl->command({"GET", impl->entryKey(key)});
  if (!reply || reply->type != REDIS_REPLY_STRING)
    return std::nullopt;
  return std::string(reply->str, reply->len);
}

llvm::Error RemoteCache::setRawValue(const std::string &key,
                                     const std::string &bytes) {
  if (!impl->command({"SET", impl->entryKey(key), bytes}))
    return problem("cannot write to the remote kernel cache: " + impl->failure);
  return llvm::Error::success();
}

std::optional<Entry> RemoteCache::load(const std::string &key,
                                       std::string *why) {
  std::optional<std::string> value = rawValue(key);
  if (!value)
    return std::nullopt;
  auto refuse = [&](const std::string &reason) -> std::optional<Entry> {
    if (why)
      *why = "remote entry " + key + " refused: " + reason;
    return std::nullopt;
  };
  llvm::StringRef text(*value);
  if (!text.consume_front(kMagic))
    return refuse("it is not a signed kvq entry");
  auto [signature, bundle] = text.split('\n');
  if (signature.size() != 64)
    return refuse("it carries no signature");
  if (!constantTimeEqual(signature, impl->sign(key, bundle)))
    return refuse("its signature does not match (signed with another key, "
                  "or edited)");
  llvm::Expected<Bundle> parsed = Bundle::parse(bundle.str(), "remote " + key);
  if (!parsed)
    return refuse(llvm::toString(parsed.takeError()));
  const Entry *entry = parsed->find(key);
  if (!entry || parsed->entries().size() != 1)
    return refuse("it does not hold exactly the entry " + key);
  return *entry;
}

llvm::Error RemoteCache::store(const Entry &entry) {
  if (!available())
    return problem("the remote kernel cache is off: " + impl->failure);
  llvm::Expected<std::string> bundle = Bundle::serialize({entry});
  if (!bundle)
    return bundle.takeError();
  std::string value =
      kMagic.str() + impl->sign(entry.key, *bundle) + "\n" + *bundle;
  return setRawValue(entry.key, value);
}

bool RemoteCache::acquire(const std::string &key) {
  Reply reply = impl->command({"SET", impl->lockKey(key), impl->token, "NX",
                               "PX", std::to_string(impl->options.lockMs)});
  // Down: build it yourself. NIL: someone else holds the lock.
  return !reply || reply->type == REDIS_REPLY_STATUS;
}

std::optional<Entry> RemoteCache::waitFor(const std::string &key,
                                          std::string *why) {
  std::string refused;
  if (!why)
    why = &refused;
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(impl->options.waitMs);
  while (available() && std::chrono::steady_clock::now() < deadline) {
    if (std::optional<Entry> entry = load(key, why))
      return entry;
    if (!why->empty())
      return std::nullopt; // a refused value: build it ourselves
    Reply holder = impl->command({"EXISTS", impl->lockKey(key)});
    if (!holder ||
        (holder->type == REDIS_REPLY_INTEGER && holder->integer == 0))
      return load(key, why); // the holder finished (or gave up)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

void RemoteCache::release(const std::string &key) {
  // Only our own lock: a holder that outlived its lock must not drop the
  // next holder's.
  static const char *script =
      "if redis.call('GET', KEYS[1]) == ARGV[1] then "
      "return redis.call('DEL', KEYS[1]) else return 0 end";
  (void)impl->command({"EVAL", script, "1", impl->lockKey(key), impl->token});
}

std::vector<std::string> RemoteCache::keys() {
  std::vector<std::string> out;
  std::string cursor = "0";
  std::string pattern = impl->options.prefix + "entry:*";
  do {
    Reply reply =
        impl->command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
    // The reply is the server's: its shape is checked before it is read.
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_ARRAY)
      break;
    cursor = std::string(reply->element[0]->str, reply->element[0]->len);
    redisReply *list = reply->element[1];
    std::string entries = impl->entryKey("");
    for (size_t i = 0; i < list->elements; ++i) {
      const redisReply *item = list->element[i];
      if (item->type != REDIS_REPLY_STRING)
        continue;
      llvm::StringRef name(item->str, item->len);
      if (name.consume_front(entries))
        out.push_back(name.str());
    }
  } while (cursor != "0");
  return out;
}

void RemoteCache::remove(const std::string &key) {
  (void)impl->command({"DEL", impl->entryKey(key)});
}
