//===- SmallCacheConfig.h - a cache small enough for the tests --*- C++ -*-===//
//
// The QuantizedKVCache configuration the unit tests share: two layers, two
// sequences, 2 kv heads of head_dim 64 and a residual of 64 (the presets'
// 128 halved, so that decode steps flush sooner).
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_TEST_UNIT_SMALLCACHECONFIG_H
#define KVQ_TEST_UNIT_SMALLCACHECONFIG_H

#include "kvq/QuantizedKVCache.h"

#include <gtest/gtest.h>

#include <string>

namespace kvq::testing {

inline CacheConfig smallCacheConfig(const std::string &preset) {
  CacheConfig c;
  c.layers = 2;
  c.batch = 2;
  c.kvHeads = 2;
  c.queryHeads = 4;
  c.headDim = 64;
  c.capacity = 1400;
  std::string error;
  EXPECT_TRUE(applyPreset(preset, c, &error)) << error;
  c.residual = 64; // smaller than the presets' 128: more flushes per step
  return c;
}

} // namespace kvq::testing

#endif // KVQ_TEST_UNIT_SMALLCACHECONFIG_H
