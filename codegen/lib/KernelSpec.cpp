//===- KernelSpec.cpp - canonical text and validation of specs ------------===//

#include "kvq/Codegen/KernelSpec.h"
#include "kvq/Dialect/KVQ/IR/SchemeRules.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <iterator>
#include <sstream>

using namespace kvq;

namespace {
/// The static scale granularities' tag words, in Scales' order.
constexpr const char *kStaticScaleWords[] = {"", "pt", "ph"};
} // namespace

std::string QuantScheme::tag() const {
  // An out-of-range value (validate() names it) must not be read past the
  // table.
  const char *granularity =
      int(scales) >= 0 && size_t(scales) < std::size(kStaticScaleWords)
          ? kStaticScaleWords[int(scales)]
          : "p?";
  if (format != Format::Integer)
    return std::string(format == Format::E4M3 ? "e4m3" : "e5m2") + granularity;
  std::string text = std::to_string(bits);
  text += axis == Axis::Token ? "t" : "c";
  if (isStatic())
    text += granularity;
  else
    text += group == 0 ? "hd" : std::to_string(group);
  if (symmetric)
    text += "s";
  if (interleaved)
    text += "i";
  if (fp32Scales && !isStatic()) // static scales are always fp32
    text += "x";
  return text;
}

QuantScheme QuantScheme::staticScheme(int bits, Scales scales, bool symmetric,
                                      Format format) {
  QuantScheme s;
  s.bits = format == Format::Integer ? bits : 8;
  s.group = 0;
  s.axis = Axis::Token;
  s.symmetric = format == Format::Integer ? symmetric : true;
  s.fp32Scales = true;
  s.format = format;
  s.scales = scales;
  return s;
}

bool QuantScheme::operator==(const QuantScheme &other) const {
  return bits == other.bits && group == other.group && axis == other.axis &&
         symmetric == other.symmetric && fp32Scales == other.fp32Scales &&
         interleaved == other.interleaved && format == other.format &&
         scales == other.scales;
}

std::vector<QuantScheme> kvq::schemeMatrix(int headDim) {
  std::vector<QuantScheme> schemes;
  for (int bits : {2, 4, 8})
    for (auto axis : {QuantScheme::Axis::Token, QuantScheme::Axis::Channel})
      for (bool symmetric : {false, true})
        for (bool fp32Scales : {false, true}) {
          QuantScheme s;
          s.bits = bits;
          s.axis = axis;
          s.symmetric = symmetric;
          s.fp32Scales = fp32Scales;
          s.group =
              axis == QuantScheme::Axis::Token ? std::min(64, headDim) : 32;
          schemes.push_back(s);
        }
  return schemes;
}

KernelSpec KernelSpec::forScheme(KernelKind kind, const QuantScheme &scheme,
                                 int headDim, HalfType dtype) {
  KernelSpec spec;
  spec.kind = kind;
  spec.key = scheme;
  spec.headDim = headDim;
  spec.dtype = dtype;
  return spec;
}

KernelSpec KernelSpec::forAttention(const QuantScheme &key,
                                    const QuantScheme &value, int headDim,
                                    int queryHeads, int kvHeads, HalfType dtype,
                                    bool sink, bool residual) {
  KernelSpec spec;
  spec.kind = KernelKind::Attention;
  spec.key = key;
  spec.value = value;
  spec.headDim = headDim;
  spec.queryHeads = queryHeads;
  spec.kvHeads = kvHeads;
  spec.dtype = dtype;
  spec.sink = sink;
  spec.residual = residual;
  return spec;
}

KernelSpec KernelSpec::forAppend(const QuantScheme &key,
                                 const QuantScheme &value, int headDim,
                                 HalfType dtype) {
  KernelSpec spec = forScheme(KernelKind::Append, key, headDim, dtype);
  spec.value = value;
  return spec;
}

KernelSpec KernelSpec::forDenseAttention(int headDim, int queryHeads,
                                         int kvHeads, HalfType dtype, bool sink,
                                         bool residual) {
  KernelSpec spec = forAttention(QuantScheme(), QuantScheme(), headDim,
                                 queryHeads, kvHeads, dtype, sink, residual);
  spec.kind = KernelKind::DenseAttention;
  return spec;
}

namespace {
/// AttentionPath's names, in the enum's order.
constexpr const char *kAttentionPathNames[] = {"auto", "cuda-cores",
                                               "tensor-cores"};
} // namespace

const char *kvq::attentionPathName(AttentionPath path) {
  return kAttentionPathNames[int(path)];
}

bool kvq::parseAttentionPath(const std::string &text, AttentionPath &path) {
  for (size_t i = 0; i < std::size(kAttentionPathNames); ++i)
    if (text == kAttentionPathNames[i]) {
      path = AttentionPath(i);
      return true;
    }
  return false;
}

std::string KernelSpec::canonical() const {
  std::ostringstream os;
  const char *dtypeName = dtype == HalfType::F16 ? "f16" : "bf16";
  switch (kind) {
  case KernelKind::Quantize:
    os << "quantize " << key.tag() << " d=" << headDim;
    // Per-head static scales: the kernel indexes this many.
    if (key.scales == QuantScheme::Scales::Head)
      os << " hkv=" << kvHeads;
    os << " " << dtypeName;
    if (zeroPoints == ZeroPointSearch::Hqq)
      os << " hqq";
    break;
  case KernelKind::Dequantize:
    os << "dequantize " << key.tag() << " d=" << headDim;
    if (key.scales == QuantScheme::Scales::Head)
      os << " hkv=" << kvHeads;
    os << " " << dtypeName;
    break;
  case KernelKind::Attention:
    os << "attention k=" << key.tag() << " v=" << value.tag()
       << " d=" << headDim << " hq=" << queryHeads << " hkv=" << kvHeads;
    if (pageTokens)
      os << " paged=" << pageTokens;
    if (nhdPages)
      os << " nhd";
    if (chunked)
      os << " chunked";
    os << " " << dtypeName << (sink ? " sink" : "")
       << (residual ? " residual" : "");
    if (path != AttentionPath::Auto)
      os << " path=" << attentionPathName(path);
    break;
  case KernelKind::DenseAttention:
    os << "dense-attention d=" << headDim << " hq=" << queryHeads
       << " hkv=" << kvHeads << " " << dtypeName << (sink ? " sink" : "")
       << (residual ? " residual" : "");
    if (path != AttentionPath::Auto)
      os << " path=" << attentionPathName(path);
    break;
  case KernelKind::Append:
    os << "append k=" << key.tag() << " v=" << value.tag() << " d=" << headDim
       << " " << dtypeName;
    break;
  }
  return os.str();
}

namespace {
/// Parses a whole string as a non-negative int (no exceptions: the project
/// builds without them).
bool parseInt(const std::string &text, int &out) {
  if (text.empty() || text.size() > 9)
    return false;
  char *end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (*end != '\0' || value < 0)
    return false;
  out = static_cast<int>(value);
  return true;
}

std::optional<std::string> validateScheme(const char *what,
                                          const QuantScheme &s, int headDim) {
  std::ostringstream os;
  if (int(s.format) < 0 || int(s.format) > int(QuantScheme::Format::E5M2) ||
      int(s.scales) < 0 || int(s.scales) > int(QuantScheme::Scales::Head)) {
    os << what << " format or scales has no such value (" << int(s.format)
       << ", " << int(s.scales) << ")";
    return os.str();
  }
  if (s.isStatic() || s.isFp8()) {
    // One shape for every static scheme: the constructor's.
    QuantScheme expected = QuantScheme::staticScheme(
        s.bits, s.isStatic() ? s.scales : QuantScheme::Scales::Tensor,
        s.symmetric, s.format);
    expected.interleaved = s.isFp8() ? false : s.interleaved;
    if (!(s == expected)) {
      os << what << " " << scheme_rules::kStaticRule << " (" << s.tag() << ")";
      return os.str();
    }
  }
  if (s.axis != QuantScheme::Axis::Token &&
      s.axis != QuantScheme::Axis::Channel) {
    os << what << " axis has no such value (" << int(s.axis) << ")";
    return os.str();
  }
  if (!scheme_rules::validBits(s.bits)) {
    os << what << " " << scheme_rules::kBitsRule << ", got " << s.bits;
    return os.str();
  }
  if (s.group != 0 && !scheme_rules::validGroup(s.group)) {
    os << what << " " << scheme_rules::kGroupRule << " or 0 (head_dim), got "
       << s.group;
    return os.str();
  }
  int group = s.groupSize(headDim);
  if (s.axis == QuantScheme::Axis::Token) {
    if (headDim % group != 0) {
      os << what << " group " << group << " does not divide head_dim "
         << headDim;
      return os.str();
    }
    if (headDim * s.bits % 32 != 0) {
      os << what << " head_dim " << headDim << " with " << s.bits
         << "-bit codes does not fill whole 32-bit words";
      return os.str();
    }
  } else if (group * s.bits % 32 != 0) {
    os << what << " a channel group of " << group << " tokens with " << s.bits
       << "-bit codes does not fill whole 32-bit words";
    return os.str();
  }
  return std::nullopt;
}
} // namespace

std::optional<std::string> KernelSpec::validate() const {
  std::ostringstream os;
  if (int(kind) < int(KernelKind::Quantize) ||
      int(kind) > int(KernelKind::Append)) {
    os << "kernel kind has no such value (" << int(kind) << ")";
    return os.str();
  }
  if (dtype != HalfType::F16 && dtype != HalfType::BF16) {
    os << "dtype has no such value (" << int(dtype) << ")";
    return os.str();
  }
  if (headDim <= 0 || headDim > 512) {
    os << "head_dim must be in [1, 512], got " << headDim;
    return os.str();
  }
  bool twoSchemes = kind == KernelKind::Attention || kind == KernelKind::Append;
  if (kind != KernelKind::DenseAttention)
    if (auto error =
            validateScheme(twoSchemes ? "key" : "scheme", key, headDim))
      return error;
  if (twoSchemes)
    if (auto error = validateScheme("value", value, headDim))
      return error;
  // Only quantizing writes scales; reading fp16 scales into bf16 is safe.
  bool writesScales =
      kind == KernelKind::Quantize || kind == KernelKind::Append;
  for (const QuantScheme *s : {&key, &value}) {
    if (!writesScales || dtype != HalfType::BF16 || s->fp32Scales ||
        (s == &value && kind != KernelKind::Append))
      continue;
    QuantScheme fixed = *s;
    fixed.fp32Scales = true;
    os << scheme_rules::kBf16ScalesRule << " (add the x flag: " << s->tag()
       << " -> " << fixed.tag() << ")";
    return os.str();
  }
  if (key.scales == QuantScheme::Scales::Head && kvHeads <= 0 &&
      (kind == KernelKind::Quantize || kind == KernelKind::Dequantize)) {
    os << "per-head static scales need the kv heads (hkv=N), got " << kvHeads;
    return os.str();
  }
  if (zeroPoints != ZeroPointSearch::MinMax) {
    if (zeroPoints != ZeroPointSearch::Hqq) {
      os << "zero point search has no such value (" << int(zeroPoints) << ")";
      return os.str();
    }
    if (kind != KernelKind::Quantize) {
      os << "hqq: only a quantize kernel searches zero points";
      return os.str();
    }
    if (key.symmetric) {
      os << scheme_rules::kHqqRule << " (" << key.tag() << ")";
      return os.str();
    }
    if (key.isStatic()) {
      os << "hqq: a static scheme's zero points are given (" << key.tag()
         << ")";
      return os.str();
    }
  }
  if (!isAttention())
    return std::nullopt;
  if (kvHeads <= 0 || queryHeads <= 0) {
    os << "head counts must be positive, got " << queryHeads << " query and "
       << kvHeads << " kv heads";
    return os.str();
  }
  if (queryHeads % kvHeads != 0) {
    os << "query heads (" << queryHeads << ") must be a multiple of kv heads ("
       << kvHeads << ")";
    return os.str();
  }
  if (nhdPages && (kind != KernelKind::Attention || pageTokens == 0 ||
                   !key.isStatic() || !value.isStatic())) {
    os << scheme_rules::kNhdRule << " (add paged=N; schemes like e4m3pt)";
    return os.str();
  }
  if (chunked && (kind != KernelKind::Attention || pageTokens == 0)) {
    os << "chunked: only the paged quantized attention reads query rows "
          "(add paged=N)";
    return os.str();
  }
  if (pageTokens != 0) {
    if (kind != KernelKind::Attention) {
      os << "paged=" << pageTokens << ": only quantized attention reads a "
         << "paged pool";
      return os.str();
    }
    // Whole tiles (16, 32 or 64 tokens) and whole channel groups per page.
    if (pageTokens < 16 || pageTokens > 4096 || pageTokens % 16 != 0) {
      os << "paged=" << pageTokens
         << ": page tokens must be a multiple of 16 in [16, 4096]";
      return os.str();
    }
    for (const QuantScheme *s : {&key, &value})
      if (s->axis == QuantScheme::Axis::Channel &&
          pageTokens % s->groupSize(headDim) != 0) {
        os << "paged=" << pageTokens << ": page tokens must be a multiple of "
           << "the channel group (" << s->groupSize(headDim) << ")";
        return os.str();
      }
  }
  return std::nullopt;
}

std::optional<std::string> kvq::parseSchemeTag(const std::string &tag,
                                               QuantScheme &scheme) {
  size_t i = 0;
  auto bad = [&]() {
    return "bad scheme '" + tag +
           "': expected <bits><t|c><group|hd>[s][i][x] (2c32, 4thd), "
           "<bits>t<pt|ph>[s][i] (static scales: 4tph) or <e4m3|e5m2><pt|ph>";
  };
  // Static scales per tensor or kv head: "pt" / "ph" at position i.
  auto staticScales = [&](size_t at, QuantScheme::Scales &out) {
    for (int k = 1; k <= int(QuantScheme::Scales::Head); ++k)
      if (tag.compare(at, 2, kStaticScaleWords[k]) == 0) {
        out = QuantScheme::Scales(k);
        return true;
      }
    return false;
  };
  for (auto [name, format] : {std::pair{"e4m3", QuantScheme::Format::E4M3},
                              std::pair{"e5m2", QuantScheme::Format::E5M2}})
    if (tag.rfind(name, 0) == 0) {
      QuantScheme::Scales scales;
      if (tag.size() != 6 || !staticScales(4, scales))
        return bad();
      scheme = QuantScheme::staticScheme(8, scales, true, format);
      return std::nullopt;
    }
  while (i < tag.size() && std::isdigit(static_cast<unsigned char>(tag[i])))
    ++i;
  if (i == 0 || i == tag.size())
    return bad();
  QuantScheme s;
  if (!parseInt(tag.substr(0, i), s.bits))
    return bad();
  if (tag[i] == 't')
    s.axis = QuantScheme::Axis::Token;
  else if (tag[i] == 'c')
    s.axis = QuantScheme::Axis::Channel;
  else
    return bad();
  ++i;
  QuantScheme::Scales scales;
  if (s.axis == QuantScheme::Axis::Token && staticScales(i, scales)) {
    s = QuantScheme::staticScheme(s.bits, scales, false);
    i += 2;
  } else if (tag.compare(i, 2, "hd") == 0) {
    s.group = 0;
    i += 2;
  } else {
    size_t start = i;
    while (i < tag.size() && std::isdigit(static_cast<unsigned char>(tag[i])))
      ++i;
    if (start == i)
      return bad();
    if (!parseInt(tag.substr(start, i - start), s.group) || s.group == 0)
      return bad();
  }
  for (; i < tag.size(); ++i) {
    switch (tag[i]) {
    case 's':
      s.symmetric = true;
      break;
    case 'i':
      s.interleaved = true;
      break;
    case 'x':
      if (s.isStatic()) // always fp32: the flag would say nothing
        return bad();
      s.fp32Scales = true;
      break;
    default:
      return bad();
    }
  }
  scheme = s;
  return std::nullopt;
}

std::optional<std::string> kvq::parseKernelSpec(const std::string &text,
                                                KernelSpec &spec) {
  std::istringstream words(text);
  std::string kind;
  words >> kind;
  KernelSpec s;
  if (kind == "quantize")
    s.kind = KernelKind::Quantize;
  else if (kind == "dequantize")
    s.kind = KernelKind::Dequantize;
  else if (kind == "attention")
    s.kind = KernelKind::Attention;
  else if (kind == "dense-attention")
    s.kind = KernelKind::DenseAttention;
  else if (kind == "append")
    s.kind = KernelKind::Append;
  else
    return "spec must start with quantize, dequantize, attention, "
           "dense-attention or append, got '" +
           kind + "'";
  bool explicitSegments = false;
  s.sink = s.residual = false;
  std::string word;
  while (words >> word) {
    auto number = [&](size_t prefix, int &out) -> std::optional<std::string> {
      if (!parseInt(word.substr(prefix), out))
        return "bad number in '" + word + "'";
      return std::nullopt;
    };
    std::optional<std::string> error;
    bool schemeWord = word.rfind("k=", 0) == 0 || word.rfind("s=", 0) == 0 ||
                      word.rfind("v=", 0) == 0;
    if (schemeWord && s.kind == KernelKind::DenseAttention)
      error =
          "dense-attention takes no quantization scheme, got '" + word + "'";
    else if (word.rfind("k=", 0) == 0 || word.rfind("s=", 0) == 0)
      error = parseSchemeTag(word.substr(2), s.key);
    else if (word.rfind("v=", 0) == 0)
      error = parseSchemeTag(word.substr(2), s.value);
    else if (word.rfind("d=", 0) == 0)
      error = number(2, s.headDim);
    else if (word.rfind("hq=", 0) == 0)
      error = number(3, s.queryHeads);
    else if (word.rfind("hkv=", 0) == 0)
      error = number(4, s.kvHeads);
    else if (word.rfind("paged=", 0) == 0)
      error = number(6, s.pageTokens);
    else if (word.rfind("path=", 0) == 0 && s.isAttention()) {
      if (!parseAttentionPath(word.substr(5), s.path))
        error =
            "path must be auto, cuda-cores or tensor-cores, got '" + word + "'";
    } else if (word == "f16")
      s.dtype = HalfType::F16;
    else if (word == "bf16")
      s.dtype = HalfType::BF16;
    else if (word == "sink")
      s.sink = explicitSegments = true;
    else if (word == "residual")
      s.residual = explicitSegments = true;
    else if (word == "nosegments")
      explicitSegments = true;
    else if (word == "chunked" && s.isAttention())
      s.chunked = true;
    else if (word == "nhd" && s.isAttention())
      s.nhdPages = true;
    else if (word == "hqq" && s.kind == KernelKind::Quantize)
      s.zeroPoints = ZeroPointSearch::Hqq;
    else if (!s.isAttention() && s.kind != KernelKind::Append &&
             parseSchemeTag(word, s.key) == std::nullopt)
      continue;
    else
      error = "unknown spec word '" + word + "'";
    if (error)
      return error;
  }
  if (!explicitSegments)
    s.sink = s.residual = true;
  spec = s;
  return std::nullopt;
}
