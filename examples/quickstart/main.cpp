// kvq quickstart: quantize keys and values KIVI-style and run one fused
// decode-attention step, through the public API only (kvq/kvq.h).
//
// It runs on a GPU when one is present and on the CPU emulator otherwise.
// Linked with kvq::kvq it compiles its kernels on first use; linked with
// kvq::runtime (no compiler) it needs them prebuilt, in the kernel cache or
// a bundle (KVQ_BUNDLE; docs/deploy.md).

#include <kvq/kvq.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

// fp16 bits of a float (round to nearest even; normal range only).
uint16_t toHalf(float x) {
  uint32_t f;
  std::memcpy(&f, &x, 4);
  uint32_t sign = (f >> 16) & 0x8000u;
  int32_t exponent = int32_t((f >> 23) & 0xff) - 127 + 15;
  uint32_t mantissa = f & 0x7fffffu;
  if (exponent <= 0)
    return uint16_t(sign); // flush tiny values to zero
  uint32_t half = sign | (uint32_t(exponent) << 10) | (mantissa >> 13);
  uint32_t rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1)))
    ++half;
  return uint16_t(half);
}

float fromHalf(uint16_t h) {
  int exponent = (h >> 10) & 0x1f;
  float value = std::ldexp(float((h & 0x3ff) | (exponent ? 0x400 : 0)),
                           (exponent ? exponent : 1) - 25);
  return h & 0x8000 ? -value : value;
}

int check(const kvq::Status &status, const char *what) {
  if (status.ok())
    return 0;
  std::fprintf(stderr, "%s: %s\n", what, status.message().c_str());
  return 1;
}

} // namespace

int main() {
  kvq::Status status;
  std::unique_ptr<kvq::Context> context =
      kvq::Context::create(kvq::ContextOptions(), &status);
  if (!context)
    return check(status, "kvq::Context::create");
  std::printf("backend: %s\n", context->backendName());

  // One sequence, 2 kv heads shared by 8 query heads, head_dim 64, 128
  // quantized tokens, 2 sink and 16 residual fp16 tokens.
  const int batch = 1, kvHeads = 2, queryHeads = 8, d = 64, tokens = 128;
  const int sink = 2, residual = 16, rows = batch * kvHeads;
  kvq::KernelSpec keysSpec, valuesSpec, attention;
  kvq::parseKernelSpec("quantize 2c32 d=64", keysSpec);   // KIVI keys
  kvq::parseKernelSpec("quantize 2t32 d=64", valuesSpec); // KIVI values
  kvq::parseKernelSpec("attention k=2c32 v=2t32 d=64 hq=8 hkv=2", attention);

  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  auto halves = [&](size_t n) {
    std::vector<uint16_t> v(n);
    for (uint16_t &x : v)
      x = toHalf(normal(rng));
    return v;
  };
  auto device = [&](const std::vector<uint16_t> *host, size_t bytes) {
    void *p = context->allocate(bytes, &status);
    if (p && host)
      status = context->copyIn(p, host->data(), bytes);
    return p;
  };

  std::vector<uint16_t> k = halves(size_t(rows) * tokens * d),
                        v = halves(size_t(rows) * tokens * d),
                        q = halves(size_t(batch) * queryHeads * d),
                        s = halves(size_t(rows) * sink * d),
                        r = halves(size_t(rows) * residual * d);
  size_t words = size_t(rows) * tokens * d * 2 / 32;
  void *kIn = device(&k, k.size() * 2), *vIn = device(&v, v.size() * 2);
  void *kWords = device(nullptr, words * 4),
       *vWords = device(nullptr, words * 4);
  void *kScales = device(nullptr, size_t(rows) * (tokens / 32) * d * 2);
  void *kZeros = device(nullptr, size_t(rows) * (tokens / 32) * d * 2);
  void *vScales = device(nullptr, size_t(rows) * tokens * (d / 32) * 2);
  void *vZeros = device(nullptr, size_t(rows) * tokens * (d / 32) * 2);

  kvq::QuantizeCall quantizeKeys{kIn,    kWords, kScales, kZeros, rows,
                                 tokens, tokens, tokens,  0};
  kvq::QuantizeCall quantizeValues{vIn,    vWords, vScales, vZeros, rows,
                                   tokens, tokens, tokens,  0};
  if (check(context->quantize(keysSpec, quantizeKeys), "quantize keys") ||
      check(context->quantize(valuesSpec, quantizeValues), "quantize values"))
    return 1;

  std::vector<int32_t> lengths = {sink, tokens, residual};
  kvq::AttentionCall call;
  call.q = device(&q, q.size() * 2);
  call.keyWords = kWords;
  call.keyScales = kScales;
  call.keyZeros = kZeros;
  call.valueWords = vWords;
  call.valueScales = vScales;
  call.valueZeros = vZeros;
  call.sinkKeys = call.sinkValues = device(&s, s.size() * 2);
  call.residualKeys = call.residualValues = device(&r, r.size() * 2);
  call.lengths = static_cast<const int32_t *>(device(nullptr, 12));
  status =
      context->copyIn(const_cast<int32_t *>(call.lengths), lengths.data(), 12);
  call.hostLengths = lengths.data();
  call.out = device(nullptr, q.size() * 2);
  call.batch = batch;
  call.bodyCapacity = tokens;
  call.sinkCapacity = sink;
  call.residualCapacity = residual;
  call.workspace =
      device(nullptr, context->attentionWorkspaceBytes(attention, call));
  if (check(context->attention(attention, call), "attention"))
    return 1;

  std::vector<uint16_t> out(q.size());
  if (check(context->copyOut(out.data(), call.out, out.size() * 2), "copy out"))
    return 1;
  std::printf("out[0][0..3] = %.4f %.4f %.4f %.4f\n", fromHalf(out[0]),
              fromHalf(out[1]), fromHalf(out[2]), fromHalf(out[3]));
  kvq::CacheStatistics stats = context->statistics();
  std::printf("kernels compiled %llu, from disk %llu, from a bundle %llu, "
              "from memory %llu\n",
              (unsigned long long)stats.compiled,
              (unsigned long long)stats.diskHits,
              (unsigned long long)stats.bundleHits,
              (unsigned long long)stats.memoryHits);

  // A bad call is a Status naming the value, not a crash.
  kvq::QuantizeCall bad = quantizeKeys;
  bad.outOffset = 16;
  kvq::Status error = context->quantize(keysSpec, bad);
  std::printf("bad call: %s\n", error.message().c_str());
  return error.code() == kvq::StatusCode::InvalidArgument ? 0 : 1;
}
