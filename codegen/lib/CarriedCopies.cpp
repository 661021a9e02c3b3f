//===- CarriedCopies.cpp - read loop-carried variables in place -----------===//

#include "CarriedCopies.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Regex.h"

#include <cctype>

namespace kvq {
namespace {

using llvm::StringRef;

bool isIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

/// Whether `line` holds the identifier `name` (whole word, outside a `//`
/// comment).
bool mentions(StringRef line, StringRef name) {
  line = line.substr(0, line.find("//"));
  for (size_t at = line.find(name); at != StringRef::npos;
       at = line.find(name, at + 1)) {
    bool before = at > 0 && isIdentChar(line[at - 1]);
    size_t end = at + name.size();
    bool after = end < line.size() && isIdentChar(line[end]);
    if (!before && !after)
      return true;
  }
  return false;
}

/// `line` with every whole-word `from` replaced by `to` (comments kept).
std::string replaceWord(StringRef line, StringRef from, StringRef to) {
  std::string out;
  size_t comment = line.find("//");
  for (size_t i = 0; i < line.size();) {
    bool word =
        i < comment && line.substr(i).starts_with(from) &&
        (i == 0 || !isIdentChar(line[i - 1])) &&
        (i + from.size() >= line.size() || !isIdentChar(line[i + from.size()]));
    if (word) {
      out += to;
      i += from.size();
    } else {
      out += line[i++];
    }
  }
  return out;
}

/// Braces a line opens minus those it closes.
int depthChange(StringRef line) {
  line = line.substr(0, line.find("//"));
  return int(line.count('{')) - int(line.count('}'));
}

/// The last line of the block that line `from` is in.
size_t blockEnd(llvm::ArrayRef<std::string> lines, size_t from) {
  int depth = 0;
  for (size_t i = from; i < lines.size(); ++i) {
    // A line that closes the block ("}" or "} else {") ends it.
    StringRef trimmed = StringRef(lines[i]).ltrim();
    if (depth == 0 && trimmed.starts_with("}"))
      return i - 1;
    depth += depthChange(lines[i]);
  }
  return lines.size() - 1;
}

bool assigns(StringRef line, StringRef variable) {
  StringRef trimmed = line.ltrim();
  return trimmed.consume_front(variable) && trimmed.starts_with(" = ");
}

/// Tries to drop the copy on line `at` (`T copy = variable;`); true if it
/// did.
bool dropCopy(llvm::SmallVectorImpl<std::string> &lines, size_t at,
              StringRef copy, StringRef variable) {
  size_t end = blockEnd(lines, at + 1);
  size_t lastUse = at;
  for (size_t i = at + 1; i <= end && i < lines.size(); ++i)
    if (mentions(lines[i], copy))
      lastUse = i;
  // The variable must keep its value while the copy is read: no assignment
  // before the last use, and none later inside a loop that reaches back to
  // a use.
  for (size_t i = at + 1; i < lastUse; ++i)
    if (assigns(lines[i], variable))
      return false;
  for (size_t i = at + 1; i <= lastUse; ++i) {
    if (!StringRef(lines[i]).ltrim().starts_with("for ("))
      continue;
    size_t loopEnd = blockEnd(lines, i + 1);
    for (size_t j = lastUse + 1; j <= loopEnd; ++j)
      if (assigns(lines[j], variable))
        return false;
  }
  for (size_t i = at + 1; i <= lastUse; ++i)
    lines[i] = replaceWord(lines[i], copy, variable);
  lines.erase(lines.begin() + at);
  return true;
}

} // namespace

std::string dropCarriedCopies(const std::string &body) {
  // A variable: declared without a value (`float v9;`).
  const llvm::Regex variableDecl(
      "^ *[A-Za-z_][A-Za-z0-9_:]* \\**([A-Za-z_][A-Za-z0-9_]*);$");
  // A copy of one: `float v11 = v9;`.
  const llvm::Regex copyDecl(
      "^ *[A-Za-z_][A-Za-z0-9_:]* ([A-Za-z_][A-Za-z0-9_]*) = "
      "([A-Za-z_][A-Za-z0-9_]*);$");

  llvm::SmallVector<std::string> lines;
  {
    llvm::SmallVector<StringRef> parts;
    StringRef(body).split(parts, '\n');
    for (StringRef part : parts)
      lines.push_back(part.str());
  }
  llvm::StringSet<> variables;
  for (const std::string &line : lines) {
    llvm::SmallVector<StringRef, 2> match;
    if (variableDecl.match(line, &match))
      variables.insert(match[1]);
  }
  for (size_t i = 0; i < lines.size();) {
    llvm::SmallVector<StringRef, 3> match;
    if (copyDecl.match(lines[i], &match) && variables.contains(match[2])) {
      std::string copy = match[1].str(), variable = match[2].str();
      if (dropCopy(lines, i, copy, variable))
        continue; // line i is now the next line
    }
    ++i;
  }
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    out += lines[i];
    if (i + 1 < lines.size())
      out += '\n';
  }
  return out;
}

} // namespace kvq
