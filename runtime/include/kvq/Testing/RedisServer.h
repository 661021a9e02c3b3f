//===- RedisServer.h - a private redis-server for tests ---------*- C++ -*-===//

#ifndef KVQ_TESTING_REDISSERVER_H
#define KVQ_TESTING_REDISSERVER_H

#include "kvq/Cache/RemoteCache.h"

#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char **environ;

namespace kvq::testing {

/// A redis-server of this test's own on a free port of 127.0.0.1 (so a
/// test may kill it), stopped when the object goes. `running()` is false
/// when none could be started (redis-server not installed).
class RedisServer {
public:
  RedisServer() {
    port_ = freePort();
    std::string portText = std::to_string(port_);
    const char *argv[] = {
        "redis-server", "--port", portText.c_str(), "--bind", "127.0.0.1",
        "--save",       "",       "--appendonly",   "no",     "--loglevel",
        "warning",      nullptr};
    // Its log (start-up banner, warnings about the host) is not ours.
    posix_spawn_file_actions_t quiet;
    posix_spawn_file_actions_init(&quiet);
    posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&quiet, 2, "/dev/null", O_WRONLY, 0);
    int spawned = posix_spawnp(&pid_, "redis-server", &quiet, nullptr,
                               const_cast<char **>(argv), environ);
    posix_spawn_file_actions_destroy(&quiet);
    if (spawned != 0) {
      pid_ = -1;
      return;
    }
    cache::RemoteOptions options = this->options("readiness-probe-key-0123");
    for (int i = 0; i < 100; ++i) {
      if (auto remote = cache::RemoteCache::connect(options)) {
        ready_ = true;
        return;
      } else {
        llvm::consumeError(remote.takeError());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~RedisServer() { kill(); }

  bool running() const { return ready_ && pid_ > 0; }
  int port() const { return port_; }
  std::string url() const {
    return "redis://127.0.0.1:" + std::to_string(port_) + "/0";
  }
  cache::RemoteOptions options(const std::string &signingKey) const {
    cache::RemoteOptions o;
    o.port = port_;
    o.signingKey = signingKey;
    return o;
  }

  /// Stops the server now (SIGKILL: as a crash would).
  void kill() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

private:
  static int freePort() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    ::bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address);
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length);
    ::close(fd);
    return ntohs(address.sin_port);
  }

  pid_t pid_ = -1;
  int port_ = 0;
  bool ready_ = false;
};

} // namespace kvq::testing

#endif // KVQ_TESTING_REDISSERVER_H
