//===- CudaDriverTest.cpp - the driver layer against a fake libcuda -------===//
//
// The runtime's CUDA driver layer (entry points resolved with dlsym, then
// called) runs here against fake-driver/FakeCudaDriver.cpp, a libcuda over
// host memory, so a missing or mistyped entry point fails on a machine with
// no GPU instead of crashing on the first one that has.
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/CudaDriver.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <vector>

using namespace kvq;

namespace {

cuda::Driver *fakeDriver() {
  llvm::Expected<cuda::Driver *> driver =
      cuda::Driver::get(KVQ_FAKE_CUDA_DRIVER);
  if (!driver) {
    ADD_FAILURE() << llvm::toString(driver.takeError());
    return nullptr;
  }
  return *driver;
}

TEST(CudaDriverTest, ReadsTheDeviceThroughTheDriver) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  EXPECT_EQ(driver->device().name, "kvq fake device");
  EXPECT_EQ(driver->device().computeCapability, 90);
  EXPECT_EQ(driver->device().smCount, 132);
  EXPECT_EQ(driver->device().memoryBytes, uint64_t(1) << 30);
}

// Every copy direction, the device-to-device one included (its entry point
// was once declared but never resolved: a null call on the first GPU).
TEST(CudaDriverTest, CopiesEveryDirection) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  std::vector<uint32_t> host(1000), back(1000, 0);
  std::iota(host.begin(), host.end(), 7u);
  llvm::Expected<void *> a = driver->allocate(host.size() * 4);
  llvm::Expected<void *> b = driver->allocate(host.size() * 4);
  ASSERT_TRUE(a && b);
  ASSERT_FALSE(static_cast<bool>(
      driver->copyToDevice(*a, host.data(), host.size() * 4)));
  ASSERT_FALSE(
      static_cast<bool>(driver->copyOnDevice(*b, *a, host.size() * 4)));
  ASSERT_FALSE(
      static_cast<bool>(driver->copyToHost(back.data(), *b, back.size() * 4)));
  EXPECT_EQ(back, host);
  EXPECT_FALSE(static_cast<bool>(driver->synchronize()));
  driver->release(*a);
  driver->release(*b);
}

TEST(CudaDriverTest, TimesWorkBetweenEvents) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  int calls = 0;
  llvm::Expected<double> ms = driver->timeMillis([&] {
    ++calls;
    return llvm::Error::success();
  });
  ASSERT_TRUE(static_cast<bool>(ms)) << llvm::toString(ms.takeError());
  EXPECT_EQ(calls, 1);
  EXPECT_GE(*ms, 0.0);
}

TEST(CudaDriverTest, LoadsAModuleAndLaunches) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  llvm::Expected<std::unique_ptr<cuda::LoadedModule>> module =
      driver->load("not really a cubin", "");
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  int value = 3;
  std::vector<void *> args = {&value};
  EXPECT_FALSE(static_cast<bool>(
      (*module)->launch("kernel", {1, 1, 1}, {32, 1, 1}, args, nullptr)));
}

TEST(CudaDriverTest, ADriverLackingAnEntryPointIsRefusedByName) {
  llvm::Expected<cuda::Driver *> driver =
      cuda::Driver::get(KVQ_FAKE_CUDA_DRIVER_WITHOUT_DTOD);
  ASSERT_FALSE(static_cast<bool>(driver));
  std::string message = llvm::toString(driver.takeError());
  EXPECT_NE(message.find("lacks driver API entry points kvq needs: "
                         "cuMemcpyDtoD_v2"),
            std::string::npos)
      << message;
}

} // namespace

namespace {

TEST(CudaDriverTest, CapturesAndReplaysAGraphOnAStream) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  llvm::Expected<void *> stream = driver->createStream();
  ASSERT_TRUE(static_cast<bool>(stream)) << llvm::toString(stream.takeError());
  int queued = 0;
  llvm::Expected<std::unique_ptr<cuda::CapturedGraph>> graph =
      driver->capture(*stream, [&] {
        ++queued;
        return llvm::Error::success();
      });
  ASSERT_TRUE(static_cast<bool>(graph)) << llvm::toString(graph.takeError());
  EXPECT_EQ(queued, 1);
  EXPECT_FALSE(static_cast<bool>((*graph)->launch(*stream)));
  EXPECT_FALSE(static_cast<bool>(driver->synchronize(*stream)));
  graph->reset();
  driver->destroyStream(*stream);
}

TEST(CudaDriverTest, AFailedCaptureReportsWhy) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  // The default stream cannot be captured.
  llvm::Expected<std::unique_ptr<cuda::CapturedGraph>> graph =
      driver->capture(nullptr, [] { return llvm::Error::success(); });
  ASSERT_FALSE(static_cast<bool>(graph));
  EXPECT_NE(llvm::toString(graph.takeError()).find("cuStreamBeginCapture"),
            std::string::npos);
  // Work that fails: its error comes back, and the stream is usable after.
  llvm::Expected<void *> stream = driver->createStream();
  ASSERT_TRUE(static_cast<bool>(stream));
  graph = driver->capture(*stream, [] {
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "launch refused");
  });
  ASSERT_FALSE(static_cast<bool>(graph));
  EXPECT_EQ(llvm::toString(graph.takeError()), "launch refused");
  graph = driver->capture(*stream, [] { return llvm::Error::success(); });
  EXPECT_TRUE(static_cast<bool>(graph)) << llvm::toString(graph.takeError());
  graph->reset();
  driver->destroyStream(*stream);
}

} // namespace
