//===- Calibrate.cpp - static scales from sample keys and values ----------===//

#include "kvq/Calibrate.h"
#include "kvq/Runtime/Reference.h"

#include "HostParallel.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

using namespace kvq;

std::optional<StaticFormat> StaticFormat::parse(const std::string &text) {
  StaticFormat f;
  if (text == "e4m3" || text == "e5m2") {
    f.kind = text == "e4m3" ? Kind::E4M3 : Kind::E5M2;
    return f;
  }
  // "int" and 1 to 2 digits; calibrateScales checks the range (2 to 8).
  if (text.size() < 4 || text.size() > 5 || text.compare(0, 3, "int") != 0 ||
      !std::all_of(text.begin() + 3, text.end(),
                   [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  f.kind = Kind::Integer;
  f.bits = std::stoi(text.substr(3));
  return f;
}

std::string StaticFormat::name() const {
  switch (kind) {
  case Kind::E4M3:
    return "e4m3";
  case Kind::E5M2:
    return "e5m2";
  case Kind::Integer:
    break;
  }
  return "int" + std::to_string(bits) + (symmetric ? "" : "a");
}

namespace {

Status problem(const std::string &message) {
  return Status(StatusCode::InvalidArgument, message);
}

/// The reference's FP8 format of an FP8 StaticFormat.
ref::Fp8Format fp8FormatOf(const StaticFormat &f) {
  return f.kind == StaticFormat::Kind::E4M3 ? ref::Fp8Format::E4M3
                                            : ref::Fp8Format::E5M2;
}

/// The largest code magnitude (an integer format's top code), in units of
/// the scale.
double largestCode(const StaticFormat &f) {
  if (f.kind != StaticFormat::Kind::Integer)
    return ref::largestFp8(fp8FormatOf(f));
  return f.symmetric ? (1 << (f.bits - 1)) - 1 : (1 << f.bits) - 1;
}

/// The samples of one scale: every (token, head) row of the heads it
/// covers, as [first, first + count) of each token's row.
struct Slice {
  const float *samples;
  size_t tokens, stride; ///< stride: floats from one token to the next
  size_t first, count;
  template <typename F> void forEach(F f) const {
    for (size_t t = 0; t < tokens; ++t)
      for (size_t i = 0; i < count; ++i)
        f(samples[t * stride + first + i]);
  }
};

/// The scale (and zero) that maps the clipped range [lo, hi] onto the
/// format: `ratio` of the samples' range (1: min-max).
StaticScale scaleFor(double lo, double hi, double ratio,
                     const StaticFormat &f) {
  StaticScale s;
  double top = largestCode(f);
  bool asymmetric = f.kind == StaticFormat::Kind::Integer && !f.symmetric;
  if (asymmetric) {
    double range = (hi - lo) * ratio;
    if (range > 0) {
      s.scale = float(range / top);
      s.zero = float(lo * ratio);
    } else {
      s.zero = float(lo); // constant samples: code 0 is the value
    }
    return s;
  }
  double amax = std::max(std::fabs(lo), std::fabs(hi)) * ratio;
  if (amax > 0)
    s.scale = float(amax / top);
  return s;
}

/// Squared error of the round trip over the slice, and the samples' sum of
/// squares.
std::pair<double, double> squaredError(const Slice &slice, const StaticScale &s,
                                       const StaticFormat &f) {
  double error = 0, energy = 0;
  slice.forEach([&](float x) {
    double d = double(roundTrip(x, s, f)) - x;
    error += d * d;
    energy += double(x) * x;
  });
  return {error, energy};
}

} // namespace

float kvq::roundTrip(float x, const StaticScale &s, const StaticFormat &f) {
  switch (f.kind) {
  case StaticFormat::Kind::E4M3:
  case StaticFormat::Kind::E5M2: {
    ref::Fp8Format format = fp8FormatOf(f);
    return ref::fromFp8Bits(ref::toFp8Bits(x / s.scale, format), format) *
           s.scale;
  }
  case StaticFormat::Kind::Integer:
    break;
  }
  float top = float(largestCode(f));
  if (f.symmetric)
    return std::clamp(std::nearbyint(x / s.scale), -top, top) * s.scale;
  return std::clamp(std::nearbyint((x - s.zero) / s.scale), 0.0f, top) *
             s.scale +
         s.zero;
}

CalibrationOptions kvq::calibrationFor(const QuantScheme &scheme,
                                       CalibrationMethod method) {
  CalibrationOptions options;
  options.format.kind = scheme.format == QuantScheme::Format::E4M3
                            ? StaticFormat::Kind::E4M3
                        : scheme.format == QuantScheme::Format::E5M2
                            ? StaticFormat::Kind::E5M2
                            : StaticFormat::Kind::Integer;
  options.format.bits = scheme.bits;
  options.format.symmetric = scheme.symmetric || scheme.isFp8();
  options.granularity = scheme.scales == QuantScheme::Scales::Head
                            ? ScaleGranularity::Head
                            : ScaleGranularity::Tensor;
  options.method = method;
  return options;
}

Status kvq::calibrateScales(const float *samples, size_t tokens, int heads,
                            int headDim, const CalibrationOptions &options,
                            std::vector<StaticScale> *out) {
  const StaticFormat &f = options.format;
  if (heads < 1 || headDim < 1)
    return problem("heads and head_dim must be at least 1, got " +
                   std::to_string(heads) + " and " + std::to_string(headDim));
  if (tokens == 0 || !samples)
    return problem("no samples to calibrate on (0 tokens)");
  if (!out)
    return problem("scales is null");
  if (f.kind == StaticFormat::Kind::Integer && (f.bits < 2 || f.bits > 8))
    return problem("integer bits must be 2 to 8, got " +
                   std::to_string(f.bits));
  if (f.kind != StaticFormat::Kind::Integer && !f.symmetric)
    return problem("FP8 (" + f.name() +
                   ") scales are symmetric: no zero "
                   "point");
  if (options.method == CalibrationMethod::MseGrid &&
      (options.gridPoints < 1 || options.gridPoints > 10000))
    return problem("grid points must be 1 to 10000, got " +
                   std::to_string(options.gridPoints));
  if (options.method == CalibrationMethod::MseGrid &&
      !(options.minClip > 0 && options.minClip <= 1))
    return problem("the smallest clipping ratio must be in (0, 1], got " +
                   std::to_string(options.minClip));
  size_t row = size_t(heads) * size_t(headDim);
  for (size_t i = 0; i < tokens * row; ++i)
    if (!std::isfinite(samples[i]))
      return problem("sample " + std::to_string(i) + " (token " +
                     std::to_string(i / row) + ", head " +
                     std::to_string(i % row / headDim) +
                     ") is not finite: " + std::to_string(samples[i]));

  std::vector<Slice> slices;
  if (options.granularity == ScaleGranularity::Tensor)
    slices.push_back({samples, tokens, row, 0, row});
  else
    for (int h = 0; h < heads; ++h)
      slices.push_back(
          {samples, tokens, row, size_t(h) * headDim, size_t(headDim)});

  // The clipping ratios tried, from none (min-max) down.
  std::vector<double> ratios = {1.0};
  if (options.method == CalibrationMethod::MseGrid)
    for (int i = options.gridPoints - 2; i >= 0; --i)
      ratios.push_back(options.minClip +
                       (1.0 - options.minClip) * i / (options.gridPoints - 1));
  std::vector<std::pair<double, double>> ranges; // [slice]: min, max
  for (const Slice &slice : slices) {
    double lo = INFINITY, hi = -INFINITY;
    slice.forEach([&](float x) {
      lo = std::min(lo, double(x));
      hi = std::max(hi, double(x));
    });
    ranges.push_back({lo, hi});
  }
  // Every (slice, ratio) candidate's squared error and the slice's sum of
  // squares, on the host's threads: each is a pass over the slice.
  size_t work = slices.size() * ratios.size();
  std::vector<std::pair<double, double>> errors(work);
  std::atomic<size_t> next{0};
  runOnHostThreads(
      unsigned(std::max<size_t>(
          1, std::min<size_t>(std::thread::hardware_concurrency(), work))),
      [&] {
        for (size_t i = next++; i < work; i = next++) {
          size_t slice = i / ratios.size();
          auto [lo, hi] = ranges[slice];
          errors[i] = squaredError(
              slices[slice], scaleFor(lo, hi, ratios[i % ratios.size()], f), f);
        }
      });
  std::vector<StaticScale> scales;
  for (size_t slice = 0; slice < slices.size(); ++slice) {
    auto [lo, hi] = ranges[slice];
    // From no clipping down: a smaller ratio must do strictly better.
    size_t best = 0;
    for (size_t r = 1; r < ratios.size(); ++r)
      if (errors[slice * ratios.size() + r].first <
          errors[slice * ratios.size() + best].first)
        best = r;
    auto [error, energy] = errors[slice * ratios.size() + best];
    StaticScale s = scaleFor(lo, hi, ratios[best], f);
    s.relativeError = energy > 0 ? std::sqrt(error / energy) : 0;
    scales.push_back(s);
  }
  *out = std::move(scales);
  return Status();
}
