"""Regenerates the seed corpora of tests/fuzz/corpus/ from real files: the original package's
files (../shared/fixtures/original-package), examples/seed, and files PyTorch and NumPy write.

    /usr/bin/python3 tests/fuzz/make_corpus.py [FIXTURE_DIR]

Needs torch and numpy (the python3 with them, as for the reference fixtures). The seeds are
committed; run this only to rebuild them. Files are named after what they hold, so a rerun
replaces them instead of adding copies.
"""

import collections
import io
import json
import gzip
import os
import pickle
import shutil
import struct
import sys
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    ROOT, "..", "shared", "fixtures", "original-package")
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def torch_save(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def members(archive_bytes):
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as z:
        return [(i, z.read(i.filename)) for i in z.infolist()]


def rezip(archive_bytes, compression, comment=b""):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for info, data in members(archive_bytes):
            z.writestr(info.filename, data)
        z.comment = comment
    return out.getvalue()


def data_pkl(archive_bytes):
    return next(d for i, d in members(archive_bytes) if i.filename.endswith("/data.pkl"))


# ---- the original package's files and the example ---------------------------------------------
for target in os.listdir(CORPUS) if os.path.isdir(CORPUS) else []:
    shutil.rmtree(os.path.join(CORPUS, target))

tmp_json = read(os.path.join(FIXTURES, "tmp.json"))
tmp_pth = read(os.path.join(FIXTURES, "tmp.pth"))
onefile_pth = read(os.path.join(FIXTURES, "onefile-two-inputs.pth"))
seed_jsons = {n: read(os.path.join(ROOT, "examples", "seed", n))
              for n in ("seed.json", "seed_as_written.json")}

# ---- JSON descriptions ------------------------------------------------------------------------
put("fuzz_json", "original-tmp.json", tmp_json)
for n, data in seed_jsons.items():
    put("fuzz_json", "example-" + n, data)


def plain(o):
    if isinstance(o, (list, tuple)):
        return [plain(x) for x in o]
    if isinstance(o, dict):
        return {k: plain(v) for k, v in o.items() if not k.endswith("state_dicts")}
    return o


onefile = torch.load(io.BytesIO(onefile_pth), weights_only=True)
put("fuzz_json", "original-onefile-two-inputs.json", json.dumps(plain(onefile), indent=4))
put("fuzz_json", "dialect.json", """\
// the dialect's extensions: comments, trailing commas, NaN and Infinity
{
  # a comment
  "locals": {"C": 8, "ratio": 0.5, "big": Infinity, "odd": NaN, "s": "\\u00e9\\ud83d\\ude00",},
  "inputs_channels": ["C"], /* block */
  "outputs_channels": ["2*C", 8],
  "layers": [
    ["Conv2d(C, 16, 3, padding=1)", "2*C"],
    ["nnx.ReLU()"],
    [[3], "torch.nn.modules.conv.Conv2d(8, 8, kernel_size=(1, 1), stride=(1, 1))", [[8], [8]]],
    [[4], "Identity()", [[8], [8]], "torch.nn.modules.linear"],
    ["Constant(t=torch.zeros((1, 8),dtype=torch.float32))", [[], [8]]],
  ],
  "connections": [[0, 0, 3, 0], [-1, 0, 4, 0]],
  "outputs": [[2, 0, 0], [-1, 0, 1],],
  "auto_connect": true,
}
""")
put("fuzz_json", "rel-and-ch.json", json.dumps({
    "inputs_channels": [3, 2],
    "outputs_channels": [5, 5],
    "layers": [
        ["Conv2d(3, 5, 3, padding=same)", 5],
        ["Conv2d(2, 5, 1)", [[2], [5]], [[0, 1]]],
        ["Add(num=2)", [[5, 5], [5]], [[-2, 0], [-1, 0]]],
        ["Cat(dim=1)", [[5, 5], [10]], [[1, 0], [2, 0]]],
        ["Pruner(10, prunable=False, activated=True, threshold={self.threshold}, "
         "num_of_appearances={self.num_of_appearances})", 10],
        ["Conv2d(10, 5, 1)", 5],
        [[7, 8], "BatchNorm2d(5)", [[5], [5]]],
    ],
    "connections": [[3, 0, 7, 0], [6, 0, 8, 0]],
    "outputs": [[7, 0, 0], [8, 0, 1]],
    "auto_connect": True,
}))
put("fuzz_json", "strict.json", json.dumps({
    "inputs_channels": [16], "outputs_channels": [10],
    "layers": ["AdaptiveAvgPool2d(1)", "Flatten()", ["Linear(16, 10)", 10], "Softmax(dim=1)"],
    "outputs": [[-1, 0, 0]], "auto_connect": True}, indent=2))

# ---- constructor strings and channel expressions ----------------------------------------------
calls = set()


def collect(desc):
    for layer in desc.get("layers", desc.get("unique_layers_recreators", [])):
        if isinstance(layer, str):
            calls.add(layer)
        elif isinstance(layer, list) and layer:
            if isinstance(layer[0], list):
                calls.add(layer[1] if len(layer) < 4 else layer[3] + "." + layer[1])
                if len(layer) > 2 and isinstance(layer[2], list):
                    calls.update(x for part in layer[2] for x in part if isinstance(x, str))
            else:
                calls.add(layer[0])


collect(json.loads(tmp_json))
collect(plain(onefile))
calls.update([
    "Conv2d(C, 2*C, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)",
    "torch.nn.Conv2d(3, 64, 3, padding='same', padding_mode='reflect', groups=1)",
    "Upsample(scale_factor=2.0, mode=nearest)",
    "Upsample(size=(4, 6), mode='bilinear', align_corners=True)",
    "MaxPool2d(3, 1, 1, ceil_mode=True)",
    "AvgPool2d(kernel_size=ks, stride=n, count_include_pad=False)",
    "LeakyReLU(negative_slope=0.01, inplace=True)",
    "ELU(alpha=1.0)", "GELU(approximate='tanh')", "Hardtanh(-1.0, 1.0)", "Softplus(beta=1, threshold=20)",
    "Constant(t=torch.zeros((1, 5),dtype=torch.float32))",
    "Variable(t=torch.ones((2, 3), dtype=torch.float16))",
    "Constant(t=torch.tensor([[1.5, -2], [3e-5, 4]], dtype=torch.float64))",
    "Constant(torch.tensor((1, 5),dtype=torch.int64))",
    "nn_executor.pruning.pruners.AllOrNothingPruner(8, prunable=True, activated=False)",
    "own_module.YOLO(anchors=[[10, 13], [16, 30]], cls_fcn='sigmoid', name=\"a\\x41\\u00e9\")",
    "Flatten(start_dim=1, end_dim=-1)", "Dropout(p=0.5)", "Cat(dim=-3)",
    "Linear(in_features=C, out_features=10, bias=None)",
    "2*C", "C//2 + 1", "(C + 1) * n - 3", "-C % 7", "C**2",
])
for k, text in enumerate(sorted(calls)):
    put("fuzz_call", "call-%02d.txt" % k, text)

# ---- .pth files and their parts ---------------------------------------------------------------
put("fuzz_pth", "original-tmp.pth", tmp_pth)
put("fuzz_pth", "original-onefile-two-inputs.pth", onefile_pth)
conv = torch.nn.Conv2d(2, 3, 1)
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
dtypes = collections.OrderedDict(
    (str(dt).split(".")[1], torch.ones(2, dtype=dt))
    for dt in (torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
               torch.int16, torch.int8, torch.uint8, torch.bool))
views = collections.OrderedDict([
    ("base", base), ("transposed", base.t()), ("row", base[1]), ("column", base[:, 2]),
    ("scalar", torch.tensor(7, dtype=torch.int64)), ("empty", torch.zeros(0, 3))])
flat = collections.OrderedDict([("layer_000_type_Conv2d.weight", conv.weight.data),
                                ("layer_000_type_Conv2d.bias", conv.bias.data)])
saved = {
    "state-dict-list.pth": torch_save([conv.state_dict(), collections.OrderedDict()]),
    "parameters.pth": torch_save({"w": torch.nn.Parameter(torch.ones(2, 2)), "n": None,
                                  "f": 1.5, "s": "text", "t": (1, [2, 3]), "b": True}),
    "dtypes.pth": torch_save(dtypes),
    "shared-views.pth": torch_save(views),
    "flat-state-dict.pth": torch_save(flat),
}
for name, data in saved.items():
    put("fuzz_pth", name, data)
put("fuzz_pth", "deflated.pth", rezip(saved["flat-state-dict.pth"], zipfile.ZIP_DEFLATED))

# ---- zip archives ------------------------------------------------------------------------------
put("fuzz_zip", "torch-save.zip", saved["state-dict-list.pth"])
put("fuzz_zip", "deflated.zip", rezip(saved["parameters.pth"], zipfile.ZIP_DEFLATED))
put("fuzz_zip", "stored-with-comment.zip", rezip(saved["dtypes.pth"], zipfile.ZIP_STORED,
                                                 b"a comment PK\x05\x06 inside"))
z64 = io.BytesIO()
with zipfile.ZipFile(z64, "w", zipfile.ZIP_DEFLATED) as z:
    for name, data in (("a/data.pkl", b"\x80\x02}q\x00."), ("a/data/0", bytes(range(64)))):
        with z.open(name, "w", force_zip64=True) as f:
            f.write(data)
put("fuzz_zip", "zip64-entries.zip", z64.getvalue())
empty = io.BytesIO()
zipfile.ZipFile(empty, "w").close()
put("fuzz_zip", "empty.zip", empty.getvalue())

# ---- pickles (data.pkl on its own) ---------------------------------------------------------------
put("fuzz_pickle", "original-tmp.pkl", data_pkl(tmp_pth))
put("fuzz_pickle", "original-onefile-two-inputs.pkl", data_pkl(onefile_pth))
for name in ("parameters.pth", "dtypes.pth", "shared-views.pth"):
    put("fuzz_pickle", name.replace(".pth", ".pkl"), data_pkl(saved[name]))
data = {"list": [1, -2, 2**40, -2**63, 1.5, None, True, False], "tuple": (1, (2, (3,))),
        "str": "\u00e9\U0001F600", "dict": {1: "a", "b": 2.0, (1, 2): []}}
put("fuzz_pickle", "plain-protocol2.pkl", pickle.dumps(data, protocol=2))
put("fuzz_pickle", "plain-protocol4.pkl", pickle.dumps(data, protocol=4))
put("fuzz_pickle", "ordered-dict.pkl",
    pickle.dumps(collections.OrderedDict([("a", [1, 2]), ("b", {"c": 3})]), protocol=2))
put("fuzz_pickle", "protocol0.pkl", pickle.dumps([1, "x", 2.5, None, (True, False)], protocol=0))

# ---- safetensors (the reference layout: 8-byte header length, JSON, data 8-byte aligned) -------
st_codes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
            torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def safetensors(tensors, metadata=True):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": st_codes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


put("fuzz_safetensors", "flat-state-dict.safetensors", safetensors(flat))
put("fuzz_safetensors", "dtypes.safetensors", safetensors(dtypes))
put("fuzz_safetensors", "scalar-and-empty.safetensors", safetensors(collections.OrderedDict(
    [("scalar", torch.tensor(3.0)), ("empty", torch.zeros(0, 2))]), metadata=False))
put("fuzz_safetensors", "empty.safetensors", safetensors({}))

# ---- .npy ------------------------------------------------------------------------------------
def npy(array, version=None, fortran=False):
    buf = io.BytesIO()
    if fortran:
        array = np.asfortranarray(array)
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


a = np.arange(6, dtype=np.float32).reshape(2, 3)
for dt in ("<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1"):
    put("fuzz_npy", "dtype-%s.npy" % dt[1:], npy(a.astype(dt)))
put("fuzz_npy", "fortran.npy", npy(a.reshape(3, 2), fortran=True))
put("fuzz_npy", "big-endian.npy", npy(a.astype(">f4")))
put("fuzz_npy", "version-2.npy", npy(a, version=(2, 0)))
put("fuzz_npy", "version-3.npy", npy(a, version=(3, 0)))
put("fuzz_npy", "scalar.npy", npy(np.float32(1.5)))
put("fuzz_npy", "empty.npy", npy(np.zeros((0, 3), np.float32)))
put("fuzz_npy", "image.npy", npy(np.zeros((1, 3, 4, 5), np.float32)))


# ---- IDX (MNIST's format) ----------------------------------------------------------------------
def idx(array, code):
    head = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


for code, dt in ((0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                 (0x0D, np.float32), (0x0E, np.float64)):
    put("fuzz_idx", "type-%02x.idx" % code, idx(np.arange(24).reshape(2, 3, 4).astype(dt), code))
put("fuzz_idx", "labels.idx", idx(np.arange(10).astype(np.uint8), 0x08))
put("fuzz_idx", "images.idx.gz", gzip.compress(idx(np.zeros((2, 4, 4), np.uint8), 0x08)))

total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(CORPUS) for f in fs)
print("corpus: %d files, %d bytes" % (sum(len(fs) for _, _, fs in os.walk(CORPUS)), total))
