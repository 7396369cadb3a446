// Parses constructor strings ("torch.nn.Conv2d(3, 64, 3, padding=1)") with Python's call
// syntax, never evaluating them: numbers, True/False/None, quoted strings, bare identifiers
// (enum-like keywords and `locals` names), tuples, lists, and tensor literals torch.zeros(...),
// torch.ones(...), torch.tensor(nested, dtype=...).
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "nnx/value.h"

namespace nnx {

// Names usable in constructor strings: a description's `locals`.
using Locals = std::map<std::string, Value, std::less<>>;

// Throws Error(format) "column C: message" on anything outside the subset. A bare identifier
// that names a local is replaced by its value; any other stays an identifier Value.
// Also accepts the package's literal "threshold={self.threshold}" text, reading it as absent.
Call parse_call(std::string_view text, const Locals& locals = {});

// Integer channel expressions of descriptions: "2*C", "C//2 + 1" over ints and locals.
int64_t eval_int_expr(std::string_view text, const Locals& locals);

}  // namespace nnx
