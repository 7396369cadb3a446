"""The JSON dialect of model descriptions (ARCH_FORMAT.md §2).

Strict JSON as Python's `json` reads it (so `NaN`, `Infinity` and `-Infinity` are accepted),
plus, as an extension, `// line`, `# line` and `/* block */` comments and trailing commas
outside strings. The extensions are removed by blanking them out with spaces (newlines kept),
so that positions in the cleaned text are positions in the file and a syntax error can name
the file, line and column exactly. Duplicate keys: the last one wins, as in Python.
"""
import json

from .errors import NNXRefError


def _blank(chars, start, end):
    """Replaces chars[start:end] by spaces, keeping newlines so line numbers stay right."""
    for i in range(start, end):
        if chars[i] != "\n":
            chars[i] = " "


def strip_extensions(text):
    """Returns `text` with comments and trailing commas outside strings blanked out.

    Raises ValueError(position, message) for an unterminated block comment.
    """
    chars = list(text)
    n = len(text)
    i = 0
    last_comma = None  # index of a comma that may turn out to be trailing
    while i < n:
        c = text[i]
        if c == '"':
            # Skip a string literal, honouring backslash escapes.
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            last_comma = None
            continue
        if c == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            _blank(chars, i, end)
            i = end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError(i, "unterminated /* comment")
            _blank(chars, i, end + 2)
            i = end + 2
            continue
        if c == ",":
            last_comma = i
        elif c in "]}":
            if last_comma is not None:
                chars[last_comma] = " "
            last_comma = None
        elif not c.isspace():
            last_comma = None
        i += 1
    return "".join(chars)


def _line_col(text, pos):
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def loads(text, name="<string>"):
    """Parses description text; a syntax error names `name`, the line and the column."""
    try:
        clean = strip_extensions(text)
    except ValueError as e:
        pos, msg = e.args
        line, col = _line_col(text, pos)
        raise NNXRefError(f"{name}:{line}:{col}: {msg}") from None
    try:
        return json.loads(clean)
    except json.JSONDecodeError as e:
        raise NNXRefError(f"{name}:{e.lineno}:{e.colno}: {e.msg}") from None


def load(path):
    """Reads a description file (UTF-8)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise NNXRefError(f"{path}: cannot read: {e.strerror}") from None
    return loads(text, str(path))
