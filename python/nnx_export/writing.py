"""Writing the two-file form exactly as the C++ writer (`nnx convert`) does, with nothing
partial: files are written under temporary names beside their targets and renamed at the end.
"""
import json
import os

import torch


def description_text(desc):
    """The JSON text the C++ writer produces: Python's json.dumps(indent=4), no final newline."""
    return json.dumps(desc, indent=4)


class PendingFiles:
    """NAME.json + NAME.pth written under temporary names in DIR; `commit()` renames them into
    place, `discard()` (or leaving the `with` block on an exception) removes them."""

    def __init__(self, out_prefix):
        self.folder = os.path.dirname(os.path.abspath(out_prefix))
        self.name = os.path.basename(out_prefix)
        tag = f".{self.name}.tmp-{os.getpid()}"
        self.json_path = os.path.join(self.folder, self.name + ".json")
        self.pth_path = os.path.join(self.folder, self.name + ".pth")
        self.tmp_json = os.path.join(self.folder, tag + ".json")
        self.tmp_pth = os.path.join(self.folder, tag + ".pth")

    def write(self, desc, state_dicts):
        os.makedirs(self.folder, exist_ok=True)
        with open(self.tmp_json, "w") as f:
            f.write(description_text(desc))
        torch.save(list(state_dicts), self.tmp_pth)

    def commit(self):
        os.replace(self.tmp_pth, self.pth_path)
        os.replace(self.tmp_json, self.json_path)

    def discard(self):
        for path in (self.tmp_json, self.tmp_pth):
            if os.path.exists(path):
                os.remove(path)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        self.discard()
        return False
