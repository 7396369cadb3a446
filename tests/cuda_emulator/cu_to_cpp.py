#!/usr/bin/env python3
"""Rewrites a CUDA source for the CUDA emulator: each `__shared__` declaration is followed by a call
that fills the variable with garbage when a new block reaches it (fresh_shared), and each launch
`KERNEL<<<CONFIG>>>(ARGS);` becomes
`::nnx::emu::launch("KERNEL", [=] { KERNEL(ARGS); }, CONFIG);` (the arguments captured by value, as a launch
copies them), and the emulator's header comes first. Everything else is left as written.

    cu_to_cpp.py SOURCE.cu OUTPUT.cpp
"""
import os
import re
import sys

SHARED = re.compile(r"(__shared__\s+[^;{}()]*?\b([A-Za-z_]\w*)\s*(?:\[[^;\]]*\]\s*)*;)")


def skip_back_template(text, i):
    """text[i] == '>': the index of the matching '<'."""
    depth = 0
    while i >= 0:
        if text[i] == ">":
            depth += 1
        elif text[i] == "<":
            depth -= 1
            if depth == 0:
                return i
        i -= 1
    raise ValueError("unbalanced template arguments before a launch")


def callee_start(text, end):
    """The start of the kernel expression that ends just before `end` (the `<<<`)."""
    i = end - 1
    while i >= 0 and text[i].isspace():
        i -= 1
    if text[i] == ">":
        i = skip_back_template(text, i) - 1
    while i >= 0 and (text[i].isalnum() or text[i] in "_:"):
        i -= 1
    return i + 1


def matching(text, i, open_ch, close_ch):
    """text[i] == open_ch: the index just past its matching close_ch."""
    depth = 0
    in_string = None
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == in_string:
                in_string = None
        elif c in "\"'":
            in_string = c
        elif c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unbalanced " + open_ch + close_ch + " after a launch")


def rewrite(text):
    out = []
    pos = 0
    while True:
        start = text.find("<<<", pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        config_end = text.find(">>>", start)
        if config_end < 0:
            raise ValueError("<<< without >>>")
        callee = callee_start(text, start)
        config = text[start + 3 : config_end]
        paren = config_end + 3
        while text[paren].isspace():
            paren += 1
        if text[paren] != "(":
            raise ValueError("a launch without arguments")
        args_end = matching(text, paren, "(", ")")
        kernel = text[callee:start].strip()
        args = text[paren:args_end]
        out.append(text[pos:callee])
        name = kernel.split("<")[0].split("::")[-1]
        out.append('::nnx::emu::launch("%s", [=] { %s%s; }, %s)' % (name, kernel, args, config))
        pos = args_end


def main():
    source, output = sys.argv[1], sys.argv[2]
    with open(source) as f:
        text = f.read()
    try:
        body = SHARED.sub(r"\1 ::nnx::emu::fresh_shared(&\2, sizeof(\2));", rewrite(text))
    except ValueError as e:
        sys.exit("%s: %s" % (source, e))
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output, "w") as f:
        f.write('#include "tests/cuda_emulator/emulator.h"\n#line 1 "%s"\n%s' % (source, body))


if __name__ == "__main__":
    main()
