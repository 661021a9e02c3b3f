//===- Calibrate.h - static scales from sample keys and values --*- C++ -*-===//
//
// Part of kvq's public C++ API (installed; kvq::Status errors, no LLVM).
//
// Static (calibrated) quantization keeps no scale per group: one scale per
// tensor or per kv head, computed once from sample keys and values, as
// vLLM and TensorRT-LLM load `k_scale`/`v_scale` for FP8 KV caches and as
// PrefixQuant initialises its static per-head scales. Two methods:
// min-max (the scale that just covers the largest value) and an MSE grid
// search over clipping ratios (PrefixQuant's initialisation: the ratio
// whose quantize-dequantize round trip has the least squared error).
// `kvq-calibrate` (tools/) runs this over files of samples.
//
// Conventions: an FP8 value is stored as fp8(x / scale) and read as
// fp8 * scale (vLLM's); a symmetric integer code is rint(x / scale) in
// [-(2^(b-1) - 1), 2^(b-1) - 1], read as code * scale; an asymmetric one
// rint((x - zero) / scale) in [0, 2^b - 1], read as code * scale + zero.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CALIBRATE_H
#define KVQ_CALIBRATE_H

#include "kvq/kvq.h"

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace kvq {

/// The format a static scale is calibrated for.
struct StaticFormat {
  enum class Kind { Integer, E4M3, E5M2 };
  Kind kind = Kind::E4M3;
  int bits = 8;          ///< Integer: 2 to 8
  bool symmetric = true; ///< Integer only: FP8 is always symmetric
  /// "e4m3", "e5m2", "int8", "int4" (+ "a" for asymmetric integers).
  std::string name() const;
  /// "e4m3", "e5m2" or "intN" (symmetric; N checked by calibrateScales);
  /// nothing for any other text.
  static std::optional<StaticFormat> parse(const std::string &text);
};

enum class ScaleGranularity { Tensor, Head };
enum class CalibrationMethod { MinMax, MseGrid };

struct CalibrationOptions {
  StaticFormat format;
  ScaleGranularity granularity = ScaleGranularity::Tensor;
  CalibrationMethod method = CalibrationMethod::MinMax;
  /// MseGrid: clipping ratios minClip .. 1 in gridPoints even steps.
  int gridPoints = 100;
  float minClip = 0.5f;
};

struct StaticScale {
  float scale = 1.0f;
  float zero = 0.0f; ///< asymmetric integers only
  /// The round trip's error on the samples: sqrt(mean squared error) over
  /// sqrt(mean square of the samples) (0 for all-zero samples).
  double relativeError = 0;
};

/// One value stored and read back with `s` in `format`.
float roundTrip(float x, const StaticScale &s, const StaticFormat &format);

/// Scales for `samples`, [tokens, heads, headDim] floats in host memory
/// (token-major, as an engine holds K or V), into `scales`: one (Tensor)
/// or one per head (Head). All-zero samples get scale 1 (vLLM's default).
/// InvalidArgument names the bad value: a shape or option out of range, a
/// non-finite sample (by index); `scales` is then left as it was.
/// The options a static scheme (QuantScheme::isStatic: "e4m3pt", "4tphs",
/// ...) is calibrated with: its format, bits, mode and granularity, and
/// `method`.
CalibrationOptions
calibrationFor(const QuantScheme &scheme,
               CalibrationMethod method = CalibrationMethod::MinMax);

Status calibrateScales(const float *samples, size_t tokens, int heads,
                       int headDim, const CalibrationOptions &options,
                       std::vector<StaticScale> *scales);

} // namespace kvq

#endif // KVQ_CALIBRATE_H
