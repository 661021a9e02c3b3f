//===- SourceNames.cpp - the builder's names in the emitted C++ -----------===//

#include "SourceNames.h"

#include "kvq/Conversion/KernelABI.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Regex.h"

#include <algorithm>
#include <cctype>

using namespace mlir;

namespace kvq {
namespace {

/// Every marker line is exactly this prefix and a name.
constexpr llvm::StringLiteral kMarker = "// kvq-name ";

/// The source name a location carries (KernelABI.h), looking inside fused
/// locations (CSE and folding fuse the locations of the ops they merge).
std::optional<StringRef> nameOf(Location loc) {
  if (auto name = dyn_cast<NameLoc>(loc)) {
    StringRef text = name.getName().strref();
    if (text.consume_front(mlir::kvq::abi::kSourceNamePrefix))
      return text;
    return nameOf(name.getChildLoc());
  }
  if (auto fused = dyn_cast<FusedLoc>(loc))
    for (Location inner : fused.getLocations())
      if (std::optional<StringRef> name = nameOf(inner))
        return name;
  return std::nullopt;
}

bool isIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

/// A name the emitter made up: a lower-case letter and a number.
bool isEmitterName(StringRef word) {
  return word.size() >= 2 &&
         std::islower(static_cast<unsigned char>(word[0])) &&
         llvm::all_of(word.drop_front(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c));
         });
}

/// Calls `visit(word)` for each identifier of `text` and `other(char)` for
/// everything between them, comments included (a `//` comment's words are
/// prose, not identifiers).
template <typename Word, typename Other>
void scanIdentifiers(StringRef text, Word visit, Other other) {
  for (size_t i = 0; i < text.size();) {
    if (text.substr(i).starts_with("//")) {
      size_t end = std::min(text.find('\n', i), text.size());
      for (; i < end; ++i)
        other(text[i]);
      continue;
    }
    if (!isIdentChar(text[i])) {
      other(text[i++]);
      continue;
    }
    size_t end = i;
    while (end < text.size() && isIdentChar(text[end]))
      ++end;
    visit(text.slice(i, end));
    i = end;
  }
}

} // namespace

void markNamedValues(emitc::FuncOp func) {
  func.walk([](Operation *op) {
    std::optional<StringRef> name = nameOf(op->getLoc());
    if (!name || op->getParentOfType<emitc::ExpressionOp>())
      return;
    // A loop names its variable; any other op its one result. The storage
    // of loop-carried values (variables, and the loads that read them)
    // shares its loop's location but not its name.
    bool declares =
        isa<emitc::ForOp>(op) ||
        (op->getNumResults() == 1 &&
         !isa<emitc::VariableOp, emitc::LiteralOp, emitc::LoadOp>(op));
    if (!declares)
      return;
    OpBuilder builder(op);
    emitc::VerbatimOp::create(builder, op->getLoc(),
                              builder.getStringAttr(kMarker + *name));
  });
}

std::string nameValues(const std::string &body,
                       const std::vector<std::string> &argNames) {
  // The declaration on a line: `T v12 = ...;`, `T v12;`, `for (T i3 = ...`.
  // (One per call: kernels are generated on several threads at once.)
  const llvm::Regex declaration(
      "^ *(for \\()?[A-Za-z_][A-Za-z0-9_:]* \\**([a-z][0-9]+)( =|;)");

  // Pass 1: drop the markers, noting which emitted name each one names.
  std::string unmarked;
  std::optional<std::string> pending;
  SmallVector<std::pair<std::string, std::string>> marked; // (vN, name)
  SmallVector<StringRef> lines;
  StringRef(body).split(lines, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    StringRef line = lines[i];
    StringRef trimmed = line.ltrim();
    if (trimmed.consume_front(kMarker)) {
      pending = trimmed.str();
      continue;
    }
    SmallVector<StringRef, 4> match;
    if (pending && declaration.match(line, &match))
      marked.push_back({match[2].str(), *pending});
    pending.reset();
    unmarked += line;
    if (i + 1 < lines.size())
      unmarked += '\n';
  }

  // Names already spoken for: every identifier the emitter did not make up
  // (CUDA builtins, prelude helpers, types) and the arguments.
  llvm::StringSet<> taken;
  scanIdentifiers(
      unmarked,
      [&](StringRef word) {
        if (!isEmitterName(word))
          taken.insert(word);
      },
      [](char) {});
  llvm::StringMap<std::string> renamed;
  for (size_t i = 0; i < argNames.size(); ++i) {
    taken.insert(argNames[i]);
    renamed["v" + std::to_string(i + 1)] = argNames[i];
  }
  for (const auto &[emitted, name] : marked) {
    if (renamed.contains(emitted))
      continue;
    std::string unique = name;
    for (int n = 2; taken.contains(unique); ++n)
      unique = name + "_" + std::to_string(n);
    taken.insert(unique);
    renamed[emitted] = unique;
  }

  // Pass 2: rename every use.
  std::string out;
  out.reserve(unmarked.size());
  scanIdentifiers(
      unmarked,
      [&](StringRef word) {
        auto it = renamed.find(word);
        out += it == renamed.end() ? word.str() : it->second;
      },
      [&](char c) { out += c; });
  return out;
}

} // namespace kvq
