//===- module.cpp - kvq_jit._kvq: the C++ API for Python
//-------------------===//
//
// A thin nanobind layer over the public C++ API (kvq/kvq.h,
// kvq/QuantizedKVCache.h). Device memory crosses as integer addresses (a
// torch tensor's data_ptr()); the Python side (kvq_jit/_tensors.py) checks
// dtype, shape, strides and device before an address gets here, and the C++
// API checks sizes and counts again. Every kvq::Status that is not Ok is
// raised as the Python exception of its code (kvq_jit.errors), with the
// message that names the bad value. Calls release the GIL: a CPU-backend
// attention can take milliseconds.
//
//===----------------------------------------------------------------------===//

#include "kvq/Calibrate.h"
#include "kvq/QuantizedKVCache.h"
#include "kvq/kvq.h"

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <array>
#include <cstdint>
#include <stdexcept>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

/// A failed kvq::Status on its way to Python.
struct StatusError : std::runtime_error {
  StatusError(const kvq::Status &status)
      : std::runtime_error(status.message()), code(status.code()) {}
  kvq::StatusCode code;
};

/// The Python exception type of each StatusCode, created at import.
std::array<PyObject *, 9> errorTypes{};

void check(const kvq::Status &status) {
  if (!status.ok())
    throw StatusError(status);
}

template <typename T> T *address(uintptr_t pointer) {
  return reinterpret_cast<T *>(pointer);
}

kvq::BackendKind backendOf(const std::string &name) {
  if (name == "auto")
    return kvq::BackendKind::Auto;
  if (name == "cuda")
    return kvq::BackendKind::Cuda;
  if (name == "emulator")
    return kvq::BackendKind::Emulator;
  if (name == "reference")
    return kvq::BackendKind::Reference;
  throw StatusError(
      kvq::Status(kvq::StatusCode::InvalidArgument,
                  "unknown backend '" + name +
                      "' (known: auto, cuda, emulator, reference)"));
}

kvq::KernelSpec parseSpec(const std::string &text) {
  kvq::KernelSpec spec;
  if (std::optional<std::string> error = kvq::parseKernelSpec(text, spec))
    throw StatusError(kvq::Status(kvq::StatusCode::InvalidSpec, *error));
  if (std::optional<std::string> error = spec.validate())
    throw StatusError(kvq::Status(kvq::StatusCode::InvalidSpec, *error));
  return spec;
}

kvq::QuantScheme parseScheme(const std::string &tag) {
  kvq::QuantScheme scheme;
  if (std::optional<std::string> error = kvq::parseSchemeTag(tag, scheme))
    throw StatusError(kvq::Status(kvq::StatusCode::InvalidSpec,
                                  "scheme '" + tag + "': " + *error));
  return scheme;
}

/// The configuration of a cache, from Python keywords: a preset's schemes,
/// residual and sink unless `key`/`value`/`residual`/`sink` override them.
kvq::CacheConfig makeConfig(int layers, int batch, int kvHeads, int queryHeads,
                            int headDim, const std::string &dtype, int capacity,
                            const std::string &preset, const std::string &key,
                            const std::string &value, int residual, int sink,
                            int pages, int maxQueryTokens,
                            const std::string &prefillZeroPoints,
                            const std::array<std::vector<float>, 4> &given,
                            uintptr_t stream) {
  kvq::CacheConfig config;
  config.layers = layers;
  config.batch = batch;
  config.kvHeads = kvHeads;
  config.queryHeads = queryHeads;
  config.headDim = headDim;
  if (dtype == "float16")
    config.dtype = kvq::HalfType::F16;
  else if (dtype == "bfloat16")
    config.dtype = kvq::HalfType::BF16;
  else
    throw StatusError(
        kvq::Status(kvq::StatusCode::InvalidArgument,
                    "dtype " + dtype + " is not float16 or bfloat16"));
  config.capacity = capacity;
  std::string error;
  if (!preset.empty() && !kvq::applyPreset(preset, config, &error))
    throw StatusError(kvq::Status(kvq::StatusCode::InvalidArgument, error));
  if (!key.empty())
    config.key = parseScheme(key);
  if (!value.empty())
    config.value = parseScheme(value);
  if (residual >= 0)
    config.residual = residual;
  if (sink >= 0)
    config.sink = sink;
  config.pages = pages;
  config.maxQueryTokens = maxQueryTokens;
  if (prefillZeroPoints == "hqq")
    config.prefillZeroPoints = kvq::ZeroPointSearch::Hqq;
  else if (prefillZeroPoints != "minmax")
    throw StatusError(kvq::Status(kvq::StatusCode::InvalidArgument,
                                  "prefill_zero_points must be minmax or hqq, "
                                  "got '" +
                                      prefillZeroPoints + "'"));
  // Static schemes' calibrated scales, layer-major (checked by create()).
  config.keyScales = given[0];
  config.keyZeros = given[1];
  config.valueScales = given[2];
  config.valueZeros = given[3];
  config.stream = address<void>(stream);
  return config;
}

nb::dict statisticsOf(const kvq::Context &context) {
  kvq::CacheStatistics s = context.statistics();
  nb::dict d;
  d["compiled"] = s.compiled;
  d["disk_hits"] = s.diskHits;
  d["bundle_hits"] = s.bundleHits;
  d["memory_hits"] = s.memoryHits;
  d["remote_hits"] = s.remoteHits;
  d["launches"] = s.launches;
  return d;
}

void bindContext(nb::module_ &m) {
  nb::class_<kvq::Context>(m, "Context")
      .def_static(
          "create",
          [](const std::string &backend, int device, const std::string &arch,
             const std::string &cacheDir, const std::string &bundle) {
            kvq::ContextOptions options;
            options.backend = backendOf(backend);
            options.device = device;
            options.arch = arch;
            options.cacheDir = cacheDir;
            options.bundle = bundle;
            kvq::Status status;
            std::unique_ptr<kvq::Context> context =
                kvq::Context::create(options, &status);
            check(status);
            return context;
          },
          "backend"_a = "auto", "device"_a = 0, "arch"_a = "",
          "cache_dir"_a = "", "bundle"_a = "")
      .def_prop_ro("backend", &kvq::Context::backendName)
      .def_prop_ro("arch", &kvq::Context::arch)
      .def("statistics", &statisticsOf)
      // Memory of the context's backend: the emulator checks every address
      // a kernel reads against its own allocations, so kvq_jit stages CPU
      // tensors through these there.
      .def(
          "allocate",
          [](kvq::Context &c, size_t bytes) {
            kvq::Status status;
            void *pointer = c.allocate(bytes, &status);
            check(status);
            return reinterpret_cast<uintptr_t>(pointer);
          },
          "bytes"_a)
      .def(
          "release",
          [](kvq::Context &c, uintptr_t pointer) {
            c.release(address<void>(pointer));
          },
          "pointer"_a)
      .def(
          "copy_in",
          [](kvq::Context &c, uintptr_t device, uintptr_t host, size_t bytes) {
            check(c.copyIn(address<void>(device), address<const void>(host),
                           bytes));
          },
          "device"_a, "host"_a, "bytes"_a,
          nb::call_guard<nb::gil_scoped_release>())
      .def(
          "copy_out",
          [](kvq::Context &c, uintptr_t host, uintptr_t device, size_t bytes) {
            check(c.copyOut(address<void>(host), address<const void>(device),
                            bytes));
          },
          "host"_a, "device"_a, "bytes"_a,
          nb::call_guard<nb::gil_scoped_release>())
      .def(
          "prepare",
          [](kvq::Context &c, const std::string &spec) {
            check(c.prepare(parseSpec(spec)));
          },
          nb::call_guard<nb::gil_scoped_release>())
      .def(
          "quantize",
          [](kvq::Context &c, const std::string &spec, uintptr_t input,
             uintptr_t words, uintptr_t scales, uintptr_t zeros, int rows,
             int tokens, int inTokens, int outTokens, int outOffset,
             uintptr_t stream) {
            kvq::QuantizeCall call;
            call.input = address<const void>(input);
            call.words = address<void>(words);
            call.scales = address<void>(scales);
            call.zeros = address<void>(zeros);
            call.rows = rows;
            call.tokens = tokens;
            call.inTokens = inTokens;
            call.outTokens = outTokens;
            call.outOffset = outOffset;
            call.stream = address<void>(stream);
            check(c.quantize(parseSpec(spec), call));
          },
          "spec"_a, "input"_a, "words"_a, "scales"_a, "zeros"_a, "rows"_a,
          "tokens"_a, "in_tokens"_a, "out_tokens"_a, "out_offset"_a,
          "stream"_a = 0, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "dequantize",
          [](kvq::Context &c, const std::string &spec, uintptr_t words,
             uintptr_t scales, uintptr_t zeros, uintptr_t output, int rows,
             int tokens, int inTokens, int inOffset, int outTokens,
             uintptr_t stream) {
            kvq::DequantizeCall call;
            call.words = address<const void>(words);
            call.scales = address<const void>(scales);
            call.zeros = address<const void>(zeros);
            call.output = address<void>(output);
            call.rows = rows;
            call.tokens = tokens;
            call.inTokens = inTokens;
            call.inOffset = inOffset;
            call.outTokens = outTokens;
            call.stream = address<void>(stream);
            check(c.dequantize(parseSpec(spec), call));
          },
          "spec"_a, "words"_a, "scales"_a, "zeros"_a, "output"_a, "rows"_a,
          "tokens"_a, "in_tokens"_a, "in_offset"_a, "out_tokens"_a,
          "stream"_a = 0, nb::call_guard<nb::gil_scoped_release>());
}

/// Static scales from samples in host memory (kvq/Calibrate.h): a list of
/// (scale, zero, relative error), one per tensor or per head.
void bindCalibration(nb::module_ &m) {
  m.def(
      "calibrate_scales",
      [](uintptr_t samples, size_t tokens, int heads, int headDim,
         const std::string &format, bool asymmetric, bool perHead, bool mse,
         int gridPoints, float minClip) {
        kvq::CalibrationOptions o;
        std::optional<kvq::StaticFormat> parsed =
            kvq::StaticFormat::parse(format);
        if (!parsed)
          throw StatusError(kvq::Status(
              kvq::StatusCode::InvalidArgument,
              "format must be e4m3, e5m2 or intN, got '" + format + "'"));
        o.format = *parsed;
        o.format.symmetric = !asymmetric;
        o.granularity = perHead ? kvq::ScaleGranularity::Head
                                : kvq::ScaleGranularity::Tensor;
        o.method = mse ? kvq::CalibrationMethod::MseGrid
                       : kvq::CalibrationMethod::MinMax;
        o.gridPoints = gridPoints;
        o.minClip = minClip;
        std::vector<kvq::StaticScale> scales;
        check(kvq::calibrateScales(address<const float>(samples), tokens, heads,
                                   headDim, o, &scales));
        std::vector<std::tuple<float, float, double>> out;
        for (const kvq::StaticScale &s : scales)
          out.emplace_back(s.scale, s.zero, s.relativeError);
        return out;
      },
      "samples"_a, "tokens"_a, "heads"_a, "head_dim"_a, "format"_a,
      "asymmetric"_a, "per_head"_a, "mse"_a, "grid_points"_a, "min_clip"_a,
      nb::call_guard<nb::gil_scoped_release>());
}

/// Sizes of a scheme's buffers (kvq/BufferSizes.h).
void bindSchemes(nb::module_ &m) {
  m.def(
      "scheme_buffers",
      [](const std::string &tag, int headDim, size_t rows, int tokens) {
        kvq::QuantScheme s = parseScheme(tag);
        return std::make_tuple(kvq::packedWordCount(s, headDim, rows, tokens),
                               kvq::scaleCount(s, headDim, rows, tokens),
                               kvq::scaleBytes(s));
      },
      "scheme"_a, "head_dim"_a, "rows"_a, "tokens"_a,
      "(32-bit words, scales, bytes per scale) of `rows` rows of `tokens` "
      "tokens in a scheme such as '2c32' or '4t64'.");
  m.def(
      "scheme_scales",
      [](const std::string &tag) -> std::string {
        const char *names[] = {"group", "tensor", "head"};
        return names[int(parseScheme(tag).scales)];
      },
      "scheme"_a,
      "Where a scheme's scales come from: 'group' (computed and stored), or "
      "given per 'tensor' or per kv 'head'.");
  m.def(
      "canonical_spec",
      [](const std::string &text) { return parseSpec(text).canonical(); },
      "spec"_a);
  m.def("presets", &kvq::presetNames);
  m.def(
      "preset",
      [](const std::string &name) {
        kvq::CacheConfig config;
        std::string error;
        if (!kvq::applyPreset(name, config, &error))
          throw StatusError(
              kvq::Status(kvq::StatusCode::InvalidArgument, error));
        nb::dict d;
        d["key"] = config.key.tag();
        d["value"] = config.value.tag();
        d["residual"] = config.residual;
        d["sink"] = config.sink;
        return d;
      },
      "name"_a, "A preset's schemes (tags), fp16 residual and sink tokens.");
}

void bindCache(nb::module_ &m) {
  using Cache = kvq::QuantizedKVCache;
  nb::class_<Cache>(m, "QuantizedKVCache")
      .def_static(
          "create",
          [](kvq::Context &context, int layers, int batch, int kvHeads,
             int queryHeads, int headDim, const std::string &dtype,
             int capacity, const std::string &preset, const std::string &key,
             const std::string &value, int residual, int sink, int pages,
             int maxQueryTokens, const std::string &prefillZeroPoints,
             std::vector<float> keyScales, std::vector<float> keyZeros,
             std::vector<float> valueScales, std::vector<float> valueZeros,
             uintptr_t stream) {
            kvq::CacheConfig config =
                makeConfig(layers, batch, kvHeads, queryHeads, headDim, dtype,
                           capacity, preset, key, value, residual, sink, pages,
                           maxQueryTokens, prefillZeroPoints,
                           {std::move(keyScales), std::move(keyZeros),
                            std::move(valueScales), std::move(valueZeros)},
                           stream);
            kvq::Status status;
            std::unique_ptr<Cache> cache;
            {
              nb::gil_scoped_release release;
              cache = Cache::create(context, config, &status);
            }
            check(status);
            return cache;
          },
          "context"_a, "layers"_a, "batch"_a, "kv_heads"_a, "query_heads"_a,
          "head_dim"_a, "dtype"_a, "capacity"_a, "preset"_a = "", "key"_a = "",
          "value"_a = "", "residual"_a = -1, "sink"_a = -1, "pages"_a = 0,
          "max_query_tokens"_a = 1, "prefill_zero_points"_a = "minmax",
          "key_scales"_a = std::vector<float>(),
          "key_zeros"_a = std::vector<float>(),
          "value_scales"_a = std::vector<float>(),
          "value_zeros"_a = std::vector<float>(), "stream"_a = 0)
      .def(
          "append",
          [](Cache &c, int layer, int sequence, uintptr_t k, uintptr_t v,
             int tokens, int64_t headStride, int64_t tokenStride) {
            check(c.append(layer, sequence, address<const void>(k),
                           address<const void>(v), tokens,
                           kvq::TokenLayout{headStride, tokenStride}));
          },
          "layer"_a, "sequence"_a, "k"_a, "v"_a, "tokens"_a, "head_stride"_a,
          "token_stride"_a, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "append_step",
          [](Cache &c, int layer, uintptr_t k, uintptr_t v, int64_t headStride,
             int64_t tokenStride) {
            check(c.appendStep(layer, address<const void>(k),
                               address<const void>(v),
                               kvq::TokenLayout{headStride, tokenStride}));
          },
          "layer"_a, "k"_a, "v"_a, "head_stride"_a, "token_stride"_a,
          nb::call_guard<nb::gil_scoped_release>())
      .def(
          "attend",
          [](Cache &c, int layer, uintptr_t q, uintptr_t out) {
            check(c.attend(layer, address<const void>(q), address<void>(out)));
          },
          "layer"_a, "q"_a, "out"_a, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "append_and_attend",
          [](Cache &c, int layer, uintptr_t k, uintptr_t v, uintptr_t q,
             uintptr_t out, const std::vector<int32_t> &offsets,
             int64_t headStride, int64_t tokenStride) {
            if (offsets.size() != size_t(c.config().batch) + 1)
              throw StatusError(
                  kvq::Status(kvq::StatusCode::InvalidArgument,
                              "offsets has " + std::to_string(offsets.size()) +
                                  " entries, not batch + 1 = " +
                                  std::to_string(c.config().batch + 1)));
            nb::gil_scoped_release release;
            check(c.appendAndAttend(
                layer, address<const void>(k), address<const void>(v),
                address<const void>(q), address<void>(out), offsets.data(),
                kvq::TokenLayout{headStride, tokenStride}));
          },
          "layer"_a, "k"_a, "v"_a, "q"_a, "out"_a, "offsets"_a, "head_stride"_a,
          "token_stride"_a)
      .def(
          "release", [](Cache &c, int sequence) { check(c.release(sequence)); },
          "sequence"_a, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "truncate",
          [](Cache &c, int sequence, int tokens) {
            check(c.truncate(sequence, tokens));
          },
          "sequence"_a, "tokens"_a, nb::call_guard<nb::gil_scoped_release>())
      .def("truncatable", &Cache::truncatableTokens, "sequence"_a)
      .def(
          "fork",
          [](Cache &c, int source, int target) {
            check(c.fork(source, target));
          },
          "source"_a, "target"_a, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "snapshot",
          [](const Cache &c, int sequence) {
            std::string bytes;
            {
              nb::gil_scoped_release release;
              check(c.snapshot(sequence, bytes));
            }
            return nb::bytes(bytes.data(), bytes.size());
          },
          "sequence"_a)
      .def(
          "restore",
          [](Cache &c, int sequence, nb::bytes bytes) {
            std::string copy(bytes.c_str(), bytes.size());
            nb::gil_scoped_release release;
            check(c.restore(sequence, copy));
          },
          "sequence"_a, "bytes"_a)
      .def(
          "parts",
          [](const Cache &c, int layer, int sequence) {
            Cache::Parts p = c.parts(layer, sequence);
            return std::make_tuple(p.sink, p.quantized, p.residual);
          },
          "layer"_a, "sequence"_a,
          "(sink, quantized, residual) tokens of a sequence in a layer")
      .def("memory",
           [](const Cache &c) {
             kvq::MemoryUse use = c.memory();
             nb::dict d;
             d["sink_bytes"] = use.sinkBytes;
             d["quantized_bytes"] = use.quantizedBytes;
             d["residual_bytes"] = use.residualBytes;
             d["used_bytes"] = use.usedBytes();
             d["fp16_bytes"] = use.fp16Bytes;
             return d;
           })
      .def("pages_in_use", &Cache::pagesInUse, "layer"_a)
      .def_prop_ro("page_tokens", &Cache::pageTokens)
      .def_prop_ro("key_scheme",
                   [](const Cache &c) { return c.config().key.tag(); })
      .def_prop_ro("value_scheme",
                   [](const Cache &c) { return c.config().value.tag(); })
      .def_prop_ro("residual",
                   [](const Cache &c) { return c.config().residual; })
      .def_prop_ro("sink", [](const Cache &c) { return c.config().sink; })
      .def_prop_ro("attention_spec",
                   [](const Cache &c) { return c.attentionSpec().canonical(); })
      .def_prop_ro("kernel_specs", [](const Cache &c) {
        std::vector<std::string> specs;
        for (const kvq::KernelSpec &spec : c.kernelSpecs())
          specs.push_back(spec.canonical());
        return specs;
      });
}

} // namespace

NB_MODULE(_kvq, m) {
  m.doc() = "kvq's C++ API (use the kvq_jit package, not this module)";
  // kvq_jit keeps its Contexts (one per backend and device) for the life of
  // the process, and caches may be alive at exit: not leaks.
  nb::set_leak_warnings(false);
  // Error types: KVQError and one subclass per StatusCode, also deriving
  // from the built-in exception a Python caller would expect.
  PyObject *base =
      PyErr_NewException("kvq_jit.KVQError", PyExc_RuntimeError, nullptr);
  m.attr("KVQError") = nb::handle(base);
  struct Kind {
    kvq::StatusCode code;
    const char *name;
    PyObject *builtin;
  };
  const Kind kinds[] = {
      {kvq::StatusCode::InvalidSpec, "InvalidSpecError", PyExc_ValueError},
      {kvq::StatusCode::InvalidArgument, "InvalidArgumentError",
       PyExc_ValueError},
      {kvq::StatusCode::NoDevice, "NoDeviceError", nullptr},
      {kvq::StatusCode::CompileFailed, "CompileError", nullptr},
      {kvq::StatusCode::RuntimeFailed, "RuntimeFailedError", nullptr},
      {kvq::StatusCode::MissingKernel, "MissingKernelError", nullptr},
      {kvq::StatusCode::BadBundle, "BadBundleError", nullptr},
      {kvq::StatusCode::ResourceExhausted, "ResourceExhaustedError",
       PyExc_MemoryError}};
  errorTypes.fill(base);
  for (const Kind &kind : kinds) {
    PyObject *bases = kind.builtin ? PyTuple_Pack(2, base, kind.builtin)
                                   : PyTuple_Pack(1, base);
    std::string qualified = std::string("kvq_jit.") + kind.name;
    PyObject *type =
        PyErr_NewException(qualified.c_str(), bases, /*dict=*/nullptr);
    Py_DECREF(bases);
    errorTypes[size_t(kind.code)] = type;
    m.attr(kind.name) = nb::handle(type);
  }
  nb::register_exception_translator(
      [](const std::exception_ptr &pointer, void *) {
        try {
          std::rethrow_exception(pointer);
        } catch (const StatusError &error) {
          PyErr_SetString(errorTypes[size_t(error.code)], error.what());
        }
      });

  bindContext(m);
  bindSchemes(m);
  bindCalibration(m);
  bindCache(m);
}
