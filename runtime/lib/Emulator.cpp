//===- Emulator.cpp - run generated CUDA on the CPU -----------------------===//
//
// One boost::context fiber per CUDA thread; a block runs on one OS thread,
// blocks spread over a pool. A thread runs until it reaches a collective
// (barrier or shuffle) or exits; the block's scheduler then resolves the
// collectives whose participants have all arrived, or reports divergence or
// deadlock. Built with exceptions: destroying a fiber that stopped on an
// error unwinds its stack.
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/Emulator.h"

#include "HostParallel.h"

#include "emulator/kvq_emulator_abi.h"
#include "kvq/Support/FileIO.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define KVQ_ASAN_FIBERS 1
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

using namespace kvq;
using namespace kvq::emu;
namespace ctx = boost::context;

namespace {

//===----------------------------------------------------------------------===//
// The ABI shared with the shim: one definition, emulator/kvq_emulator_abi.h
//===----------------------------------------------------------------------===//

using kvq_emu::Hooks;
using kvq_emu::Ids;

//===----------------------------------------------------------------------===//
// Device memory
//===----------------------------------------------------------------------===//

std::mutex memoryMutex;
std::map<uintptr_t, size_t> allocations; // base -> size

/// True if [address, address + bytes) lies inside one allocation.
bool isAllocated(const void *address, size_t bytes) {
  auto p = reinterpret_cast<uintptr_t>(address);
  std::lock_guard<std::mutex> lock(memoryMutex);
  auto it = allocations.upper_bound(p);
  if (it == allocations.begin())
    return false;
  --it;
  return p >= it->first && p + bytes <= it->first + it->second;
}

//===----------------------------------------------------------------------===//
// Threads, blocks, scheduling
//===----------------------------------------------------------------------===//

enum class State { Runnable, AtBarrier, AtShuffle, Finished, Failed };

struct Thread {
  unsigned index = 0;
  Ids ids{};
  State state = State::Runnable;
  ctx::fiber fiber;
  ctx::fiber sink; // the scheduler, while this thread runs
  // Stack bounds for AddressSanitizer's fiber switch annotations: this
  // thread's fiber stack, and the scheduler's stack it switches back to.
  const void *stackBottom = nullptr, *schedulerBottom = nullptr;
  size_t stackSize = 0, schedulerSize = 0;
  unsigned shuffleMask = 0;
  int shuffleLaneMask = 0;
  unsigned long long shuffleValue = 0, shuffleResult = 0;
  /// A warp all-gather (shuffleMask all lanes, laneMask unused): this
  /// lane's bytes and where every lane's go; 0 bytes for a plain shuffle.
  const void *gatherMine = nullptr;
  void *gatherAll = nullptr;
  unsigned gatherBytes = 0;
  int barrierLine = 0; ///< source line of the __syncthreads it waits at
  std::vector<uint32_t> siteExecutions;
};

/// One warp-level memory request: the accesses of its lanes.
struct Request {
  std::vector<std::pair<uintptr_t, unsigned>> accesses;
};

struct RequestKey {
  int site;
  unsigned warp;
  uint32_t execution;
  bool operator<(const RequestKey &o) const {
    return std::tie(site, warp, execution) <
           std::tie(o.site, o.warp, o.execution);
  }
};

struct Block {
  std::vector<Thread> threads;
  /// Shared memory: poisoned (0xFF: NaN as floats) at every block start, as
  /// a GPU leaves it uninitialised, with a byte map of what any thread of
  /// the block has written since.
  std::vector<char> arena;
  std::vector<uint8_t> written;
  size_t arenaUsed = 0;
  std::map<int, size_t> slots; // KVQ_SHARED line -> offset
  std::string error;
  bool trace = false;
  std::map<RequestKey, Request> requests;
  std::map<int, std::pair<bool, unsigned>> siteKinds; // store?, bytes
};

thread_local Block *currentBlock = nullptr;
thread_local Thread *currentThread = nullptr;
constexpr size_t kSharedBytes = 48 * 1024;

//===--- stack switches, annotated for AddressSanitizer -------------------===//
// ASan keeps one shadow stack per OS thread; each switch between fibers
// must tell it which stack runs next, or it reports false errors.

/// Resumes `next`, whose stack is [bottom, bottom + size), until it
/// switches back.
void resume(ctx::fiber &next, const void *bottom, size_t size) {
#ifdef KVQ_ASAN_FIBERS
  void *fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, bottom, size);
#else
  (void)bottom;
  (void)size;
#endif
  next = std::move(next).resume();
#ifdef KVQ_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

/// From the running fiber back to the scheduler.
void switchToScheduler(Thread &t) {
  resume(t.sink, t.schedulerBottom, t.schedulerSize);
}

/// From the scheduler into `t`'s fiber, until it yields or ends.
void switchToThread(Thread &t) { resume(t.fiber, t.stackBottom, t.stackSize); }

/// Allocates fiber stacks and remembers their bounds for ASan. A kernel
/// compiled for the host keeps its registers in the frame: the tensor-core
/// attention at head_dim 256 needed more than 64 KiB under ASan (which
/// found it writing past its stack). 256 KiB from malloc: a guarded stack
/// (mmap + mprotect per thread) made the numerics tests 2.5x slower.
struct RecordingStack {
  ctx::fixedsize_stack stacks{256 * 1024};
  Thread *thread = nullptr;
  ctx::stack_context allocate() {
    ctx::stack_context sc = stacks.allocate();
    thread->stackBottom = static_cast<char *>(sc.sp) - sc.size;
    thread->stackSize = sc.size;
    return sc;
  }
  void deallocate(ctx::stack_context &sc) noexcept { stacks.deallocate(sc); }
};

/// Stops the current thread with `message`; it is never resumed.
[[noreturn]] void failThread(const std::string &message) {
  Thread *t = currentThread;
  if (currentBlock->error.empty()) {
    std::ostringstream os;
    os << message << " (thread " << t->ids.threadIdx.x << " of block ("
       << t->ids.blockIdx.x << ", " << t->ids.blockIdx.y << ", "
       << t->ids.blockIdx.z << "))";
    currentBlock->error = os.str();
  }
  t->state = State::Failed;
  switchToScheduler(*t);
  // Only reached if the scheduler resumed a failed thread, which it never
  // does; unwinding on destruction leaves through resume() above.
  std::abort();
}

void yieldToScheduler() { switchToScheduler(*currentThread); }

void trace(int site, const void *address, unsigned bytes, bool store) {
  Block *block = currentBlock;
  Thread *t = currentThread;
  if (t->siteExecutions.size() <= static_cast<size_t>(site))
    t->siteExecutions.resize(site + 1, 0);
  RequestKey key{site, t->index / 32, t->siteExecutions[site]++};
  block->requests[key].accesses.emplace_back(
      reinterpret_cast<uintptr_t>(address), bytes);
  block->siteKinds[site] = {store, bytes};
}

void checkGlobal(int site, const void *address, unsigned bytes,
                 const char *what) {
  if (reinterpret_cast<uintptr_t>(address) % bytes != 0) {
    std::ostringstream os;
    os << "misaligned " << bytes << "-byte " << what << " at site " << site
       << " (address " << address << ")";
    failThread(os.str());
  }
  if (!isAllocated(address, bytes)) {
    std::ostringstream os;
    os << "out-of-bounds " << bytes << "-byte " << what << " at site " << site
       << " (address " << address << " is not inside a device allocation)";
    failThread(os.str());
  }
}

void hookLoad(int site, const void *address, unsigned bytes, void *out) {
  checkGlobal(site, address, bytes, "global load");
  if (currentBlock->trace)
    trace(site, address, bytes, false);
  std::memcpy(out, address, bytes);
}

void hookStore(int site, void *address, unsigned bytes, const void *in) {
  checkGlobal(site, address, bytes, "global store");
  if (currentBlock->trace)
    trace(site, address, bytes, true);
  std::memcpy(address, in, bytes);
}

int hookAtomicAdd(int site, int *address, int value) {
  checkGlobal(site, address, sizeof(int), "global atomic");
  if (currentBlock->trace) {
    trace(site, address, sizeof(int), false);
    trace(site, address, sizeof(int), true);
  }
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

void hookCheckShared(int site, const void *address, unsigned bytes, int store) {
  Block *block = currentBlock;
  auto p = reinterpret_cast<const char *>(address);
  if (p < block->arena.data() ||
      p + bytes > block->arena.data() + block->arenaUsed) {
    std::ostringstream os;
    os << "out-of-bounds shared access at site " << site;
    failThread(os.str());
  }
  // A GPU faults on a 64/128-bit shared access that is not aligned to its
  // size; so does the emulator.
  if ((bytes == 8 || bytes == 16) && uintptr_t(p) % bytes != 0) {
    std::ostringstream os;
    os << "misaligned " << bytes * 8 << "-bit shared access at site " << site;
    failThread(os.str());
  }
  size_t offset = size_t(p - block->arena.data());
  uint8_t *mark = block->written.data() + offset;
  if (store) {
    std::memset(mark, 1, bytes);
    return;
  }
  // On a GPU this read returns whatever the memory held: garbage, possibly
  // NaN. Whether or not the kernel would discard it, it is a bug.
  for (unsigned i = 0; i < bytes; ++i)
    if (!mark[i]) {
      std::ostringstream os;
      os << "read of shared memory no thread of this block wrote at site "
         << site << " (byte " << offset + i << " of the block's "
         << block->arenaUsed << ")";
      failThread(os.str());
    }
}

void *hookShared(int slot, unsigned bytes) {
  Block *block = currentBlock;
  auto it = block->slots.find(slot);
  if (it != block->slots.end())
    return block->arena.data() + it->second;
  size_t offset = (block->arenaUsed + 15) / 16 * 16;
  if (offset + bytes > kSharedBytes)
    failThread("shared memory exceeds 48 KiB");
  block->slots[slot] = offset;
  block->arenaUsed = offset + bytes;
  return block->arena.data() + offset;
}

void hookSyncthreads(int line) {
  currentThread->state = State::AtBarrier;
  currentThread->barrierLine = line;
  yieldToScheduler();
}

unsigned long long hookShflXor(unsigned mask, unsigned long long value,
                               int laneMask) {
  Thread *t = currentThread;
  t->state = State::AtShuffle;
  t->shuffleMask = mask;
  t->shuffleLaneMask = laneMask;
  t->shuffleValue = value;
  t->gatherBytes = 0;
  yieldToScheduler();
  return t->shuffleResult;
}

void hookWarpAllGather(const void *mine, unsigned bytes, void *all) {
  Thread *t = currentThread;
  t->state = State::AtShuffle;
  t->shuffleMask = 0xffffffffu;
  t->shuffleLaneMask = 0;
  t->gatherMine = mine;
  t->gatherAll = all;
  t->gatherBytes = bytes;
  yieldToScheduler();
}

Hooks hooks = {hookLoad,        hookStore,   hookCheckShared,   hookShared,
               hookSyncthreads, hookShflXor, hookWarpAllGather, hookAtomicAdd};

const char *stateName(State s) {
  switch (s) {
  case State::Runnable:
    return "runnable";
  case State::AtBarrier:
    return "at __syncthreads";
  case State::AtShuffle:
    return "at __shfl_xor_sync";
  case State::Finished:
    return "exited";
  case State::Failed:
    return "failed";
  }
  return "?";
}

/// Resolves the shuffles of every warp whose lanes have all arrived.
/// Returns false (and sets the block's error) on a divergent collective.
bool resolveShuffles(Block &block, bool &progress) {
  size_t n = block.threads.size();
  for (size_t base = 0; base < n; base += 32) {
    size_t end = std::min(n, base + 32);
    bool any = false;
    for (size_t i = base; i < end; ++i)
      any |= block.threads[i].state == State::AtShuffle;
    if (!any)
      continue;
    const Thread &first = *std::find_if(
        block.threads.begin() + base, block.threads.begin() + end,
        [](const Thread &t) { return t.state == State::AtShuffle; });
    for (size_t i = base; i < end; ++i) {
      const Thread &t = block.threads[i];
      if (!(first.shuffleMask >> (i - base) & 1))
        continue;
      if (t.state != State::AtShuffle ||
          t.shuffleLaneMask != first.shuffleLaneMask ||
          t.gatherBytes != first.gatherBytes) {
        std::ostringstream os;
        os << "divergent __shfl_xor_sync in warp " << base / 32 << ": lane "
           << first.index - base << " waits at a shuffle but lane " << i - base
           << " is " << stateName(t.state);
        if (t.state == State::AtShuffle)
          os << (t.gatherBytes != first.gatherBytes
                     ? " of another kind (shuffle / warp all-gather)"
                     : " with another lane mask");
        block.error = os.str();
        return false;
      }
    }
    if (first.gatherBytes) { // every lane's bytes to every lane
      if (end - base != 32) {
        block.error = "a warp all-gather (mma.sync) needs 32 lanes, warp " +
                      std::to_string(base / 32) + " has " +
                      std::to_string(end - base);
        return false;
      }
      for (size_t i = base; i < end; ++i) {
        Thread &t = block.threads[i];
        for (size_t j = base; j < end; ++j)
          std::memcpy(static_cast<char *>(t.gatherAll) +
                          (j - base) * t.gatherBytes,
                      block.threads[j].gatherMine, t.gatherBytes);
      }
      for (size_t i = base; i < end; ++i)
        block.threads[i].state = State::Runnable;
      progress = true;
      continue;
    }
    for (size_t i = base; i < end; ++i) {
      Thread &t = block.threads[i];
      if (t.state != State::AtShuffle)
        continue;
      size_t partner = base + ((i - base) ^ t.shuffleLaneMask);
      t.shuffleResult =
          partner < end ? block.threads[partner].shuffleValue : t.shuffleValue;
      t.state = State::Runnable;
    }
    progress = true;
  }
  return true;
}

using Trampoline = void (*)(void **);
using SetIds = void (*)(const Ids *);

/// A block stopped by an error: its threads still waiting at a collective
/// are destroyed by unwinding their stacks, a switch ASan cannot be told
/// about (Boost makes it); a sanitizer build leaks them instead.
void abandonSuspended(Block &block) {
#ifdef KVQ_ASAN_FIBERS
  for (Thread &t : block.threads)
    if (t.fiber)
      new ctx::fiber(std::move(t.fiber)); // deliberately leaked
#else
  (void)block;
#endif
}

/// Runs one block to completion (or to its first error).
void runBlock(Block &block, Trampoline trampoline, SetIds setIds, void **args,
              Dim3 grid, Dim3 blockDim, unsigned bx, unsigned by, unsigned bz,
              Schedule schedule) {
  currentBlock = &block;
  unsigned count = blockDim.x * blockDim.y * blockDim.z;
  block.threads.resize(count);
  block.arena.assign(kSharedBytes, char(0xFF));
  block.written.assign(kSharedBytes, 0);
  RecordingStack stacks;
  for (unsigned i = 0; i < count; ++i) {
    Thread &t = block.threads[i];
    t.index = i;
    t.ids = {{i % blockDim.x, i / blockDim.x % blockDim.y,
              i / (blockDim.x * blockDim.y)},
             {bx, by, bz},
             {blockDim.x, blockDim.y, blockDim.z},
             {grid.x, grid.y, grid.z}};
    stacks.thread = &t;
    t.fiber = ctx::fiber(
        std::allocator_arg, stacks, [&t, trampoline, args](ctx::fiber &&sink) {
#ifdef KVQ_ASAN_FIBERS
          __sanitizer_finish_switch_fiber(nullptr, &t.schedulerBottom,
                                          &t.schedulerSize);
#endif
          t.sink = std::move(sink);
          trampoline(args);
          t.state = State::Finished;
#ifdef KVQ_ASAN_FIBERS
          // This fiber ends: nothing to save.
          __sanitizer_start_switch_fiber(nullptr, t.schedulerBottom,
                                         t.schedulerSize);
#endif
          return std::move(t.sink);
        });
  }

  while (true) {
    for (unsigned k = 0; k < count; ++k) {
      Thread &t =
          block.threads[schedule == Schedule::Forward ? k : count - 1 - k];
      if (t.state != State::Runnable)
        continue;
      currentThread = &t;
      setIds(&t.ids);
      switchToThread(t);
      if (!block.error.empty())
        return abandonSuspended(block);
    }
    bool progress = false;
    if (!resolveShuffles(block, progress))
      return abandonSuspended(block);
    if (progress)
      continue;
    bool anyLive = false, allAtBarrier = true;
    for (const Thread &t : block.threads) {
      if (t.state == State::Finished)
        continue;
      anyLive = true;
      allAtBarrier &= t.state == State::AtBarrier;
    }
    if (!anyLive)
      return;
    if (allAtBarrier) {
      // A GPU releases a barrier when the block's threads reach *that*
      // __syncthreads; threads waiting at different ones hang or corrupt
      // each other's shared memory there, so they are an error here.
      const Thread *first = nullptr;
      for (const Thread &t : block.threads) {
        if (t.state != State::AtBarrier)
          continue;
        if (!first) {
          first = &t;
        } else if (t.barrierLine != first->barrierLine) {
          std::ostringstream os;
          os << "divergent __syncthreads in block (" << bx << ", " << by << ", "
             << bz << "): thread " << first->index
             << " waits at the barrier on line " << first->barrierLine
             << " of the kernel source, thread " << t.index
             << " at the one on line " << t.barrierLine;
          block.error = os.str();
          return abandonSuspended(block);
        }
      }
      for (Thread &t : block.threads)
        if (t.state == State::AtBarrier)
          t.state = State::Runnable;
      continue;
    }
    std::ostringstream os;
    os << "deadlock in block (" << bx << ", " << by << ", " << bz << "):";
    for (const Thread &t : block.threads)
      if (t.state != State::Finished) {
        os << " thread " << t.index << " is " << stateName(t.state) << ";";
        if (os.tellp() > 300)
          break;
      }
    block.error = os.str();
    return abandonSuspended(block);
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Public API
//===----------------------------------------------------------------------===//

void *kvq::emu::deviceAlloc(size_t bytes) {
  if (bytes > (size_t(1) << 40)) // also keeps the rounding below from wrapping
    return nullptr;
  size_t rounded = std::max<size_t>(256, (bytes + 255) / 256 * 256);
  void *p = std::aligned_alloc(256, rounded);
  if (!p)
    return nullptr;
  std::memset(p, 0xFF, rounded);
  std::lock_guard<std::mutex> lock(memoryMutex);
  allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  return p;
}

bool kvq::emu::deviceFree(void *pointer) {
  if (!pointer)
    return true;
  {
    std::lock_guard<std::mutex> lock(memoryMutex);
    if (!allocations.erase(reinterpret_cast<uintptr_t>(pointer)))
      return false;
  }
  std::free(pointer);
  return true;
}

bool kvq::emu::isDeviceRange(const void *address, size_t bytes) {
  return isAllocated(address, bytes);
}

struct Module::Impl {
  void *handle = nullptr;
  SetIds setIds = nullptr;
  std::map<std::string, Trampoline> kernels;
  ~Impl() {
    if (handle)
      dlclose(handle);
  }
};

Module::~Module() = default;

const char *kvq::emu::hostCompiler() {
  const char *cxx = std::getenv("CXX");
  return cxx && *cxx ? cxx : "c++";
}
const std::vector<std::string> &kvq::emu::hostFlags() {
  static const std::vector<std::string> flags = {
      "-std=c++17",
      "-O1",
      "-fno-strict-aliasing",
      "-fwrapv",
      "-ffp-contract=off",
      "-shared",
      "-fPIC",
      "-w",
#ifdef KVQ_SANITIZE_EMULATOR_KERNELS
      // A sanitizer build checks the generated kernels too.
      "-fsanitize=address,undefined",
      "-fno-omit-frame-pointer",
#endif
  };
  return flags;
}

/// The first line `compiler --version` prints ("c++ (Debian 12.2.0-14)
/// 12.2.0"), once per compiler name: an upgraded host compiler builds new
/// emulator kernels rather than reusing the old ones.
static std::string compilerVersion(const std::string &compiler) {
  static std::mutex mutex;
  static std::map<std::string, std::string> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(compiler);
  if (it != known.end())
    return it->second;
  std::string line = "unknown version";
  if (compiler.find('\'') == std::string::npos)
    if (FILE *pipe = ::popen(
            ("'" + compiler + "' --version 2>/dev/null").c_str(), "r")) {
      char buffer[256];
      if (std::fgets(buffer, sizeof buffer, pipe)) {
        line = buffer;
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
          line.pop_back();
      }
      ::pclose(pipe);
    }
  return known.emplace(compiler, line).first->second;
}

std::string kvq::emu::hostCompilerIdentity() {
  std::string id = hostCompiler();
  for (const std::string &flag : hostFlags())
    id += " " + flag;
  return id + " [" + compilerVersion(hostCompiler()) + "]";
}

llvm::Expected<std::unique_ptr<Module>>
Module::load(const std::string &library,
             const std::vector<GeneratedKernel> &kernels) {
  auto module = std::unique_ptr<Module>(new Module());
  module->impl = std::make_unique<Impl>();

  module->impl->handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!module->impl->handle)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   std::string("dlopen failed: ") + dlerror());
  auto install = reinterpret_cast<void (*)(Hooks *)>(
      dlsym(module->impl->handle, "kvq_emu_install"));
  module->impl->setIds =
      reinterpret_cast<SetIds>(dlsym(module->impl->handle, "kvq_emu_set_ids"));
  if (!install || !module->impl->setIds)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   library +
                                       " lacks the emulator entry points");
  install(&hooks);
  for (const GeneratedKernel &kernel : kernels) {
    auto entry = reinterpret_cast<Trampoline>(
        dlsym(module->impl->handle, ("kvq_emu_launch_" + kernel.name).c_str()));
    if (!entry)
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "no trampoline for " + kernel.name);
    module->impl->kernels[kernel.name] = entry;
  }
  return module;
}

llvm::Expected<std::unique_ptr<Module>>
Module::loadImage(const std::string &image,
                  const std::vector<GeneratedKernel> &kernels) {
  if (image.empty())
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "no emulator shared object to load");
  auto writeImage = [&](int fd) { return kvq::writeAll(fd, image) == 0; };
  // A sealed memfd: its bytes are the verified ones, and no path names it.
  int fd = ::memfd_create("kvq-kernels", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd >= 0 && writeImage(fd) &&
      ::fcntl(fd, F_ADD_SEALS,
              F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) == 0) {
    llvm::Expected<std::unique_ptr<Module>> module =
        load("/proc/self/fd/" + std::to_string(fd), kernels);
    ::close(fd);
    if (module)
      return module;
    llvm::consumeError(module.takeError()); // e.g. no /proc: try a file
  } else if (fd >= 0) {
    ::close(fd);
  }
  const char *tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/kvq-kernels-XXXXXX";
  std::vector<char> folder(pattern.begin(), pattern.end());
  folder.push_back('\0');
  if (!::mkdtemp(folder.data())) // 0700, a new name: ours alone
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        std::string("cannot create a private folder for an emulator "
                    "kernel: ") +
            std::strerror(errno));
  std::string path = std::string(folder.data()) + "/kernels.so";
  int file = ::open(path.c_str(),
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  bool written = file >= 0 && writeImage(file);
  if (file >= 0 && ::close(file) != 0)
    written = false;
  llvm::Expected<std::unique_ptr<Module>> module =
      written ? load(path, kernels)
              : llvm::Expected<std::unique_ptr<Module>>(llvm::createStringError(
                    llvm::inconvertibleErrorCode(),
                    "cannot write " + path + ": " + std::strerror(errno)));
  ::unlink(path.c_str());
  ::rmdir(folder.data());
  return module;
}

llvm::Error Module::launch(const std::string &kernel, Dim3 grid, Dim3 block,
                           const std::vector<void *> &args,
                           const LaunchOptions &options) {
  auto it = impl->kernels.find(kernel);
  if (it == impl->kernels.end())
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "no kernel named '" + kernel + "'");
  unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 ||
      grid.z == 0)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "bad launch geometry for " + kernel);
  uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  unsigned workers = options.hostThreads ? options.hostThreads
                                         : std::thread::hardware_concurrency();
  workers = std::max<unsigned>(1, std::min<uint64_t>(workers, blocks));

  std::atomic<uint64_t> next{0};
  std::mutex resultMutex;
  std::string firstError;
  std::map<int, SiteTraffic> sites;
  std::map<int, std::set<uint64_t>> siteSectors;
  std::set<uint64_t> uniqueSectors;
  std::vector<void *> argv(args);
  Trampoline trampoline = it->second;
  SetIds setIds = impl->setIds;

  auto worker = [&]() {
    while (true) {
      uint64_t b = next.fetch_add(1);
      if (b >= blocks)
        return;
      {
        std::lock_guard<std::mutex> lock(resultMutex);
        if (!firstError.empty())
          return;
      }
      Block state;
      state.trace = options.traceTraffic;
      unsigned bx = b % grid.x, by = b / grid.x % grid.y,
               bz = b / (uint64_t(grid.x) * grid.y);
      runBlock(state, trampoline, setIds, argv.data(), grid, block, bx, by, bz,
               options.schedule);
      std::lock_guard<std::mutex> lock(resultMutex);
      if (!state.error.empty() && firstError.empty())
        firstError = state.error;
      for (auto &[key, request] : state.requests) {
        auto [store, bytes] = state.siteKinds[key.site];
        SiteTraffic &s = sites[key.site];
        s.site = key.site;
        s.store = store;
        s.accessBytes = bytes;
        s.requests++;
        std::set<uint64_t> requestSectors;
        std::set<uintptr_t> requestBytes;
        for (auto [address, size] : request.accesses) {
          s.lowestAddress = std::min(s.lowestAddress, address);
          s.highestAddress =
              std::max<uintptr_t>(s.highestAddress, address + size - 1);
          for (uintptr_t a = address; a < address + size; ++a)
            requestBytes.insert(a);
          for (uint64_t sector = address / 32;
               sector <= (address + size - 1) / 32; ++sector) {
            requestSectors.insert(sector);
            siteSectors[key.site].insert(sector);
            if (!store)
              uniqueSectors.insert(sector);
          }
        }
        s.sectors += requestSectors.size();
        s.usefulBytes += requestBytes.size();
      }
      // Fibers are destroyed with `state` (a failed one unwinds).
    }
  };
  runOnHostThreads(workers, worker);

  if (options.traceTraffic) {
    traffic = TrafficReport();
    traffic.kernel = kernel;
    for (auto &[site, s] : sites) {
      s.uniqueSectors = siteSectors[site].size();
      traffic.sites.push_back(s);
      if (!s.store)
        traffic.loadRequests += s.requests;
    }
    traffic.uniqueLoadSectors = uniqueSectors.size();
  }
  if (!firstError.empty())
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   kernel + ": " + firstError);
  return llvm::Error::success();
}
