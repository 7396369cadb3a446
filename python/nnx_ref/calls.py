"""Constructor strings and channel expressions (ARCH_FORMAT.md §5, §6), parsed, not executed.

A constructor string is Python call syntax: `[dotted.module.]Class(arg, ..., name=value)`.
It is parsed with Python's own `ast` module and then evaluated by a tiny walker that knows
exactly the value subset of §6, so anything outside it (arithmetic, attribute access, calls
other than tensor literals, ...) is refused instead of run:

- numbers (also negative), `True`/`False`/`None`, quoted strings;
- bare identifiers: a `locals` name gives its value, any other is the identifier as a string
  (PyTorch prints `padding=same`, `mode=nearest`, `padding_mode=reflect` unquoted);
- tuples and lists of values;
- tensor literals `torch.zeros(shape, dtype=...)`, `torch.ones(...)`, `torch.tensor(data,
  dtype=...)` with `dtype=torch.<name>`;
- keyword arguments written as `name={self.name}` (the package's last versions wrote that
  literal text into Pruner reprs) are dropped, i.e. read as the default.

`torch.tensor(...)` stays a `TensorLiteral` until the op is known, because the package's
Constant/Variable wrote `torch.tensor((1, 5),dtype=...)` meaning the *shape* (1, 5), while
anywhere else `torch.tensor([...])` means the values (see `TensorLiteral.as_tensor`).
"""
import ast
from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch


DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float64": torch.float64,
    "double": torch.float64, "float16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "long": torch.int64,
    "int32": torch.int32, "int": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool,
}


@dataclass
class TensorLiteral:
    """`torch.zeros|ones|tensor(...)` as written; turned into a tensor by the op that takes it."""
    kind: str                       # "zeros", "ones" or "tensor"
    data: Any                       # shape (zeros/ones) or nested data (tensor)
    dtype: torch.dtype = torch.float32

    def as_tensor(self, shape_from_tuple=False):
        """The tensor meant. With `shape_from_tuple` (Constant/Variable), a `torch.tensor`
        of a flat tuple of ints is the legacy spelling of a shape and gives zeros of it."""
        if self.kind in ("zeros", "ones"):
            shape = self.data if isinstance(self.data, (tuple, list)) else (self.data,)
            make = torch.zeros if self.kind == "zeros" else torch.ones
            return make(tuple(shape), dtype=self.dtype)
        if shape_from_tuple and isinstance(self.data, tuple) and \
                all(type(v) is int for v in self.data):
            return torch.zeros(self.data, dtype=self.dtype)
        return torch.tensor(self.data, dtype=self.dtype)


@dataclass
class Call:
    """A parsed constructor string."""
    prefix: str                     # dotted module path before the class ("" if none)
    name: str                       # class name
    args: List[Any] = field(default_factory=list)
    kwargs: Dict[str, Any] = field(default_factory=dict)

    @property
    def qualified(self):
        return f"{self.prefix}.{self.name}" if self.prefix else self.name


def _dotted(node):
    """`a.b.c` as a string, or None if the node is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _is_self_placeholder(node):
    """`{self.threshold}`: a set display of one `self.<attr>` (the package's repr bug)."""
    return (isinstance(node, ast.Set) and len(node.elts) == 1
            and isinstance(node.elts[0], ast.Attribute)
            and isinstance(node.elts[0].value, ast.Name) and node.elts[0].value.id == "self")


class _Evaluator:
    def __init__(self, locals_):
        self.locals = locals_ or {}

    def value(self, node):
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float, str, bool)) or node.value is None:
                return node.value
            raise ValueError(f"unsupported literal {node.value!r}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = self.value(node.operand)
            if type(v) not in (int, float):
                raise ValueError("a sign applies to numbers only")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Name):
            return self.locals.get(node.id, node.id)
        if isinstance(node, ast.Tuple):
            return tuple(self.value(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Call):
            return self.tensor_literal(node)
        raise ValueError(f"unsupported expression '{ast.unparse(node)}'")

    def dtype(self, node):
        name = _dotted(node)
        if name is None or not name.startswith("torch.") or name[6:] not in DTYPES:
            raise ValueError(f"unsupported dtype '{ast.unparse(node)}'")
        return DTYPES[name[6:]]

    def tensor_literal(self, node):
        func = _dotted(node.func)
        if func not in ("torch.zeros", "torch.ones", "torch.tensor"):
            raise ValueError(f"unsupported call '{ast.unparse(node)}'")
        dtype = torch.float32
        for kw in node.keywords:
            if kw.arg != "dtype":
                raise ValueError(f"unsupported keyword '{kw.arg}' in {func}")
            dtype = self.dtype(kw.value)
        args = [self.value(a) for a in node.args]
        kind = func[6:]
        if kind == "tensor":
            if len(args) != 1:
                raise ValueError("torch.tensor takes one argument")
            return TensorLiteral(kind, args[0], dtype)
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            shape = tuple(args[0])
        else:
            shape = tuple(args)
        if not all(type(v) is int and v >= 0 for v in shape):
            raise ValueError(f"bad shape in {func}")
        return TensorLiteral(kind, shape, dtype)


def parse_call(text, locals_=None):
    """Parses a constructor string into a `Call`; raises ValueError on anything outside §6."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"syntax error at column {e.offset}") from None
    node = tree.body
    if not isinstance(node, ast.Call):
        raise ValueError("not a constructor call")
    qualified = _dotted(node.func)
    if qualified is None:
        raise ValueError("the called name must be a dotted class name")
    prefix, _, name = qualified.rpartition(".")
    ev = _Evaluator(locals_)
    args = []
    for a in node.args:
        if isinstance(a, ast.Starred):
            raise ValueError("*args is not allowed")
        args.append(ev.value(a))
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError("**kwargs is not allowed")
        if _is_self_placeholder(kw.value):
            continue
        if kw.arg in kwargs:
            raise ValueError(f"keyword '{kw.arg}' given twice")
        kwargs[kw.arg] = ev.value(kw.value)
    return Call(prefix, name, args, kwargs)


_INT_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}


def eval_channels(value, locals_=None):
    """A channel count: an int, or a string expression over ints and `locals` names
    (`"2*C"`, `"C//2 + 1"`: + - * // % and parentheses)."""
    if type(value) is int:
        return value
    if not isinstance(value, str):
        raise ValueError(f"a channel count must be an int or an expression string, not {value!r}")
    locals_ = locals_ or {}

    def walk(node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in locals_:
                raise ValueError(f"unknown name '{node.id}' in channel expression '{value}'")
            v = locals_[node.id]
            if type(v) is not int:
                raise ValueError(f"'{node.id}' is not an int in channel expression '{value}'")
            return v
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _INT_OPS:
            right = walk(node.right)
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
                raise ValueError(f"division by zero in channel expression '{value}'")
            return _INT_OPS[type(node.op)](walk(node.left), right)
        raise ValueError(f"unsupported channel expression '{value}'")

    try:
        tree = ast.parse(value.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"bad channel expression '{value}'") from None
    return walk(tree.body)
