"""Checks of the oracle itself: python -m nnx_ref.selfcheck (exit 0 when all pass).

The reference executor is compared with networks written out by hand in plain PyTorch
(functional calls, no graph machinery), on the files the original package wrote and on the
seed example, and its parsers with small literal cases. What is compared by hand here is
independent of nnx_ref's graph code, so a wiring or format bug shows as a difference.
"""
import os
import sys

import torch
import torch.nn.functional as F

from . import jsonc, load, ops
from .calls import eval_channels, parse_call
from .description import parse_description
from .errors import NNXRefError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ORIGINAL = os.path.join(ROOT, "..", "shared", "fixtures", "original-package")
SEED = os.path.join(ROOT, "examples", "seed")


def _package_sigmoid(x):
    """The package's own gate sigmoid: 1 / (1 + exp(-100 x + 86))."""
    return 1 / (1 + torch.exp(-100 * x + 86))


def _legacy_pruner(x, w):
    return x * (_package_sigmoid(w) * w ** 2)


def _conv(x, sd, **kw):
    return F.conv2d(x, sd["weight"], sd.get("bias"), **kw)


def _bn(x, sd):
    return F.batch_norm(x, sd["running_mean"], sd["running_var"], sd["weight"], sd["bias"],
                        False, 0.0, 1e-5)


def hand_tmp(x, sds):
    """tmp.json written out: conv-bn-relu-pruner-pool, conv7-bn-relu-pool-pruner,
    conv-conv-pruner (legacy pruners)."""
    y = _legacy_pruner(F.relu(_bn(_conv(x, sds[0], padding=1), sds[1])), sds[3]["weights"])
    y = F.max_pool2d(y, 2, 2)
    y = F.max_pool2d(F.relu(_bn(_conv(y, sds[5], padding=3), sds[6])), 2, 2)
    y = _legacy_pruner(y, sds[9]["weights"])
    y = _conv(_conv(y, sds[10], padding=1), sds[11], padding=1)
    return (_legacy_pruner(y, sds[12]["weights"]),)


def hand_onefile(x, x2, sds):
    """onefile-two-inputs.pth written out from its connections."""
    a = F.relu(_bn(_conv(x, sds[0], padding=1), sds[1]))          # nodes 1-3
    b = F.leaky_relu(_conv(x, sds[3]), 0.2)                       # nodes 4-5
    s = a - b                                                     # node 6 (node 7 unused)
    u = F.interpolate(F.max_pool2d(s, 3, 1, 1), scale_factor=1.0, mode="nearest")
    c = torch.cat([s, u], 1)                                      # node 10
    y = _conv(_conv(c, sds[10], padding=1), sds[10], padding=1)   # nodes 11, 12: shared
    return _legacy_pruner(y, sds[11]["weights"]), x2


def hand_seed(x, sds, yolo):
    """seed.json written out (the corrected example)."""
    y = F.relu(_bn(_conv(x, sds[0], padding=1), sds[1]))
    n4 = F.max_pool2d(y, 2, 2)
    y = F.max_pool2d(F.relu(_bn(_conv(n4, sds[4], padding=1), sds[5])), 2, 2)
    z = F.max_pool2d(_conv(x, sds[8], padding=3), 4, 4)
    y = y + z
    y = F.max_pool2d(F.relu(_bn(_conv(y, sds[11], padding=1), sds[12])), 2, 2)
    y = _conv(y, sds[15])
    return yolo(y, x), n4


def _close(name, got, want, tol=1e-5):
    worst = 0.0
    for g, w in zip(got, want):
        assert g.shape == w.shape, f"{name}: shape {tuple(g.shape)} != {tuple(w.shape)}"
        worst = max(worst, ((g - w).abs().max() / max(1.0, w.abs().max())).item())
    assert len(got) == len(want), f"{name}: {len(got)} outputs != {len(want)}"
    assert worst <= tol, f"{name}: difference {worst:.3g}"
    return worst


def check_original_files():
    gen = torch.Generator().manual_seed(0)
    net = load(os.path.join(ORIGINAL, "tmp.json"), os.path.join(ORIGINAL, "tmp.pth"))
    sds = torch.load(os.path.join(ORIGINAL, "tmp.pth"))
    x = torch.randn(2, 3, 32, 48, generator=gen)
    d1 = _close("tmp.json", net(x), hand_tmp(x, sds))
    path = os.path.join(ORIGINAL, "onefile-two-inputs.pth")
    net = load(path)
    sds = torch.load(path)["unique_layers_state_dicts"]
    x, x2 = torch.randn(1, 3, 16, 16, generator=gen), torch.randn(1, 2, 8, 8, generator=gen)
    d2 = _close("onefile-two-inputs.pth", net(x, x2), hand_onefile(x, x2, sds))
    return f"original files agree with hand-written PyTorch ({d1:.2g}, {d2:.2g})"


def check_seed():
    import importlib.util
    spec = importlib.util.spec_from_file_location("seed_yolo", os.path.join(SEED, "yolo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = load(os.path.join(SEED, "seed.json"), user_ops={"own_module.YOLO": module.YOLO})
    sds = [net.layer_module(layer.u).state_dict() for layer in net.graph.layers]
    x = torch.randn(3, 64, 96, generator=torch.Generator().manual_seed(1))
    got = net(x)
    want = hand_seed(x.unsqueeze(0), sds, module.YOLO([[3, 4]]))
    d = _close("seed.json", got, want)
    # The YOLO head against its docstring, element by element at a few places.
    head = module.YOLO([[3, 4], [5, 6]])
    t = torch.randn(1, 2 * (5 + 2), 3, 4)
    out = head(t, torch.zeros(1, 3, 12, 20))
    a, i, j = 1, 2, 3
    base = a * 7
    assert torch.isclose(out[0, base + 0, i, j], (torch.sigmoid(t[0, base, i, j]) + j) * 5)
    assert torch.isclose(out[0, base + 1, i, j], (torch.sigmoid(t[0, base + 1, i, j]) + i) * 4)
    assert torch.isclose(out[0, base + 2, i, j], torch.exp(t[0, base + 2, i, j]) * 5)
    assert torch.isclose(out[0, base + 3, i, j], torch.exp(t[0, base + 3, i, j]) * 6)
    assert torch.isclose(out[0, base + 6, i, j], torch.sigmoid(t[0, base + 6, i, j]))
    return f"seed.json agrees with hand-written PyTorch ({d:.2g}); YOLO matches its docstring"


def check_ops():
    w = torch.tensor([0.5, 0.74, 0.76, 0.86, 1.0]).reshape(1, 5, 1, 1)
    x = torch.randn(2, 5, 3, 3)
    p = ops.Pruner(5)
    p.load_state_dict({"pruner_weight": w})
    want = x * torch.sigmoid(100 * w - 86) * w * (w > 0.75).float()
    _close("Pruner", [p(x)], [want], 1e-6)
    p = ops.Pruner(5)
    p.load_state_dict({"weights": w})
    assert p.legacy
    _close("legacy Pruner", [p(x)], [_legacy_pruner(x, w)], 1e-6)
    p = ops.AllOrNothingPruner(5)
    p.load_state_dict({"pruner_weight": w})
    m = w.mean()
    _close("AllOrNothingPruner", [p(x)], [x * torch.sigmoid(100 * m - 86) * w * (m > 0.75)],
           1e-6)
    p = ops.Pruner(5, activated=False)
    assert p(x) is x
    a, b, c = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 1, 1), torch.randn(1, 3, 4, 4)
    _close("Sub", [ops.Sub(3)(a, b, c)], [(a - b) - c], 0)
    assert ops.Add()(a) is a
    assert ops.Identity()(a, b) == (a, b)
    return "ops follow the formulas of §8"


def check_parsers():
    text = '{"a": [1, 2,], // c\n "b": "x // not a comment", # c\n "c": NaN, /* x */ "d": {}, }'
    obj = jsonc.loads(text)
    assert obj["a"] == [1, 2] and obj["b"] == "x // not a comment" and obj["c"] != obj["c"]
    try:
        jsonc.loads('{\n  "a": [1 2]\n}', "f.json")
        raise AssertionError("syntax error not found")
    except NNXRefError as e:
        assert str(e).startswith("f.json:2:"), str(e)
    call = parse_call("torch.nn.modules.conv.Conv2d(3, 5, kernel_size=(3, 3), padding=same)")
    assert (call.prefix, call.name, call.args) == ("torch.nn.modules.conv", "Conv2d", [3, 5])
    assert call.kwargs == {"kernel_size": (3, 3), "padding": "same"}
    call = parse_call("Pruner(ch=C, threshold={self.threshold})", {"C": 7})
    assert call.kwargs == {"ch": 7}
    c = parse_call("Constant(t=torch.tensor((1, 5),dtype=torch.float32))")
    assert c.kwargs["t"].as_tensor(True).shape == (1, 5)
    for bad in ("Conv2d(3, 4, __import__('os'))", "Conv2d(2*3, 4)", "f()(1)"):
        try:
            parse_call(bad)
            raise AssertionError(f"accepted {bad}")
        except ValueError:
            pass
    assert eval_channels("2*C + 1", {"C": 4}) == 9 and eval_channels("C//2", {"C": 5}) == 2
    # Smallest unused index, in description order; "previous" in description order.
    g = parse_description({"inputs_channels": [3], "outputs_channels": [3], "outputs": [[1, 0, 0]],
                           "auto_connect": True,
                           "layers": [[[2], "ReLU()"], ["ReLU()"], ["ReLU()"]]})
    assert [layer.nodes for layer in g.layers] == [[2], [1], [3]] and not g.faults, g.faults
    return "JSON dialect, constructor strings and node indices parse as specified"


def main():
    torch.set_num_threads(1)
    failed = 0
    for check in (check_parsers, check_ops, check_original_files, check_seed):
        try:
            print(f"ok   {check.__name__}: {check()}")
        except Exception as e:  # report every check, then fail
            failed += 1
            print(f"FAIL {check.__name__}: {type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
