//===- MemoryCache.h - per-process kernels, compiled once -------*- C++ -*-===//
//
// A map from key to a shared value with single-flight creation: when many
// threads ask for the same missing key at once, exactly one runs the
// creator and the others wait for its result. A failed creation is not
// cached, so the next request tries again.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CACHE_MEMORYCACHE_H
#define KVQ_CACHE_MEMORYCACHE_H

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace kvq::cache {

template <typename Value> class MemoryCache {
public:
  using Pointer = std::shared_ptr<const Value>;

  /// The value for `key`, created by `create` (which returns null on
  /// failure, filling `error`) if absent. Concurrent callers of one key
  /// share one creation.
  Pointer getOrCreate(const std::string &key,
                      const std::function<Pointer(std::string &error)> &create,
                      std::string *error = nullptr) {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      auto it = slots.find(key);
      if (it == slots.end())
        break;
      if (it->second.value)
        return it->second.value;
      // Someone is creating it: wait, then look again (it may have failed).
      ready.wait(lock);
    }
    slots[key]; // an empty slot marks "being created"
    lock.unlock();
    std::string message;
    Pointer value = create(message);
    lock.lock();
    if (value)
      slots[key].value = value;
    else
      slots.erase(key);
    ready.notify_all();
    if (!value && error)
      *error = message;
    return value;
  }

  /// The value if present (no creation).
  Pointer find(const std::string &key) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = slots.find(key);
    return it == slots.end() ? nullptr : it->second.value;
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex);
    return slots.size();
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = slots.begin(); it != slots.end();)
      it = it->second.value ? slots.erase(it) : std::next(it);
  }

private:
  struct Slot {
    Pointer value;
  };
  mutable std::mutex mutex;
  std::condition_variable ready;
  std::unordered_map<std::string, Slot> slots;
};

} // namespace kvq::cache

#endif // KVQ_CACHE_MEMORYCACHE_H
