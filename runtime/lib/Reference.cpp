//===- Reference.cpp - plain C++ semantics of every kvq kernel ------------===//

#include "kvq/Runtime/Reference.h"

#include "HostParallel.h"

#include "kvq/Dialect/KVQ/IR/ZeroPointSearch.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

using namespace kvq;
using namespace kvq::ref;

//===----------------------------------------------------------------------===//
// Half types
//===----------------------------------------------------------------------===//

uint16_t ref::toHalfBits(float x, HalfType type) {
  if (type == HalfType::F16) {
    _Float16 h = static_cast<_Float16>(x); // round to nearest even
    uint16_t bits;
    std::memcpy(&bits, &h, sizeof bits);
    return bits;
  }
  uint32_t f;
  std::memcpy(&f, &x, sizeof f);
  if ((f & 0x7fffffffu) > 0x7f800000u) // NaN: keep it quiet
    return static_cast<uint16_t>((f >> 16) | 0x40);
  f += 0x7fffu + ((f >> 16) & 1u); // round to nearest even
  return static_cast<uint16_t>(f >> 16);
}

const float *ref::halfValues() {
  static const std::vector<float> table = [] {
    std::vector<float> all(1u << 16);
    for (uint32_t i = 0; i < all.size(); ++i) {
      uint16_t b = uint16_t(i);
      _Float16 h;
      std::memcpy(&h, &b, sizeof h);
      all[i] = static_cast<float>(h);
    }
    return all;
  }();
  return table.data();
}

float ref::fromHalfBits(uint16_t bits, HalfType type) {
  if (type == HalfType::F16)
    return halfValues()[bits];
  uint32_t f = uint32_t(bits) << 16;
  float x;
  std::memcpy(&x, &f, sizeof x);
  return x;
}

//===----------------------------------------------------------------------===//
// FP8
//===----------------------------------------------------------------------===//

namespace {
/// A format's mantissa bits, exponent bias and largest finite value.
struct Fp8Shape {
  int mantissaBits, bias;
  double largest;
};
Fp8Shape fp8Shape(ref::Fp8Format format) {
  return format == ref::Fp8Format::E4M3 ? Fp8Shape{3, 7, 448.0}
                                        : Fp8Shape{2, 15, 57344.0};
}
} // namespace

uint8_t ref::toFp8Bits(float x, Fp8Format format) {
  Fp8Shape f = fp8Shape(format);
  uint8_t sign = std::signbit(x) ? 0x80 : 0;
  if (std::isnan(x))
    return sign | 0x7F;
  // Saturate first: anything from the largest value up rounds to it (the
  // next step up is NaN or infinity, which SATFINITE never gives).
  double a = std::min(std::fabs(double(x)), f.largest);
  if (a == 0)
    return sign;
  // The spacing of the format's values around a: 2^(e - mantissa bits),
  // subnormals sharing the smallest normal binade's (e = 1 - bias).
  int e = std::max(std::ilogb(a), 1 - f.bias);
  double quantum = std::ldexp(1.0, e - f.mantissaBits);
  double units = std::nearbyint(a / quantum); // ties to even: exact here
  // units in [0, 2^(m+1)]: 2^(m+1) is the next binade's first value.
  int mantissaOne = 1 << f.mantissaBits;
  if (units >= 2 * mantissaOne) {
    units /= 2;
    ++e;
  }
  int code = int(units);
  if (code < mantissaOne) // subnormal (e is the smallest normal exponent)
    return sign | uint8_t(code);
  return sign | uint8_t((e + f.bias) << f.mantissaBits) |
         uint8_t(code - mantissaOne);
}

float ref::largestFp8(Fp8Format format) {
  return float(fp8Shape(format).largest);
}

float ref::fromFp8Bits(uint8_t bits, Fp8Format format) {
  Fp8Shape f = fp8Shape(format);
  int mantissaMask = (1 << f.mantissaBits) - 1;
  int exponent = (bits & 0x7F) >> f.mantissaBits;
  int mantissa = bits & mantissaMask;
  int top = 0x7F >> f.mantissaBits; // the all-ones exponent
  float sign = bits & 0x80 ? -1.0f : 1.0f;
  if (format == Fp8Format::E4M3 && exponent == top && mantissa == mantissaMask)
    return std::numeric_limits<float>::quiet_NaN();
  if (format == Fp8Format::E5M2 && exponent == top)
    return mantissa ? std::numeric_limits<float>::quiet_NaN()
                    : sign * std::numeric_limits<float>::infinity();
  if (exponent == 0)
    return sign *
           float(std::ldexp(double(mantissa), 1 - f.bias - f.mantissaBits));
  return sign * float(std::ldexp(double(mantissa + (1 << f.mantissaBits)),
                                 exponent - f.bias - f.mantissaBits));
}

float ref::roundToHalf(float x, HalfType type) {
  return fromHalfBits(toHalfBits(x, type), type);
}

float ref::roundToStorage(float x, const QuantScheme &scheme) {
  return scheme.fp32Scales ? x : roundToHalf(x, HalfType::F16);
}

int ref::wordsPerRow(const QuantScheme &scheme, int headDim) {
  return scheme.axis == QuantScheme::Axis::Token ? headDim * scheme.bits / 32
                                                 : headDim;
}

//===----------------------------------------------------------------------===//
// Codes
//===----------------------------------------------------------------------===//

namespace {

int codesPerWord(const QuantScheme &s) { return 32 / s.bits; }
unsigned maxCode(const QuantScheme &s) { return (1u << s.bits) - 1; }
float symmetricMax(const QuantScheme &s) {
  return float((1 << (s.bits - 1)) - 1);
}

/// Bit offset of logical code j (ARCHITECTURE.md section 4, `order`).
unsigned slotShift(const QuantScheme &s, int j) {
  if (!s.interleaved)
    return j * s.bits;
  int n = codesPerWord(s);
  int slot = j % 2 == 0 ? j / 2 : j / 2 + n / 2;
  return slot * s.bits;
}

struct ScaleZero {
  float scale, zero;
};

/// Scale and zero point of a group; fmin/fmax skip NaNs, so one NaN does not
/// poison its group's range.
ScaleZero groupScale(const QuantScheme &s, const std::vector<float> &x) {
  if (s.symmetric) {
    float amax = 0;
    for (float v : x)
      amax = std::fmax(amax, std::fabs(v));
    return {roundToStorage(amax / symmetricMax(s), s), 0};
  }
  float lo = x[0], hi = x[0];
  for (float v : x) {
    lo = std::fmin(lo, v);
    hi = std::fmax(hi, v);
  }
  return {roundToStorage((hi - lo) / float(maxCode(s)), s),
          roundToStorage(lo, s)};
}

ref::Fp8Format fp8FormatOf(const QuantScheme &s) {
  return s.format == QuantScheme::Format::E4M3 ? ref::Fp8Format::E4M3
                                               : ref::Fp8Format::E5M2;
}

/// The stored code of x. A zero scale (constant group) stores the code of
/// the group's value; NaN clamps to the lowest code. FP8: the byte of
/// x / scale (nearest even, saturating), as vLLM stores it.
unsigned codeOf(const QuantScheme &s, float x, ScaleZero sz) {
  if (s.isFp8())
    return toFp8Bits(x / sz.scale, fp8FormatOf(s));
  bool constant = sz.scale == 0;
  float scale = constant ? 1.0f : sz.scale;
  if (s.symmetric) {
    float qmax = symmetricMax(s);
    float q = std::rint(x / scale);
    q = std::fmin(std::fmax(q, -qmax), qmax);
    if (constant)
      q = 0;
    return static_cast<unsigned>(q + qmax + 1);
  }
  float q = std::rint((x - sz.zero) / scale);
  q = std::fmin(std::fmax(q, 0.0f), float(maxCode(s)));
  if (constant)
    q = 0;
  return static_cast<unsigned>(q);
}

/// The sum of `terms` as the quantize kernel adds them (ZeroPointSearch.h):
/// `lanes` contiguous runs, each summed in order from 0, then combined by a
/// butterfly (lane i adds lane i ^ offset's sum for offset 1, 2, 4, ...).
float laneSum(const std::vector<float> &terms, int lanes) {
  int run = int(terms.size()) / lanes;
  std::vector<float> sums(lanes, 0.0f);
  for (int lane = 0; lane < lanes; ++lane)
    for (int i = 0; i < run; ++i)
      sums[lane] += terms[size_t(lane) * run + i];
  for (int offset = 1; offset < lanes; offset *= 2) {
    std::vector<float> next(lanes);
    for (int lane = 0; lane < lanes; ++lane)
      next[lane] = sums[lane] + sums[lane ^ offset];
    sums = next;
  }
  return sums[0];
}

/// An asymmetric group's zero point refined from the minimum by HQQ's
/// half-quadratic solver (ZeroPointSearch.h, which spells out the steps the
/// kernel takes; this is them, operation for operation). `lanes` is how
/// many lanes the kernel spreads the group over (1: one thread).
float searchZeroPoint(const QuantScheme &s, const std::vector<float> &x,
                      ScaleZero sz, int lanes) {
  namespace zps = zero_point_search;
  if (!(0.0f < sz.scale)) // a constant group keeps its minimum
    return sz.zero;
  float zero = sz.zero, best = sz.zero;
  float bestError = std::numeric_limits<float>::infinity();
  float beta = zps::kBeta;
  std::vector<float> squares(x.size()), targets(x.size());
  for (int step = 0; step < zps::kIterations; ++step) {
    for (size_t i = 0; i < x.size(); ++i) {
      float q = float(codeOf(s, x[i], {sz.scale, zero}));
      float qs = q * sz.scale;
      float d = x[i] - (qs + zero);
      float a = std::fabs(d);
      float shrunk = std::fmax(a - 1.0f / (beta * std::sqrt(a)), 0.0f);
      float e = d < 0.0f ? 0.0f - shrunk : shrunk;
      squares[i] = d * d;
      targets[i] = (x[i] - e) - qs;
    }
    float error = laneSum(squares, lanes);
    if (!(error < bestError))
      break;
    bestError = error;
    best = zero;
    zero = roundToStorage(laneSum(targets, lanes) / float(x.size()), s);
    beta = beta * zps::kKappa;
  }
  return best;
}

float valueOf(const QuantScheme &s, unsigned code, ScaleZero sz) {
  if (s.isFp8())
    return fromFp8Bits(uint8_t(code), fp8FormatOf(s)) * sz.scale;
  if (s.symmetric)
    return float(int(code) - (1 << (s.bits - 1))) * sz.scale;
  float scaled = float(code) * sz.scale;
  return scaled + sz.zero;
}

} // namespace

void ref::quantize(const QuantScheme &s, int headDim, const float *input,
                   int rows, int tokens, int inTokens, int outTokens,
                   int outOffset, uint32_t *words, float *scales, float *zeros,
                   ZeroPointSearch zeroPoints) {
  int group = s.groupSize(headDim);
  int perWord = codesPerWord(s);
  int d = headDim;
  bool hqq = zeroPoints == ZeroPointSearch::Hqq && !s.symmetric;
  int tokenAxisLanes =
      int(zero_point_search::tokenAxisLanesPerGroup(s.bits, group));
  for (int r = 0; r < rows; ++r) {
    if (s.axis == QuantScheme::Axis::Token) {
      int groups = d / group;
      int rowWords = d / perWord;
      for (int t = 0; t < tokens; ++t) {
        const float *x = input + (size_t(r) * inTokens + t) * d;
        size_t outRow = size_t(r) * outTokens + outOffset + t;
        for (int g = 0; g < groups; ++g) {
          std::vector<float> values(x + g * group, x + (g + 1) * group);
          ScaleZero sz = groupScale(s, values);
          if (hqq)
            sz.zero = searchZeroPoint(s, values, sz, tokenAxisLanes);
          scales[outRow * groups + g] = sz.scale;
          if (zeros)
            zeros[outRow * groups + g] = sz.zero;
          for (int w = 0; w < group / perWord; ++w) {
            uint32_t word = 0;
            for (int j = 0; j < perWord; ++j)
              word |= uint32_t(codeOf(s, values[w * perWord + j], sz))
                      << slotShift(s, j);
            words[outRow * rowWords + g * group / perWord + w] = word;
          }
        }
      }
      continue;
    }
    // axis = channel: groups of `group` tokens down each channel.
    for (int tg = 0; tg < tokens / group; ++tg) {
      for (int c = 0; c < d; ++c) {
        std::vector<float> values(group);
        for (int i = 0; i < group; ++i)
          values[i] = input[(size_t(r) * inTokens + tg * group + i) * d + c];
        ScaleZero sz = groupScale(s, values);
        if (hqq)
          sz.zero = searchZeroPoint(s, values, sz, 1);
        size_t scaleRow =
            size_t(r) * (outTokens / group) + (outOffset + tg * group) / group;
        scales[scaleRow * d + c] = sz.scale;
        if (zeros)
          zeros[scaleRow * d + c] = sz.zero;
        for (int w = 0; w < group / perWord; ++w) {
          uint32_t word = 0;
          for (int j = 0; j < perWord; ++j)
            word |= uint32_t(codeOf(s, values[w * perWord + j], sz))
                    << slotShift(s, j);
          size_t wordRow = size_t(r) * (outTokens / perWord) +
                           (outOffset + tg * group) / perWord + w;
          words[wordRow * d + c] = word;
        }
      }
    }
  }
}

void ref::dequantize(const QuantScheme &s, int headDim, const uint32_t *words,
                     const float *scales, const float *zeros, int rows,
                     int tokens, int inTokens, int inOffset, int outTokens,
                     float *output) {
  int group = s.groupSize(headDim);
  int perWord = codesPerWord(s);
  int d = headDim;
  std::vector<unsigned> shifts(perWord);
  for (int j = 0; j < perWord; ++j)
    shifts[j] = slotShift(s, j);
  auto scaleZero = [&](size_t index) {
    return ScaleZero{scales[index], zeros ? zeros[index] : 0.0f};
  };
  // Word by word (KVQLayout.h): a token-axis word holds perWord channels of
  // one token, a channel-axis word perWord tokens of one channel; a group
  // holds whole words, so one scale serves every code of a word.
  for (int r = 0; r < rows; ++r) {
    float *out = output + size_t(r) * outTokens * d;
    if (s.axis == QuantScheme::Axis::Token) {
      for (int t = 0; t < tokens; ++t) {
        size_t row = size_t(r) * inTokens + inOffset + t;
        const uint32_t *rowWords = words + row * (d / perWord);
        for (int w = 0; w < d / perWord; ++w) {
          ScaleZero sz = scaleZero(row * (d / group) + w * perWord / group);
          for (int j = 0; j < perWord; ++j)
            out[size_t(t) * d + w * perWord + j] =
                valueOf(s, (rowWords[w] >> shifts[j]) & maxCode(s), sz);
        }
      }
      continue;
    }
    for (int t = 0; t < tokens;) {
      int src = inOffset + t;
      // Tokens [t, t + n) share their words (a run of one word's perWord
      // tokens) and their group.
      int n = std::min(perWord - src % perWord, tokens - t);
      size_t wordRow = size_t(r) * (inTokens / perWord) + src / perWord;
      size_t scaleRow = (size_t(r) * (inTokens / group) + src / group) * d;
      for (int c = 0; c < d; ++c) {
        uint32_t word = words[wordRow * d + c];
        ScaleZero sz = scaleZero(scaleRow + c);
        for (int j = 0; j < n; ++j)
          out[size_t(t + j) * d + c] =
              valueOf(s, (word >> shifts[src % perWord + j]) & maxCode(s), sz);
      }
      t += n;
    }
  }
}

namespace {
/// Static scale and zero of head row r: entry r % kvHeads per kv head, the
/// one entry per tensor.
ScaleZero staticScaleOf(const QuantScheme &s, int kvHeads, const float *scales,
                        const float *zeros, int r) {
  int i = s.scales == QuantScheme::Scales::Head ? r % kvHeads : 0;
  return {scales[i], zeros ? zeros[i] : 0.0f};
}
} // namespace

void ref::quantizeStatic(const QuantScheme &s, int headDim, int kvHeads,
                         const float *input, int rows, int tokens, int inTokens,
                         int outTokens, int outOffset, uint32_t *words,
                         const float *scales, const float *zeros) {
  int perWord = codesPerWord(s), rowWords = headDim / perWord;
  for (int r = 0; r < rows; ++r) {
    ScaleZero sz = staticScaleOf(s, kvHeads, scales, zeros, r);
    for (int t = 0; t < tokens; ++t) {
      const float *x = input + (size_t(r) * inTokens + t) * headDim;
      uint32_t *out =
          words + (size_t(r) * outTokens + outOffset + t) * rowWords;
      for (int w = 0; w < rowWords; ++w) {
        uint32_t word = 0;
        for (int j = 0; j < perWord; ++j)
          word |= uint32_t(codeOf(s, x[w * perWord + j], sz))
                  << slotShift(s, j);
        out[w] = word;
      }
    }
  }
}

void ref::dequantizeStatic(const QuantScheme &s, int headDim, int kvHeads,
                           const uint32_t *words, const float *scales,
                           const float *zeros, int rows, int tokens,
                           int inTokens, int inOffset, int outTokens,
                           float *output) {
  int perWord = codesPerWord(s), rowWords = headDim / perWord;
  for (int r = 0; r < rows; ++r) {
    ScaleZero sz = staticScaleOf(s, kvHeads, scales, zeros, r);
    for (int t = 0; t < tokens; ++t) {
      const uint32_t *in =
          words + (size_t(r) * inTokens + inOffset + t) * rowWords;
      float *out = output + (size_t(r) * outTokens + t) * headDim;
      for (int w = 0; w < rowWords; ++w)
        for (int j = 0; j < perWord; ++j)
          out[w * perWord + j] =
              valueOf(s, (in[w] >> slotShift(s, j)) & maxCode(s), sz);
    }
  }
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

void ref::attendRows(const float *q, const std::vector<const float *> &keys,
                     const std::vector<const float *> &values, int d,
                     float scale, float *o) {
  if (keys.empty()) {
    std::fill(o, o + d, 0.0f);
    return;
  }
  std::vector<double> scores;
  scores.reserve(keys.size());
  for (const float *k : keys) {
    // Four partial sums: the same double products, added in a fixed order
    // that does not wait on one long dependency chain.
    double dot[4] = {0, 0, 0, 0};
    int c = 0;
    for (; c + 4 <= d; c += 4)
      for (int i = 0; i < 4; ++i)
        dot[i] += double(q[c + i]) * double(k[c + i]);
    for (; c < d; ++c)
      dot[0] += double(q[c]) * double(k[c]);
    scores.push_back(double(scale) * ((dot[0] + dot[1]) + (dot[2] + dot[3])));
  }
  double m = *std::max_element(scores.begin(), scores.end());
  double sum = 0;
  std::vector<double> acc(d, 0.0);
  for (size_t t = 0; t < scores.size(); ++t) {
    double p = std::exp(scores[t] - m);
    sum += p;
    for (int c = 0; c < d; ++c)
      acc[c] += p * values[t][c];
  }
  for (int c = 0; c < d; ++c)
    o[c] = float(acc[c] / sum);
}

void ref::attendGroup(const float *q, int heads,
                      const std::vector<const float *> &keys,
                      const std::vector<const float *> &values, int d,
                      float scale, float *o) {
  size_t n = keys.size();
  if (n == 0) {
    std::fill(o, o + size_t(heads) * d, 0.0f);
    return;
  }
  constexpr int kLanes = 8; // independent partial sums the compiler can
                            // keep in vector registers
  std::vector<float> scores(size_t(heads) * n);
  for (size_t t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h) {
      const float *qh = q + size_t(h) * d, *k = keys[t];
      float lanes[kLanes] = {};
      int c = 0;
      for (; c + kLanes <= d; c += kLanes)
        for (int i = 0; i < kLanes; ++i)
          lanes[i] += qh[c + i] * k[c + i];
      for (; c < d; ++c)
        lanes[0] += qh[c] * k[c];
      float dot = 0;
      for (float lane : lanes)
        dot += lane;
      scores[h * n + t] = scale * dot;
    }
  std::vector<float> weights(n), acc(d);
  for (int h = 0; h < heads; ++h) {
    const float *row = &scores[h * n];
    double m = *std::max_element(row, row + n), sum = 0;
    for (size_t t = 0; t < n; ++t) {
      weights[t] = float(std::exp(double(row[t]) - m));
      sum += weights[t];
    }
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (size_t t = 0; t < n; ++t)
      for (int c = 0; c < d; ++c)
        acc[c] += weights[t] * values[t][c];
    for (int c = 0; c < d; ++c)
      o[size_t(h) * d + c] = float(acc[c] / sum);
  }
}

void ref::attention(const KernelSpec &spec, const AttentionInputs &in,
                    float *out) {
  int d = spec.headDim, hq = spec.queryHeads, hkv = spec.kvHeads;
  int gqa = hq / hkv;
  // One work item per (sequence, kv head): its body is dequantized once for
  // the gqa query heads that read it.
  auto one = [&](int b, int kvh) {
    size_t headRow = size_t(b) * hkv + kvh;
    int nSink = in.lengths[b * 3], nBody = in.lengths[b * 3 + 1],
        nResidual = in.lengths[b * 3 + 2];
    std::vector<const float *> keys, values;
    std::vector<float> kk, vv; // the dequantized body, alive until attended
    auto addToken = [&](const float *k, const float *v) {
      keys.push_back(k);
      values.push_back(v);
    };
    if (spec.sink)
      for (int t = 0; t < nSink; ++t) {
        size_t at = (headRow * in.sinkCapacity + t) * d;
        addToken(in.sinkKeys + at, in.sinkValues + at);
      }
    if (nBody > 0 && spec.kind == KernelKind::DenseAttention) {
      for (int t = 0; t < nBody; ++t) {
        size_t at = (headRow * in.bodyCapacity + t) * d;
        addToken(in.keys + at, in.values + at);
      }
    } else if (nBody > 0) {
      // Dequantize this (batch, kv head)'s rows: offset the store to
      // headRow and treat it as one row.
      kk.assign(size_t(nBody) * d, 0.0f);
      vv.assign(size_t(nBody) * d, 0.0f);
      auto rowOf = [&](const QuantScheme &s, const uint32_t *words,
                       const float *scales, const float *zeros, float *dst) {
        int perWord = 32 / s.bits, group = s.groupSize(d);
        size_t wordStride = s.axis == QuantScheme::Axis::Token
                                ? size_t(in.bodyCapacity) * (d / perWord)
                                : size_t(in.bodyCapacity / perWord) * d;
        if (s.isStatic()) { // this kv head's static scale: row kvh of hkv
          int i = s.scales == QuantScheme::Scales::Head ? kvh : 0;
          dequantizeStatic(s, d, 1, words + headRow * wordStride, scales + i,
                           zeros ? zeros + i : nullptr, 1, nBody,
                           in.bodyCapacity, 0, nBody, dst);
          return;
        }
        size_t scaleStride = s.axis == QuantScheme::Axis::Token
                                 ? size_t(in.bodyCapacity) * (d / group)
                                 : size_t(in.bodyCapacity / group) * d;
        dequantize(s, d, words + headRow * wordStride,
                   scales + headRow * scaleStride,
                   zeros ? zeros + headRow * scaleStride : nullptr, 1, nBody,
                   in.bodyCapacity, 0, nBody, dst);
      };
      rowOf(spec.key, in.keyWords, in.keyScales, in.keyZeros, kk.data());
      rowOf(spec.value, in.valueWords, in.valueScales, in.valueZeros,
            vv.data());
      for (int t = 0; t < nBody; ++t)
        addToken(&kk[size_t(t) * d], &vv[size_t(t) * d]);
    }
    if (spec.residual)
      for (int t = 0; t < nResidual; ++t) {
        size_t at = (headRow * in.residualCapacity + t) * d;
        addToken(in.residualKeys + at, in.residualValues + at);
      }
    size_t firstHead = size_t(b) * hq + size_t(kvh) * gqa;
    attendGroup(in.q + firstHead * d, gqa, keys, values, d, in.softmaxScale,
                out + firstHead * d);
  };

  int work = in.batch * hkv;
  std::atomic<int> next{0};
  auto worker = [&]() {
    for (int i = next++; i < work; i = next++)
      one(i / hkv, i % hkv);
  };
  runOnHostThreads(std::max(1u, std::min<unsigned>(
                                    std::thread::hardware_concurrency(), work)),
                   worker);
}
