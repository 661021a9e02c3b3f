//===- CacheTest.cpp - keys, disk cache, memory cache ---------------------===//

#include "ScratchDirectory.h"

#include "kvq/Cache/Bundle.h"
#include "kvq/Cache/CacheKey.h"
#include "kvq/Cache/DiskCache.h"
#include "kvq/Cache/MemoryCache.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <random>
#include <sys/resource.h>
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
  Entry sampleEntry(const std::string &seed = "a") {
    Entry e;
    KeyInputs in = sampleInputs();
    in.spec += seed;
    e.key = computeKey(in);
    e.info["key_inputs"] = canonicalKeyText(in);
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

  std::string entryPath(const Entry &e) const {
    return dir + "/" + e.key + ".kvqe";
  }
  std::string read(const std::string &path) const {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void write(const std::string &path, const std::string &bytes) const {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }

  kvq::testing::ScratchDirectory scratch{"kvq-cache-test"};
  const std::string root = scratch.path();
  const std::string dir = root + "/cache";
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
  std::string path = entryPath(e);
  auto edit = [&](const std::string &from, const std::string &to) {
    std::string bytes = read(path);
    size_t at = bytes.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    write(path, bytes.replace(at, from.size(), to));
  };
  struct Damage {
    std::string name;
    std::function<void()> apply;
    std::string expected;
  };
  std::vector<Damage> damages = {
      {"truncated", [&] { ::truncate(path.c_str(), 300); }, "is corrupt"},
      {"flipped payload byte",
       [&] {
         std::string bytes = read(path);
         bytes[bytes.size() - 5] ^= 0x20;
         write(path, bytes);
       },
       "does not match its checksum"},
      // What a GPU would run differently: a launch parameter in the
      // manifest. It is covered by the manifest's checksum.
      {"edited manifest", [&] { edit("\"80\"", "\"64\""); },
       "the manifest does not match its checksum"},
      {"garbage", [&] { write(path, "{not json"); }, "not a kvq kernel bundle"},
      {"symlink to a file elsewhere",
       [&] {
         write(root + "/victim", "precious");
         ::unlink(path.c_str());
         ASSERT_EQ(::symlink((root + "/victim").c_str(), path.c_str()), 0);
       },
       "is a symlink or a special file; removed it (not followed)"},
      {"folder under the entry's name",
       [&] {
         ::unlink(path.c_str());
         ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
       },
       "is not a regular file"}};
  for (const Damage &damage : damages) {
    ASSERT_FALSE(static_cast<bool>(cache.store(e))) << damage.name;
    damage.apply();
    std::string problem;
    EXPECT_FALSE(cache.load(e.key, &problem)) << damage.name;
    EXPECT_NE(problem.find(damage.expected), std::string::npos)
        << damage.name << ": " << problem;
    if (damage.name != "folder under the entry's name") {
      EXPECT_FALSE(llvm::sys::fs::exists(path))
          << damage.name << ": the corrupt entry must be removed";
    }
    (void)cache.verify(); // removes anything load left behind
    EXPECT_FALSE(llvm::sys::fs::exists(path)) << damage.name;
    // ... and the next store rebuilds it.
    ASSERT_FALSE(static_cast<bool>(cache.store(e)));
    EXPECT_TRUE(cache.load(e.key)) << damage.name;
    cache.remove(e.key);
  }
  EXPECT_EQ(read(root + "/victim"), "precious")
      << "a link's target is never touched";
}

TEST_F(DiskCacheTest, TwoHundredRandomByteEditsAreAllCaught) {
  DiskCache cache = openCache();
  Entry e = sampleEntry();
  ASSERT_FALSE(static_cast<bool>(cache.store(e)));
  std::string good = read(entryPath(e));
  std::mt19937 rng(13);
  for (int i = 0; i < 200; ++i) {
    std::string bytes = good;
    size_t at = std::uniform_int_distribution<size_t>(0, bytes.size() - 1)(rng);
    bytes[at] ^= char(std::uniform_int_distribution<int>(1, 255)(rng));
    write(entryPath(e), bytes);
    std::string problem;
    EXPECT_FALSE(cache.load(e.key, &problem)) << "edit at byte " << at;
    EXPECT_FALSE(problem.empty());
    // Never a permanently broken key: the rebuild is served again.
    ASSERT_FALSE(static_cast<bool>(cache.store(e)));
    std::optional<Entry> again = cache.load(e.key);
    ASSERT_TRUE(again) << "edit at byte " << at;
    EXPECT_EQ(again->files, e.files);
  }
}

TEST_F(DiskCacheTest, DeeplyNestedManifestIsRefusedNotACrash) {
  DiskCache cache = openCache();
  Entry e = sampleEntry();
  // A well-formed, correctly checksummed entry whose manifest nests 100000
  // levels deep: a recursive JSON parser would overflow its stack.
  std::string manifest = std::string(100000, '[') + std::string(100000, ']');
  write(entryPath(e), "kvq-bundle 1\n" + std::to_string(manifest.size()) + " " +
                          sha256Hex(manifest) + "\n" + manifest);
  std::string problem;
  EXPECT_FALSE(cache.load(e.key, &problem));
  EXPECT_NE(problem.find("manifest nests 100000 levels deep"),
            std::string::npos)
      << problem;
}

TEST_F(DiskCacheTest, ASwappedDirectoryIsNeverReadAfterOpen) {
  // The cache's directory is checked once and used through its descriptor:
  // replacing it afterwards (another user able to write the parent) serves
  // nothing of theirs.
  DiskCache cache = openCache();
  Entry e = sampleEntry();
  ASSERT_FALSE(static_cast<bool>(cache.store(e)));
  std::string attacker = root + "/attacker";
  ASSERT_EQ(::mkdir(attacker.c_str(), 0700), 0);
  Entry forged = e;
  forged.files["kernels.cubin"] = "their code";
  llvm::Expected<std::string> bytes = Bundle::serialize({forged});
  ASSERT_TRUE(static_cast<bool>(bytes));
  write(attacker + "/" + e.key + ".kvqe", *bytes);
  ASSERT_EQ(::rename(dir.c_str(), (root + "/moved").c_str()), 0);
  ASSERT_EQ(::symlink(attacker.c_str(), dir.c_str()), 0);
  std::optional<Entry> loaded = cache.load(e.key);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->files.at("kernels.cubin"), e.files.at("kernels.cubin"));
  // A new open of the swapped path refuses the link.
  llvm::Expected<DiskCache> reopened = DiskCache::open(dir);
  ASSERT_FALSE(static_cast<bool>(reopened));
  EXPECT_NE(llvm::toString(reopened.takeError()).find("symlink"),
            std::string::npos);
}

TEST_F(DiskCacheTest, AFullDiskFailsTheStoreCleanlyAndKeepsEntries) {
  // RLIMIT_FSIZE makes every write past a few bytes fail (EFBIG), as a full
  // disk does (ENOSPC), in a child so the limit stays there.
  DiskCache cache = openCache();
  Entry kept = sampleEntry("kept");
  ASSERT_FALSE(static_cast<bool>(cache.store(kept)));
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit limit = {100, 100};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    llvm::Error error = cache.store(sampleEntry("new"));
    bool failed = static_cast<bool>(error);
    std::string message = failed ? llvm::toString(std::move(error)) : "";
    bool named =
        message.find("cannot write to cache directory") != std::string::npos;
    _exit(failed && named && cache.load(kept.key) ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec))
    EXPECT_EQ(it->path().find(".tmp."), std::string::npos)
        << "leftover " << it->path();
  EXPECT_TRUE(cache.load(kept.key));
}

TEST_F(DiskCacheTest, VerifyAndClearRemoveStraysWithoutFollowingThem) {
  DiskCache cache = openCache();
  Entry e = sampleEntry();
  ASSERT_FALSE(static_cast<bool>(cache.store(e)));
  std::string outside = root + "/outside";
  ASSERT_EQ(::mkdir(outside.c_str(), 0700), 0);
  write(outside + "/keep", "x");
  std::string fakeKey(64, 'a');
  // A link named like an older-format entry folder, and a real one.
  ASSERT_EQ(::symlink(outside.c_str(), (dir + "/" + fakeKey).c_str()), 0);
  std::string legacy = dir + "/" + std::string(64, 'b');
  ASSERT_EQ(::mkdir(legacy.c_str(), 0700), 0);
  write(legacy + "/manifest.json", "{}");
  VerifyReport report = cache.verify();
  EXPECT_EQ(report.intact, 1u);
  EXPECT_EQ(report.removedStrays.size(), 2u);
  EXPECT_FALSE(llvm::sys::fs::exists(legacy));
  EXPECT_EQ(read(outside + "/keep"), "x");
  ASSERT_EQ(::symlink(outside.c_str(), (dir + "/.tmp.zzz").c_str()), 0);
  cache.clear();
  EXPECT_TRUE(cache.list().empty());
  EXPECT_EQ(read(outside + "/keep"), "x");
}

TEST_F(DiskCacheTest, EvictsLeastRecentlyUsedPastTheBound) {
  DiskCache cache = openCache();
  Entry a = sampleEntry("a"), b = sampleEntry("b"), c = sampleEntry("c");
  ASSERT_FALSE(static_cast<bool>(cache.store(a)));
  ASSERT_FALSE(static_cast<bool>(cache.store(b)));
  // Make `a` the oldest, `b` recently used.
  struct utimbuf old = {1000, 1000};
  ::utime(entryPath(a).c_str(), &old);
  ::utime(entryPath(b).c_str(), &old);
  ASSERT_TRUE(cache.load(b.key));
  ::usleep(20000); // file times tick in milliseconds on some file systems
  ASSERT_FALSE(static_cast<bool>(cache.store(c)));
  EXPECT_EQ(cache.list().size(), 3u);
  // A bound of one and a half entries keeps only the newest.
  uint64_t entryBytes = cache.list().front().bytes;
  EXPECT_EQ(cache.prune(entryBytes * 3 / 2), 2u);
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
