//===- CacheTest.cpp - keys, disk cache, memory cache
//----------------------===//

#include "kvq/Cache/CacheKey.h"
#include "kvq/Cache/DiskCache.h"
#include "kvq/Cache/MemoryCache.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utime.h>

using namespace kvq::cache;

namespace {

KeyInputs sampleInputs() {
  KeyInputs in;
  in.spec = "attention k=2c32 v=2t32 d=128 hq=32 hkv=8 f16 sink residual";
  in.backend = "cuda";
  in.target = "sm_90";
  in.generatorVersion = "0.1.0";
  in.mlirVersion = "22.1.8";
  in.compilerVersion = "nvrtc 13.0";
  in.options = "-std=c++17";
  return in;
}

TEST(CacheKey, EveryFieldChangesTheKey) {
  KeyInputs base = sampleInputs();
  std::string key = computeKey(base);
  EXPECT_EQ(key.size(), 64u);
  EXPECT_EQ(key, computeKey(sampleInputs())) << "keys must be deterministic";
  std::vector<std::function<void(KeyInputs &)>> changes = {
      [](KeyInputs &k) { k.spec += " "; },
      [](KeyInputs &k) { k.backend = "emulator"; },
      [](KeyInputs &k) { k.target = "sm_80"; },
      [](KeyInputs &k) { k.generatorVersion = "0.1.1"; },
      [](KeyInputs &k) { k.mlirVersion = "22.1.9"; },
      [](KeyInputs &k) { k.compilerVersion = "nvrtc 13.1"; },
      [](KeyInputs &k) { k.options = "-lineinfo"; },
      [](KeyInputs &k) { k.environment["KVQ_TILE"] = "64"; }};
  for (size_t i = 0; i < changes.size(); ++i) {
    KeyInputs changed = sampleInputs();
    changes[i](changed);
    EXPECT_NE(computeKey(changed), key) << "change " << i;
  }
  EXPECT_NE(canonicalKeyText(base).find("target=sm_90\n"), std::string::npos);
}

class DiskCacheTest : public ::testing::Test {
protected:
  void SetUp() override {
    llvm::SmallString<128> path;
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("kvq-cache-test", path));
    root = path.str().str();
    dir = root + "/cache";
  }
  void TearDown() override { (void)llvm::sys::fs::remove_directories(root); }

  Entry sampleEntry(const std::string &seed = "a") {
    Entry e;
    KeyInputs in = sampleInputs();
    in.spec += seed;
    e.key = computeKey(in);
    e.info["spec"] = in.spec;
    e.info["registers"] = "80";
    e.files["kernels.cu"] = "// source " + seed;
    e.files["kernels.cubin"] = std::string(1000, '\x7f') + seed;
    return e;
  }

  DiskCache openCache(uint64_t maxBytes = 1 << 20) {
    llvm::Expected<DiskCache> cache = DiskCache::open(dir, maxBytes);
    EXPECT_TRUE(static_cast<bool>(cache)) << llvm::toString(cache.takeError());
    return std::move(*cache);
  }

  std::string root, dir;
};

TEST_F(DiskCacheTest, CreatesAPrivateDirectoryAndRoundTrips) {
  DiskCache cache = openCache();
  struct stat st;
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  Entry e = sampleEntry();
  EXPECT_FALSE(cache.load(e.key));
  ASSERT_FALSE(static_cast<bool>(cache.store(e)));
  std::optional<Entry> loaded = cache.load(e.key);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->files, e.files);
  EXPECT_EQ(loaded->info, e.info);
  std::vector<EntrySummary> entries = cache.list();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].info.at("registers"), "80");
}

TEST_F(DiskCacheTest, RefusesADirectoryOthersCanWrite) {
  openCache();
  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  llvm::Expected<DiskCache> cache = DiskCache::open(dir);
  ASSERT_FALSE(static_cast<bool>(cache));
  EXPECT_EQ(llvm::toString(cache.takeError()),
            "cache directory " + dir +
                " is writable by group or others (mode 777); refusing to load "
                "code from it: chmod 700 it or set KVQ_CACHE_DIR");
  ASSERT_EQ(::chmod(dir.c_str(), 0720), 0);
  EXPECT_FALSE(static_cast<bool>(DiskCache::open(dir)))
      << "group-writable is refused too";
  llvm::consumeError(DiskCache::open(dir).takeError());
}

TEST_F(DiskCacheTest, CorruptEntriesAreDetectedAndRemoved) {
  DiskCache cache = openCache();
  Entry e = sampleEntry();
  std::string entryDir = dir + "/" + e.key;
  struct Damage {
    std::string name;
    std::function<void()> apply;
    std::string expected;
  };
  std::vector<Damage> damages = {
      {"truncated cubin",
       [&] { ::truncate((entryDir + "/kernels.cubin").c_str(), 10); },
       "file kernels.cubin has 10 bytes, the manifest says 1001"},
      {"flipped byte",
       [&] {
         std::fstream f(entryDir + "/kernels.cu",
                        std::ios::in | std::ios::out | std::ios::binary);
         f.seekp(3);
         f.put('X');
       },
       "file kernels.cu does not match its checksum"},
      {"missing manifest",
       [&] { ::unlink((entryDir + "/manifest.json").c_str()); },
       "no manifest (partial entry)"},
      {"garbage manifest",
       [&] { std::ofstream(entryDir + "/manifest.json") << "{not json"; },
       "manifest is not JSON"},
      {"missing artefact",
       [&] { ::unlink((entryDir + "/kernels.cubin").c_str()); },
       "file kernels.cubin is missing"}};
  for (const Damage &damage : damages) {
    ASSERT_FALSE(static_cast<bool>(cache.store(e))) << damage.name;
    damage.apply();
    std::string problem;
    EXPECT_FALSE(cache.load(e.key, &problem)) << damage.name;
    EXPECT_NE(problem.find(damage.expected), std::string::npos)
        << damage.name << ": " << problem;
    EXPECT_FALSE(llvm::sys::fs::exists(entryDir))
        << damage.name << ": the corrupt entry must be removed";
    // ... and the next store rebuilds it.
    ASSERT_FALSE(static_cast<bool>(cache.store(e)));
    EXPECT_TRUE(cache.load(e.key)) << damage.name;
    cache.remove(e.key);
  }
}

TEST_F(DiskCacheTest, EvictsLeastRecentlyUsedPastTheBound) {
  DiskCache cache = openCache();
  Entry a = sampleEntry("a"), b = sampleEntry("b"), c = sampleEntry("c");
  ASSERT_FALSE(static_cast<bool>(cache.store(a)));
  ASSERT_FALSE(static_cast<bool>(cache.store(b)));
  // Make `a` the oldest, `b` recently used.
  struct utimbuf old = {1000, 1000};
  ::utime((dir + "/" + a.key + "/manifest.json").c_str(), &old);
  ::utime((dir + "/" + b.key + "/manifest.json").c_str(), &old);
  ASSERT_TRUE(cache.load(b.key));
  ASSERT_FALSE(static_cast<bool>(cache.store(c)));
  EXPECT_EQ(cache.list().size(), 3u);
  // Each entry is about 1.7 KB: a 2500-byte bound keeps only the newest.
  EXPECT_EQ(cache.prune(2500), 2u);
  EXPECT_FALSE(cache.load(a.key));
  EXPECT_FALSE(cache.load(b.key)) << "b is older than c";
  EXPECT_TRUE(cache.load(c.key));
}

TEST_F(DiskCacheTest, ConcurrentProcessesLeaveOneValidEntry) {
  DiskCache cache = openCache();
  Entry e = sampleEntry();
  std::vector<pid_t> children;
  for (int i = 0; i < 6; ++i) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Each process stores and loads the key over and over; a load may
      // miss but must never see a partial entry.
      for (int round = 0; round < 30; ++round) {
        if (cache.store(e))
          _exit(2);
        std::string problem;
        std::optional<Entry> loaded = cache.load(e.key, &problem);
        if (!problem.empty() || (loaded && loaded->files != e.files))
          _exit(3);
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child exit status " << WEXITSTATUS(status);
  }
  std::vector<EntrySummary> entries = cache.list();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_TRUE(cache.load(e.key));
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec))
    EXPECT_EQ(it->path().find(".tmp."), std::string::npos)
        << "leftover " << it->path();
}

TEST_F(DiskCacheTest, ReadOnlyLocationFailsToStoreWithoutLosingEntries) {
  if (getuid() == 0)
    GTEST_SKIP() << "running as root: file permissions do not apply";
  DiskCache cache = openCache();
  Entry e = sampleEntry();
  ASSERT_FALSE(static_cast<bool>(cache.store(e)));
  ASSERT_EQ(::chmod(dir.c_str(), 0500), 0);
  llvm::Error error = cache.store(sampleEntry("b"));
  EXPECT_TRUE(static_cast<bool>(error));
  llvm::consumeError(std::move(error));
  EXPECT_TRUE(cache.load(e.key));
  ::chmod(dir.c_str(), 0700);
}

TEST(MemoryCache, SixteenThreadsCompileOnce) {
  MemoryCache<std::string> cache;
  std::atomic<int> creations{0};
  std::vector<std::shared_ptr<const std::string>> results(16);
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i)
    threads.emplace_back([&, i] {
      results[i] = cache.getOrCreate("k", [&](std::string &) {
        ++creations;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return std::make_shared<const std::string>("kernel");
      });
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(creations.load(), 1);
  for (auto &r : results)
    EXPECT_EQ(r, results[0]);
}

TEST(MemoryCache, FailuresAreNotCached) {
  MemoryCache<int> cache;
  std::string error;
  auto failing = [](std::string &message) {
    message = "nvrtc failed";
    return std::shared_ptr<const int>();
  };
  EXPECT_FALSE(cache.getOrCreate("k", failing, &error));
  EXPECT_EQ(error, "nvrtc failed");
  EXPECT_EQ(cache.size(), 0u);
  auto ok = cache.getOrCreate(
      "k", [](std::string &) { return std::make_shared<const int>(7); });
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 7);
  EXPECT_EQ(cache.find("k"), ok);
}

} // namespace
