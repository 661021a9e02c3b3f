//===- RemoteCacheTest.cpp - the fleet's kernel cache ---------------------===//
//
// Signing (RFC 4231 vectors), configuration errors, and the store itself
// on a private redis-server: signed round trips, refusals, the single-flight
// lock, and a server that dies.

#include "kvq/Testing/RedisServer.h"

#include "kvq/Cache/CacheKey.h"
#include "kvq/Cache/Hmac.h"
#include "kvq/Cache/RemoteCache.h"

#include <gtest/gtest.h>

using namespace kvq::cache;

namespace {

#define REQUIRE_REDIS(server)                                                  \
  if (!(server).running())                                                     \
  GTEST_SKIP() << "redis-server is not installed (scripts/setup.sh installs "  \
                  "it)"

const char *kKey = "a-fleet-signing-key-for-tests";

Entry sampleEntry(const std::string &seed) {
  KeyInputs in;
  in.spec = "quantize 2c32 d=64 f16";
  in.backend = "cuda";
  in.target = "sm_90";
  in.generatorVersion = seed;
  Entry e;
  e.info["key_inputs"] = canonicalKeyText(in);
  e.key = computeKey(in);
  e.info["spec"] = in.spec;
  e.info["kernels"] = "[]";
  e.files["kernels.cubin"] = "\x7f"
                             "ELF cubin " +
                             seed;
  return e;
}

TEST(HmacTest, MatchesRfc4231) {
  // Test case 2: a short key.
  EXPECT_EQ(hmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Test case 6: a key longer than a block is hashed first.
  EXPECT_EQ(hmacSha256Hex(std::string(131, '\xaa'),
                          "Test Using Larger Than Block-Size Key - Hash Key "
                          "First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  EXPECT_TRUE(constantTimeEqual("abc", "abc"));
  EXPECT_FALSE(constantTimeEqual("abc", "abd"));
  EXPECT_FALSE(constantTimeEqual("abc", "ab"));
}

TEST(RemoteUrlTest, BadUrlsAreNamed) {
  RemoteOptions o;
  EXPECT_FALSE(static_cast<bool>(parseRemoteUrl("redis://cache:6380/2", o)));
  EXPECT_EQ(o.host, "cache");
  EXPECT_EQ(o.port, 6380);
  EXPECT_EQ(o.database, 2);
  auto message = [](const std::string &url) {
    RemoteOptions options;
    return llvm::toString(parseRemoteUrl(url, options));
  };
  EXPECT_NE(message("http://cache").find("must be redis://"),
            std::string::npos);
  EXPECT_NE(message("redis://cache:70000").find("port '70000'"),
            std::string::npos);
  EXPECT_NE(message("redis://:1").find("names no host"), std::string::npos);
  EXPECT_NE(message("redis://cache/x").find("database 'x'"), std::string::npos);
}

TEST(RemoteCacheTest, AShortKeyIsRefused) {
  RemoteOptions o;
  o.signingKey = "short";
  auto remote = RemoteCache::connect(o);
  ASSERT_FALSE(static_cast<bool>(remote));
  EXPECT_NE(llvm::toString(remote.takeError()).find("at least 16 bytes"),
            std::string::npos);
}

TEST(RemoteCacheTest, SignedEntriesRoundTripAndOthersAreRefused) {
  kvq::testing::RedisServer server;
  REQUIRE_REDIS(server);
  auto remote = RemoteCache::connect(server.options(kKey));
  ASSERT_TRUE(static_cast<bool>(remote)) << llvm::toString(remote.takeError());
  Entry e = sampleEntry("a");
  EXPECT_FALSE((*remote)->load(e.key).has_value());
  ASSERT_FALSE(static_cast<bool>((*remote)->store(e)));
  std::optional<Entry> back = (*remote)->load(e.key);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->files, e.files);
  EXPECT_EQ((*remote)->keys(), std::vector<std::string>{e.key});

  // Every single-byte change of the stored value is refused.
  std::string value = *(*remote)->rawValue(e.key);
  for (size_t at = 0; at < value.size(); at += 7) {
    std::string edited = value;
    edited[at] ^= 0x20;
    ASSERT_FALSE(static_cast<bool>((*remote)->setRawValue(e.key, edited)));
    std::string problem;
    EXPECT_FALSE((*remote)->load(e.key, &problem).has_value()) << at;
    EXPECT_NE(problem.find("refused"), std::string::npos) << at;
  }
  // A value signed for another key is refused under this one.
  Entry other = sampleEntry("b");
  ASSERT_FALSE(static_cast<bool>((*remote)->store(other)));
  ASSERT_FALSE(static_cast<bool>(
      (*remote)->setRawValue(e.key, *(*remote)->rawValue(other.key))));
  EXPECT_FALSE((*remote)->load(e.key).has_value());
  // So is an entry signed with another fleet's key.
  auto stranger = RemoteCache::connect(server.options("another-fleet-key-xyz"));
  ASSERT_TRUE(static_cast<bool>(stranger));
  std::string problem;
  EXPECT_FALSE((*stranger)->load(other.key, &problem).has_value());
  EXPECT_NE(problem.find("signature does not match"), std::string::npos);
}

TEST(RemoteCacheTest, OneProcessHoldsTheLockAndTheOthersWaitForItsEntry) {
  kvq::testing::RedisServer server;
  REQUIRE_REDIS(server);
  auto first = RemoteCache::connect(server.options(kKey));
  auto second = RemoteCache::connect(server.options(kKey));
  ASSERT_TRUE(first && second);
  Entry e = sampleEntry("lock");
  EXPECT_TRUE((*first)->acquire(e.key));
  EXPECT_FALSE((*second)->acquire(e.key));
  std::thread publisher([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_FALSE(static_cast<bool>((*first)->store(e)));
    (*first)->release(e.key);
  });
  std::optional<Entry> waited = (*second)->waitFor(e.key);
  publisher.join();
  ASSERT_TRUE(waited.has_value());
  EXPECT_EQ(waited->key, e.key);
  // Released: the next builder of another key gets the lock at once, and
  // releasing a lock one does not hold leaves it alone.
  Entry next = sampleEntry("next");
  EXPECT_TRUE((*second)->acquire(next.key));
  (*first)->release(next.key);
  EXPECT_FALSE((*first)->acquire(next.key));
}

TEST(RemoteCacheTest, ADeadServerTurnsTheTierOffWithoutWaiting) {
  kvq::testing::RedisServer server;
  REQUIRE_REDIS(server);
  RemoteOptions options = server.options(kKey);
  options.timeoutMs = 100;
  options.waitMs = 60000; // what a wait for a live holder could take
  auto remote = RemoteCache::connect(options);
  ASSERT_TRUE(static_cast<bool>(remote));
  Entry e = sampleEntry("dead");
  ASSERT_FALSE(static_cast<bool>((*remote)->store(e)));
  server.kill();
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE((*remote)->load(e.key).has_value());
  EXPECT_FALSE((*remote)->available());
  EXPECT_FALSE((*remote)->failure().empty());
  // Off: a build goes ahead (no wait), a store reports why.
  EXPECT_TRUE((*remote)->acquire(e.key));
  EXPECT_FALSE((*remote)->waitFor(e.key).has_value());
  llvm::Error stored = (*remote)->store(e);
  ASSERT_TRUE(static_cast<bool>(stored));
  EXPECT_NE(llvm::toString(std::move(stored)).find("is off"),
            std::string::npos);
  double ms = std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - start)
                  .count();
  // Not a timing target: off means nothing waits for the 60 s bound.
  EXPECT_LT(ms, 30000.0);
}

} // namespace
