"""Whole-network fixtures: descriptions + weights + inputs + PyTorch reference outputs.

`generate(folder)` (called by gen_fixtures.py with <build>/fixtures/models) writes one
sub-folder per case, holding the model files and

    case.json  {"arch": "<.json or one-file .pth>", "weights": "<file>" or null,
                "strict": true|false, "inputs": ["in0.npy", ...], "refs": ["ref0.npy", ...],
                "tol": 1e-4, "user_ops": [] or ["own_module.YOLO"]}

Inputs are float32 C-order .npy files bound to the network inputs in order; refs are the
float32 outputs of the reference executor (nnx_ref), computed by loading the files exactly as
written into the folder. Agreement is max|got - ref| / max(1, max|ref|) <= tol. A user op
named in `user_ops` is the one of examples/seed/ (own_module.YOLO: examples/seed/yolo.py).

Everything is seeded: the same source gives the same bytes.
"""
import json
import os
import shutil
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

import nnx_ref
from nnx_ref import ops, safetensors_io
from nnx_ref.description import parse_description

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORIGINAL = os.path.join(ROOT, "..", "shared", "fixtures", "original-package")
SEED_DIR = os.path.join(ROOT, "examples", "seed")
TOL = 1e-4


def user_op_classes():
    """The user ops a case may name, by qualified name."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("nnx_seed_yolo", os.path.join(SEED_DIR, "yolo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {"own_module.YOLO": module.YOLO}


# ------------------------------------------------------------------------- writing helpers
def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=4)
        f.write("\n")


def build(arch, seed=0, user_ops=None):
    """An Executor with PyTorch's default initialisation after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return nnx_ref.Executor(parse_description(arch), user_ops)


def randomise(ex, seed):
    """Makes default-initialised weights informative: BatchNorm gets random running stats
    and affine parameters (else it is nearly the identity in eval mode), pruners get gates
    spread over the interesting range (masked, partly open, open), constants get values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in ex.children():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                if module.affine:
                    module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                    module.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            elif isinstance(module, ops.Pruner):
                module.weight.copy_(pruner_values(module.ch, module.threshold, gen))
            elif isinstance(module, ops.Constant):
                module.t.copy_(torch.randn(module.t.shape, generator=gen))


def pruner_values(ch, threshold, gen, mean=None):
    """Gate weights of shape (1, ch, 1, 1): cycling through clearly below the threshold,
    in the sigmoid's steep part (0.80 .. 0.92) and near 1; never within 0.02 of the
    threshold, so float rounding cannot flip the hard mask."""
    levels = [threshold - 0.1, 0.82, 0.86, 0.9, 1.0, 1.02]
    w = torch.tensor([levels[i % len(levels)] for i in range(ch)], dtype=torch.float32)
    w = w + (torch.rand(ch, generator=gen) - 0.5) * 0.02
    w = torch.where((w - threshold).abs() < 0.02, w + 0.05, w)
    if mean is not None:
        w = w - w.mean() + mean
    return w.reshape(1, ch, 1, 1)


def layer_state_dicts(ex):
    """One state dict per description (the two-file form)."""
    return [ex.layer_module(layer.u).state_dict() for layer in ex.graph.layers]


def save_list(ex, path, edit=None):
    sds = layer_state_dicts(ex)
    if edit:
        edit(sds)
    torch.save(sds, path)


def onefile_description(ex, state_key="layers_state_dicts", layers_key="layers",
                        four_element=False):
    """The one-file form as the package's save() wrote it: explicit connections, tuples for
    channel lists and connections, layers as [IDX, "module.Repr", CH] (released versions)
    or [IDX, REPR, CH, MODULE] (mid-2022 development versions)."""
    g = ex.graph
    layers = []
    for layer in g.layers:
        module = ex.layer_module(layer.u)
        path = "nn_executor.models" if isinstance(module, tuple(ops.PACKAGE_OPS.values())) \
            else type(module).__module__
        ch = (list(layer.in_ch), list(layer.out_ch))
        text = repr(module)
        if four_element:
            layers.append([list(layer.nodes), text, ch, path])
        else:
            layers.append([list(layer.nodes), f"{path}.{text}", ch])
    return {
        "connections": [(s, o, d, i) for (d, i), (s, o) in sorted(g.feeds.items())],
        "outputs": [(s, o, k) for k, (s, o) in enumerate(g.outputs)],
        "inputs_channels": list(g.inputs_channels),
        "outputs_channels": list(g.outputs_channels),
        layers_key: layers,
        state_key: layer_state_dicts(ex),
    }


class Case:
    """Collects one case folder and writes its case.json and references."""

    def __init__(self, root, name):
        self.name = name
        self.folder = os.path.join(root, name)
        os.makedirs(self.folder, exist_ok=True)

    def path(self, file):
        return os.path.join(self.folder, file)

    def finish(self, arch, weights, inputs, strict=True, user_ops=(), tol=TOL):
        files = []
        for k, x in enumerate(inputs):
            files.append(f"in{k}.npy")
            np.save(self.path(files[-1]), np.ascontiguousarray(x.numpy(), dtype=np.float32))
        known = user_op_classes()
        classes = {name: known[name] for name in user_ops}
        xs = [torch.from_numpy(np.load(self.path(f))) for f in files]
        weights_path = None if weights is None else self.path(weights)
        faults = nnx_ref.check(self.path(arch), weights_path, strict, classes, xs)
        if faults:
            raise AssertionError(f"fixture {self.name} is not valid: {faults}")
        net = nnx_ref.load(self.path(arch), weights_path, strict, classes, seed=0)
        outs = net(*xs)
        refs = []
        for k, y in enumerate(outs):
            refs.append(f"ref{k}.npy")
            np.save(self.path(refs[-1]), y.detach().float().contiguous().numpy())
        write_json(self.path("case.json"), {
            "arch": arch, "weights": weights, "strict": strict, "inputs": files,
            "refs": refs, "tol": tol, "user_ops": list(user_ops)})
        return outs


def rand(gen, *shape, scale=1.0):
    return torch.randn(shape, generator=gen) * scale


# --------------------------------------------------------------------------- original files
def original_cases(root):
    gen = torch.Generator().manual_seed(1)
    c = Case(root, "original_tmp")
    shutil.copyfile(os.path.join(ORIGINAL, "tmp.json"), c.path("tmp.json"))
    shutil.copyfile(os.path.join(ORIGINAL, "tmp.pth"), c.path("tmp.pth"))
    c.finish("tmp.json", "tmp.pth", [rand(gen, 1, 3, 32, 32)])

    for name, shapes in (("original_onefile", [(1, 3, 16, 16), (1, 2, 8, 8)]),
                         ("original_onefile_b2", [(2, 3, 20, 12), (2, 2, 5, 7)])):
        c = Case(root, name)
        shutil.copyfile(os.path.join(ORIGINAL, "onefile-two-inputs.pth"),
                        c.path("onefile-two-inputs.pth"))
        c.finish("onefile-two-inputs.pth", None, [rand(gen, *s) for s in shapes])

    # The same tmp network, weights as the executor's own flat state dict.
    c = Case(root, "flat_keys")
    shutil.copyfile(os.path.join(ORIGINAL, "tmp.json"), c.path("tmp.json"))
    per_layer = torch.load(os.path.join(ORIGINAL, "tmp.pth"))
    arch = nnx_ref.jsonc.load(c.path("tmp.json"))
    g = parse_description(arch)
    flat = OrderedDict()
    for layer, sd in zip(g.layers, per_layer):
        for k, v in sd.items():
            flat[f"layer_{layer.u:03d}_type_{layer.call.name}.{k}"] = v
    torch.save(flat, c.path("tmp_flat.pth"))
    c.finish("tmp.json", "tmp_flat.pth", [rand(gen, 1, 3, 24, 40)])


# ------------------------------------------------------------------------------- the seed
def seed_cases(root):
    yolo = user_op_classes()
    arch = nnx_ref.jsonc.load(os.path.join(SEED_DIR, "seed.json"))
    ex = build(arch, seed=0, user_ops=yolo)
    randomise(ex, seed=2)
    gen = torch.Generator().manual_seed(3)
    for name, x in (("seed", rand(gen, 1, 3, 96, 128)),
                    ("seed_chw", rand(gen, 3, 64, 96)),
                    ("seed_b2", rand(gen, 2, 3, 64, 64))):
        c = Case(root, name)
        shutil.copyfile(os.path.join(SEED_DIR, "seed.json"), c.path("seed.json"))
        save_list(ex, c.path("seed.pth"))
        c.finish("seed.json", "seed.pth", [x], user_ops=["own_module.YOLO"])


# ------------------------------------------------------------------------ feature networks
def L(*x):
    return list(x)


AUTO_CONNECT = {
    # auto_connect matches declared channels, nearest node first, outputs in order: node 4
    # is fed from node 1 (not the previous node 3), node 7 from output 1 of node 6, node 11
    # from node 7; node 10's input 1 comes from an explicit connection.
    "auto_connect": True,
    "connections": [[5, 0, 10, 1]],
    "outputs": [[10, 0, 0], [11, 0, 1], [-6, 0, 2]],
    "inputs_channels": [3],
    "outputs_channels": [5, 4, 4],
    "layers": [
        ["Conv2d(3,8,3,padding=1)", 8],
        ["Conv2d(8,4,1)", 4],
        ["ReLU()"],
        ["Conv2d(8,6,3,padding=1)", [[8], [6]]],
        ["Conv2d(3,5,1)", [[3], [5]]],
        ["Identity()", [[4, 6], [4, 6]]],
        ["Conv2d(6,4,1)", [[6], [4]]],
        ["Cat(dim=1)", [[4, 5], [9]]],
        ["Conv2d(9,5,3,padding=1)", [[9], [5]]],
        ["Add(num=2)", [[5, 5], [5]]],
        ["Sigmoid()", [[4], [4]]],
    ],
}

RELATIVE = {
    # Relative sources in connections and REL, an absolute REL source ([0, 0]), one Conv2d
    # used at nodes 2 and 4 (shared weights), negative outputs, an input passed straight out.
    "connections": [[0, 0, 1, 0], [-1, 0, 2, 0], [-1, 0, 3, 0], [-1, 0, 4, 0]],
    "outputs": [[-1, 0, 0], [-3, 0, 1], [0, 0, 2], [-2, 0, 3]],
    "inputs_channels": [4],
    "outputs_channels": [4, 4, 4, 4],
    "layers": [
        [[1], "Conv2d(4,4,3,padding=1)", [[4], [4]]],
        [[2, 4], "Conv2d(4,4,3,padding=1,bias=False)", [[4], [4]]],
        [[3], "LeakyReLU(negative_slope=0.1)", [[4], [4]]],
        ["Add(num=2)", [[4, 4], [4]], [[-1, 0], [-4, 0]]],
        ["Mul(num=2)", [[4, 4], [4]], [[0, 0], [-3, 0]]],
    ],
}

# Every layer form of ARCH_FORMAT.md §5, every name prefix of §6, locals in constructor
# strings and channel expressions, description order differing from node order (node 4 is
# described after node 5), and the dialect's extensions (comments, trailing commas, NaN).
FORMS_TEXT = """{
    // every layer form, written by hand
    "locals": {"C": 4, "C2": 8, "K": 3, "MODE": "nearest", "UNUSED": NaN,},
    "auto_connect": true,
    "inputs_channels": [4],
    "outputs_channels": [4],   # trailing commas and comments are extensions of the dialect
    "outputs": [[-1, 0, 0]],
    "layers": [
        ["nnx.Identity()"],                                        /* [CALL]        -> 1 */
        "ReLU()",                                                  // CALL          -> 2
        ["torch.nn.Conv2d(C, C2, K, padding=1)", "2*C"],           // [CALL, OUT]   -> 3
        [[5], "nn_executor.pruning.pruners.Pruner(ch=C2, prunable=True, activated=True, threshold={self.threshold}, num_of_appearances={self.num_of_appearances})"],
        ["torch.nn.BatchNorm2d(C2)", [["C2"], ["C2"]]],             // [CALL, CH]    -> 4
        [[6], "Conv2d(8, 4, kernel_size=(1, 1), stride=(1, 1))", [[8], [4]], "torch.nn.modules.conv"],
        [[7], "torch.nn.modules.conv.Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)", [[4], [4]]],
        [[8], "torch.nn.modules.pooling.MaxPool2d(kernel_size=2)", "C"],   // [IDX, CALL, OUT]
        ["nn_executor.models.Upsample(size=None, scale_factor=2.0, mode=MODE, align_corners=None)"],
        ["nn_executor.models.Sub(num=2)", [["C", "C"], ["C"]], [[-1, 0], [-3, 0]]],  // REL
    ],
}
"""

PRUNERS = {
    # Both Pruner generations (node 3 is given the legacy key `weights` when saved), an
    # inactive Pruner, the `{self.threshold}` repr, AllOrNothingPruner open and closed.
    "auto_connect": True,
    "outputs": [[6, 0, 0], [8, 0, 1], [3, 0, 2], [4, 0, 3]],
    "inputs_channels": [6],
    "outputs_channels": [6, 6, 6, 6],
    "layers": [
        ["Conv2d(6,6,3,padding=1)"],
        ["nn_executor.models.Pruner(ch=6, prunable=True, activated=True)"],
        ["Pruner(ch=6, prunable=True, activated=True)"],
        ["Pruner(ch=6, prunable=False, activated=False)"],
        ["Pruner(ch=6, prunable=False, activated=True, threshold={self.threshold}, "
         "num_of_appearances={self.num_of_appearances})"],
        ["AllOrNothingPruner(ch=6, prunable=True, activated=True)"],
        ["Conv2d(6,6,1)"],
        ["nn_executor.models.AllOrNothingPruner(ch=6, prunable=True, activated=True, "
         "threshold=0.9, num_of_appearances=1)"],
        ["Pruner(ch=6, threshold=0.9)"],
    ],
}

CONST_VAR = {
    "auto_connect": True,
    "outputs": [[5, 0, 0], [6, 0, 1], [7, 0, 2]],
    "inputs_channels": [4],
    "outputs_channels": [4, 3, 4],
    "layers": [
        ["Conv2d(4,4,3,padding=1)"],
        ["Constant(t=torch.zeros((1, 4, 1, 1),dtype=torch.float32))", [[], [4]]],
        ["Variable(t=torch.tensor((1, 4, 1, 1),dtype=torch.float32))", [[], [4]]],
        ["Add(num=2)", [[4, 4], [4]], [[1, 0], [2, 0]]],
        ["Mul(num=2)", [[4, 4], [4]], [[-1, 0], [3, 0]]],
        ["Constant(t=torch.zeros((1,3),dtype=torch.float32))", [[], [3]]],
        ["Variable(t=torch.ones((1, 4, 1, 1)))", [[], [4]]],
    ],
}

NONSTRICT = {
    # Loaded with strict=false: the Conv2d's state dict has an unexpected extra key, the
    # ReLU's one too, BatchNorm lacks num_batches_tracked (unused in eval) and the Constant
    # lacks `t` (so its literal, ones, is the value): no result depends on an init choice.
    "auto_connect": True,
    "outputs": [[-1, 0, 0]],
    "inputs_channels": [3],
    "outputs_channels": [4],
    "layers": [
        ["Conv2d(3,4,3,padding=1)", 4],
        ["BatchNorm2d(4)"],
        ["ReLU()"],
        ["Constant(t=torch.ones((1, 4, 1, 1),dtype=torch.float32))", [[], [4]]],
        ["Add(num=2)", [[4, 4], [4]], [[-2, 0], [-1, 0]]],
    ],
}

UPSAMPLE_CAT_ELTWISE = {
    "auto_connect": True,
    "outputs": [[6, 0, 0], [11, 0, 1], [13, 0, 2], [12, 1, 3]],
    "inputs_channels": [4],
    "outputs_channels": [20, 4, 4, 4],
    "layers": [
        ["Conv2d(4,4,3,padding=1)", 4],                                         # 1
        ["Upsample(scale_factor=2.0, mode=nearest)"],                           # 2
        ["torch.nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)",
         [[4], [4]], [[1, 0]]],                                                 # 3
        ["nn_executor.models.Upsample(size=None, scale_factor=2.0, mode='bilinear', "
         "align_corners=False)", [[4], [4]], [[1, 0]]],                         # 4
        ["Upsample(size=(12, 16), mode=bilinear, align_corners=True)",
         [[4], [4]], [[1, 0]]],                                                 # 5
        ["Cat(dim=1)", [[4, 4, 4, 4, 4], [20]],
         [[2, 0], [3, 0], [4, 0], [5, 0], [-4, 0]]],                            # 6
        ["AdaptiveAvgPool2d(1)", [[4], [4]], [[1, 0]]],                         # 7
        ["Add(num=2)", [[4, 4], [4]], [[2, 0], [7, 0]]],                        # 8
        ["Sub(num=3)", [[4, 4, 4], [4]], [[3, 0], [7, 0], [4, 0]]],             # 9
        ["Mul(num=2)", [[4, 4], [4]], [[7, 0], [5, 0]]],                        # 10
        ["Mul(num=1)", [[4], [4]], [[10, 0]]],                                  # 11
        ["Identity()", [[4, 4], [4, 4]], [[8, 0], [9, 0]]],                     # 12
        ["Add(num=2)", [[4, 4], [4]], [[12, 1], [12, 0]]],                      # 13
    ],
}

UPSAMPLE_FRACTIONAL = {
    # Non-integer scale factors and sizes that are not multiples: PyTorch's index rules.
    "auto_connect": True,
    "outputs": [[1, 0, 0], [2, 0, 1], [3, 0, 2], [4, 0, 3]],
    "inputs_channels": [2],
    "outputs_channels": [2, 2, 2, 2],
    "layers": [
        ["Upsample(scale_factor=1.5, mode=nearest)", [[2], [2]], [[0, 0]]],
        ["Upsample(scale_factor=1.5, mode=bilinear, align_corners=False)", [[2], [2]], [[0, 0]]],
        ["Upsample(size=(7, 5), mode=nearest)", [[2], [2]], [[0, 0]]],
        ["Upsample(size=(9, 10), mode=bilinear, align_corners=True)", [[2], [2]], [[0, 0]]],
    ],
}

CONV_POOL_HEAD = {
    # A CHW input; Conv2d stride/dilation/groups/padding='same'/bias=False/reflect padding;
    # MaxPool2d ceil_mode; AvgPool2d count_include_pad=False; a classifier head.
    "auto_connect": True,
    "outputs": [[-1, 0, 0], [8, 0, 1]],
    "inputs_channels": [3],
    "outputs_channels": [10, 8],
    "layers": [
        ["Conv2d(3,8,3,stride=2,padding=1)", 8],
        ["BatchNorm2d(8)"],
        ["Conv2d(8,8,3,padding=2,dilation=2,groups=4,bias=False)"],
        ["Conv2d(8, 8, kernel_size=(3, 3), stride=(1, 1), padding=same, dilation=(2, 2))"],
        ["Conv2d(8,8,3,padding=1,groups=8,padding_mode=reflect)"],
        ["SiLU()"],
        ["MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)"],
        ["AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=False)"],
        ["AdaptiveAvgPool2d(output_size=(1, 1))"],
        ["Flatten()"],
        ["Linear(in_features=8, out_features=10, bias=True)", 10],
        ["Softmax(dim=1)"],
    ],
}

ACTIVATIONS = {
    "outputs": [[k + 2, 0, k] for k in range(10)],
    "inputs_channels": [3],
    "outputs_channels": [6] * 10,
    "layers": [["Conv2d(3,6,3,padding=1)", [[3], [6]], [[0, 0]]]] + [
        [call, [[6], [6]], [[1, 0]]] for call in (
            "ReLU()", "LeakyReLU(negative_slope=0.2)", "ReLU6()", "Hardswish()",
            "Hardsigmoid()", "Sigmoid()", "Tanh()", "SiLU()", "Dropout(p=0.5)",
            "torch.nn.Identity()")],
}

TWO_INPUTS = {
    # Node 2's input (2 channels) is auto-connected to network input 1; input 1 is CHW and
    # is also passed straight to output 1.
    "auto_connect": True,
    "outputs": [[4, 0, 0], [0, 1, 1], [2, 0, 2]],
    "inputs_channels": [3, 2],
    "outputs_channels": [4, 2, 4],
    "layers": [
        ["Conv2d(3,4,3,padding=1)", [[3], [4]]],
        ["Conv2d(2,4,1)", [[2], [4]]],
        ["AdaptiveAvgPool2d(1)", [[4], [4]], [[-1, 0]]],
        ["Mul(num=2)", [[4, 4], [4]], [[1, 0], [3, 0]]],
    ],
}


RESIDUAL_IN_PLACE = {
    # Bottlenecks on 12x12 planes: node 3's value is the residual of the chain at node 6 and
    # read by nothing after it (the runtime lets it hold that chain's value); node 9's goes
    # under a SiLU; node 14's is read by its chain's own convolution (neither is shared).
    "auto_connect": True,
    "outputs": [[17, 0, 0]],
    "inputs_channels": [8],
    "outputs_channels": [16],
    "layers": [
        ["Conv2d(8,16,1)", 16],
        ["BatchNorm2d(16)"],
        ["ReLU()"],
        ["Conv2d(16,16,3,padding=1)", 16],
        ["ReLU()"],
        ["Conv2d(16,16,1,bias=False)", 16],
        ["BatchNorm2d(16)"],
        ["Add(num=2)", [[16, 16], [16]], [[-1, 0], [-5, 0]]],
        ["ReLU()"],
        ["Conv2d(16,16,3,padding=1)", 16],
        ["ReLU()"],
        ["Conv2d(16,16,1)", 16],
        ["Add(num=2)", [[16, 16], [16]], [[-1, 0], [-4, 0]]],
        ["SiLU()"],
        ["Conv2d(16,16,1)", 16],
        ["Add(num=2)", [[16, 16], [16]], [[-1, 0], [-2, 0]]],
        ["ReLU()"],
    ],
}


def feature_cases(root):
    gen = torch.Generator().manual_seed(4)

    def two_file(name, arch, inputs, seed, edit=None, strict=True, text=None):
        c = Case(root, name)
        if text is None:
            write_json(c.path("model.json"), arch)
        else:
            with open(c.path("model.json"), "w") as f:
                f.write(text)
            arch = nnx_ref.jsonc.load(c.path("model.json"))
        ex = build(arch, seed=seed)
        randomise(ex, seed=seed + 100)
        save_list(ex, c.path("model.pth"), edit)
        c.finish("model.json", "model.pth", inputs, strict=strict)
        return ex

    two_file("auto_connect", AUTO_CONNECT, [rand(gen, 1, 3, 10, 12)], 10)
    relative = two_file("relative_shared", RELATIVE, [rand(gen, 1, 4, 9, 7)], 11)
    forms = two_file("forms_locals", None, [rand(gen, 1, 4, 16, 20)], 12, text=FORMS_TEXT)

    def legacy_pruner(sds):
        sds[2] = OrderedDict(weights=sds[2].pop("pruner_weight"))   # node 3: older key
        g = torch.Generator().manual_seed(5)
        sds[5]["pruner_weight"] = pruner_values(6, 0.75, g, mean=0.9)    # all open
        sds[7]["pruner_weight"] = pruner_values(6, 0.9, g, mean=0.85)    # all closed
    two_file("pruners", PRUNERS, [rand(gen, 1, 6, 8, 8)], 13, edit=legacy_pruner)

    two_file("const_var", CONST_VAR, [rand(gen, 2, 4, 5, 6)], 14)

    def nonstrict(sds):
        sds[0]["unexpected_extra"] = torch.ones(3)
        sds[2]["foo"] = torch.zeros(1)
        del sds[1]["num_batches_tracked"]
        del sds[3]["t"]
    two_file("nonstrict", NONSTRICT, [rand(gen, 1, 3, 8, 8)], 15, edit=nonstrict, strict=False)

    two_file("upsample_cat_eltwise", UPSAMPLE_CAT_ELTWISE, [rand(gen, 1, 4, 6, 8)], 16)
    two_file("upsample_fractional", UPSAMPLE_FRACTIONAL, [rand(gen, 1, 2, 4, 6)], 17)
    head = two_file("conv_pool_head", CONV_POOL_HEAD, [rand(gen, 3, 21, 19)], 18)

    def scale_conv(sds):
        sds[0]["weight"] *= 4.0                                  # spread over the kinks
    two_file("activations", ACTIVATIONS, [rand(gen, 1, 3, 7, 9)], 19, edit=scale_conv)
    two_file("two_inputs", TWO_INPUTS, [rand(gen, 1, 3, 6, 5), rand(gen, 2, 6, 5)], 20)
    two_file("residual_in_place", RESIDUAL_IN_PLACE, [rand(gen, 2, 8, 12, 12)], 21)

    # Weights as flat state dicts: .pth (shared weights appear once) and .safetensors.
    c = Case(root, "flat_keys_shared")
    write_json(c.path("model.json"), RELATIVE)
    torch.save(relative.state_dict(), c.path("model_flat.pth"))
    c.finish("model.json", "model_flat.pth", [rand(gen, 1, 4, 6, 6)])

    c = Case(root, "flat_safetensors")
    write_json(c.path("model.json"), CONV_POOL_HEAD)
    safetensors_io.save(dict(head.state_dict()), c.path("model.safetensors"))
    c.finish("model.json", "model.safetensors", [rand(gen, 1, 3, 16, 16)])

    # One-file forms, as the package's save() wrote them (tuples, explicit connections).
    c = Case(root, "onefile_released")
    torch.save(onefile_description(forms), c.path("model.pth"))
    c.finish("model.pth", None, [rand(gen, 1, 4, 8, 12)])

    c = Case(root, "onefile_devel")
    torch.save(onefile_description(relative, "unique_layers_state_dicts",
                                   "unique_layers_recreators", four_element=True),
               c.path("model.pth"))
    c.finish("model.pth", None, [rand(gen, 2, 4, 5, 5)])


def generate(folder):
    os.makedirs(folder, exist_ok=True)
    torch.set_num_threads(1)
    original_cases(folder)
    seed_cases(folder)
    feature_cases(folder)


if __name__ == "__main__":
    import sys
    generate(sys.argv[1] if len(sys.argv) > 1 else "/tmp/nnx_fixture_models")
