"""Invalid models, one per validation rule of ARCH_FORMAT.md §9 (and of §2, §5, §6, §7).

`generate(folder)` (called by gen_fixtures.py with <build>/fixtures/bad_models) writes
`<name>.json` (+ `<name>.pth` / `.safetensors` where the fault is in the weights) and

    cases.json      faults found when loading:
      {"<name>": {"arch": "<name>.json", "weights": file or null, "strict": true|false,
                  "inputs": null, "user_ops": [] or ["own_module.YOLO"],
                  "expect": [substrings], "why": "the fault, in words"}}
    run_cases.json  faults in the inputs, found when running: same keys, with "inputs":
                    ["<name>_in0.npy", ...] (those files are written too); loading succeeds.

Loading (for run_cases: running on the inputs) must fail; the error text must contain every
`expect` substring (a plain, case-sensitive search; the substrings are written in the case
a message in the style of CLI.md naturally has: `layer 2`, `outputs_channels`, lower-case
words). The substrings are what
any good message must hold (the layer as `layer N`, the constructor text, the expected and
found numbers, the offending key or file), never wording. Every case is checked here against
the reference executor, whose messages must meet the same expectations.
"""
import json
import os
import shutil
from collections import OrderedDict

import numpy as np
import torch

import nnx_ref
from nnx_ref import safetensors_io
from nnx_ref.description import parse_description

HERE = os.path.dirname(os.path.abspath(__file__))
SEED_DIR = os.path.join(os.path.dirname(HERE), "examples", "seed")


def _net(layers, outputs=((-1, 0, 0),), inputs_channels=(5,), outputs_channels=None,
         connections=None, auto_connect=True):
    arch = {"inputs_channels": list(inputs_channels),
            "outputs_channels": list(outputs_channels or []),
            "outputs": [list(o) for o in outputs], "layers": layers}
    if auto_connect:
        arch["auto_connect"] = True
    if connections is not None:
        arch["connections"] = connections
    return arch


# A valid base network for the weight faults: node 1 Conv2d, 2 BatchNorm2d, 3 ReLU.
BASE = _net([["Conv2d(5,8,3,padding=1)", 8], ["BatchNorm2d(8)"], ["ReLU()"]],
            outputs_channels=[8])


def _base_state_dicts():
    torch.manual_seed(0)
    net = nnx_ref.Executor(parse_description(BASE))
    return net, [net.layer_module(layer.u).state_dict() for layer in net.graph.layers]


def cases():
    """(name, spec) pairs; spec: arch (dict or raw text), expect, why, and optionally
    weights (a callable writing the file, given its path), weights_name, strict, inputs,
    user_ops, copy (a file to copy as the arch)."""
    out = []

    def add(name, arch, expect, why, **kw):
        out.append((name, dict(arch=arch, expect=expect, why=why, **kw)))

    # --- channels (§9: declared outputs contradicting the op, inputs the op cannot take)
    add("declared_out_channels",
        _net([["Conv2d(5,16,3,padding=1)", 12], ["Conv2d(16,4,1)", [[12], [4]]]],
             outputs_channels=[4]),
        ["layer 1", "Conv2d(5,16,3", "16", "12"],
        "layer 1 declares 12 output channels, Conv2d(5,16,...) gives 16")
    add("wrong_input_channels",
        _net([["Conv2d(5,4,3,padding=1)", [[5], [4]]], ["Conv2d(6,7,1)", [[6], [7]]]],
             outputs_channels=[7], connections=[[0, 0, 1, 0], [1, 0, 2, 0]],
             auto_connect=False),
        ["layer 2", "Conv2d(6,7,1)", "6", "4"],
        "layer 2 (Conv2d with 6 input channels) is wired to node 1, which gives 4")
    add("batchnorm_wrong_channels",
        _net([["Conv2d(5,9,1)", 9], ["BatchNorm2d(7)", [[7], [7]], [[-1, 0]]]],
             outputs_channels=[7]),
        ["layer 2", "BatchNorm2d(7)", "7", "9"],
        "BatchNorm2d(7) is fed 9 channels")
    add("pruner_wrong_channels",
        _net([["Conv2d(5,1,1)", 1], ["Pruner(ch=4)", [[4], [4]], [[-1, 0]]]],
             outputs_channels=[4]),
        ["layer 2", "Pruner(ch=4)", "4", "1"],
        "Pruner(ch=4) is fed 1 channel (PyTorch would broadcast it silently)")
    add("linear_wrong_features",
        _net([["AdaptiveAvgPool2d(1)"], ["Flatten()"], ["Linear(10,3)", 3]],
             outputs_channels=[3]),
        ["layer 3", "Linear(10,3)", "10", "5"],
        "Linear(10, 3) is fed 5 features")
    add("declared_outputs_count",
        _net([["ReLU()", [[5], [5, 5]]]], outputs_channels=[5]),
        ["layer 1", "ReLU()"],
        "ReLU declared with two outputs; it has one")
    add("identity_no_inputs",
        _net([["Identity()", [[], [5]]]], outputs_channels=[5]),
        ["layer 1", "Identity()"],
        "Identity with zero inputs")

    # --- ports and connections
    add("port_fed_twice",
        _net([["Conv2d(5,4,1)", [[5], [4]]], ["ReLU()", [[4], [4]]]], outputs_channels=[4],
             connections=[[0, 0, 1, 0], [1, 0, 2, 0], [-1, 0, 2, 0]], auto_connect=False),
        ["layer 2", "ReLU()"],
        "input 0 of layer 2 is fed by two connections")
    add("port_never_fed",
        _net([["Conv2d(5,4,1)", [[5], [4]]], ["Add(num=2)", [[4, 4], [4]], [[-1, 0]]]],
             outputs_channels=[4], connections=[[0, 0, 1, 0]], auto_connect=False),
        ["layer 2", "Add(num=2)"],
        "input 1 of the Add is never fed (no auto_connect)")
    add("missing_source_node",
        _net([["ReLU()", [[5], [5]]]], outputs_channels=[5], connections=[[7, 0, 1, 0]],
             auto_connect=False),
        ["layer 1", "7"],
        "layer 1 is fed from node 7, which does not exist")
    add("missing_source_port",
        _net([["Conv2d(5,4,1)", [[5], [4]]], ["ReLU()", [[4], [4]]]], outputs_channels=[4],
             connections=[[0, 0, 1, 0], [1, 6, 2, 0]], auto_connect=False),
        ["layer 2", "6"],
        "layer 2 is fed from output 6 of node 1, which has one output")
    add("missing_destination_node",
        _net([["ReLU()", [[5], [5]]]], outputs_channels=[5],
             connections=[[0, 0, 1, 0], [0, 0, 9, 0]], auto_connect=False),
        ["9"],
        "a connection into node 9, which does not exist")
    add("missing_destination_port",
        _net([["ReLU()", [[5], [5]], [[0, 0], [0, 0]]]], outputs_channels=[5]),
        ["layer 1", "ReLU()"],
        "REL feeds two inputs of a layer declared with one")
    add("relative_before_input",
        _net([["ReLU()", [[5], [5]]], ["Sigmoid()", [[5], [5]], [[-3, 0]]]],
             outputs_channels=[5]),
        ["layer 2", "Sigmoid()"],
        "REL source -3 at node 2 is before node 0")
    add("cycle",
        _net([["Add(num=2)", [[5, 5], [5]]], ["ReLU()", [[5], [5]]]], outputs_channels=[5],
             connections=[[0, 0, 1, 0], [2, 0, 1, 1], [1, 0, 2, 0]], auto_connect=False),
        ["cycl"],
        "node 1 feeds node 2, which feeds node 1")

    # --- node indices and outputs
    add("duplicate_node_index",
        _net([[[1], "Conv2d(5,4,1)", [[5], [4]]], [[2], "ReLU()", [[4], [4]]],
              [[2], "Sigmoid()", [[4], [4]]]], outputs_channels=[4]),
        ["layer 2"],
        "node index 2 is given to two layer descriptions")
    add("node_index_gap",
        _net([[[1], "ReLU()", [[5], [5]]], [[2], "Sigmoid()", [[5], [5]]],
              [[4], "Tanh()", [[5], [5]]]], outputs_channels=[5]),
        ["3"],
        "node indices 1, 2, 4: node 3 is missing")
    add("node_index_int64_max",
        _net([[[1], "ReLU()", [[5], [5]]], [[9223372036854775807], "Sigmoid()", [[5], [5]]]],
             outputs_channels=[5]),
        ["node index 9223372036854775807", "implausibly large"],
        "a node index of 2^63-1 (narrowed to int it was -1 and indexed an empty list; fuzz_json)")
    add("node_index_huge_duplicate",
        _net([[[1], "ReLU()", [[5], [5]]], [[4294967297], "Sigmoid()", [[5], [5]]],
              [[4294967297], "Tanh()", [[5], [5]]]], outputs_channels=[5]),
        ["layer 4294967297", "Tanh()", "implausibly large"],
        "node index 2^32+1 given twice: the fault names it whole, not narrowed to int")
    add("output_index_gap",
        _net([["ReLU()"], ["Sigmoid()"]], outputs=[[1, 0, 0], [2, 0, 2]],
             outputs_channels=[5, 5, 5]),
        ["output", "1"],
        "network outputs 0 and 2 are given, 1 is missing")
    add("output_before_input",
        _net([["ReLU()"], ["Sigmoid()"]], outputs=[[-6, 0, 0]], outputs_channels=[5]),
        ["output"],
        "output source -6 counts back past node 0 (N = 2)")
    add("outputs_channels_length",
        _net([["ReLU()"]], outputs_channels=[5, 5]),
        ["outputs_channels"],
        "outputs_channels has two entries, the network one output")
    add("outputs_channels_value",
        _net([["Conv2d(5,4,1)", 4]], outputs_channels=[7]),
        ["outputs_channels", "7", "4"],
        "outputs_channels says 7, the output has 4 channels")

    # --- network inputs (found when running on the given inputs)
    add("input_count_mismatch", _net([["ReLU()"]], outputs_channels=[5]),
        ["input", "2"], "the network has one input, two are given",
        inputs=[(1, 5, 4, 4), (1, 5, 4, 4)])
    add("input_channels_mismatch", _net([["ReLU()"]], outputs_channels=[5]),
        ["input", "5", "6"], "inputs_channels says 5, the input has 6 channels",
        inputs=[(1, 6, 4, 4)])

    # --- ops and constructor strings
    add("unknown_op", _net([["torch.nn.NoSuchLayer(5)"]], outputs_channels=[5]),
        ["layer 1", "NoSuchLayer"], "torch.nn has no NoSuchLayer")
    add("unregistered_user_op", _net([["my_ops.Mystery(5)"]], outputs_channels=[5]),
        ["layer 1", "my_ops.Mystery"], "a user op nobody registered")
    add("refused_package_class",
        _net([["nn_executor.models.StaticPruner(ch=5)"]], outputs_channels=[5]),
        ["layer 1", "StaticPruner"], "a class of the original package the format refuses")
    add("unknown_keyword", _net([["Conv2d(5,4,3,paddin=1)", 4]], outputs_channels=[4]),
        ["layer 1", "paddin"], "Conv2d has no keyword 'paddin'")
    add("wrong_argument_type",
        _net([["Conv2d(5,4,kernel_size='three')", 4]], outputs_channels=[4]),
        ["layer 1", "Conv2d(5,4,kernel_size='three')"], "a string where an int is needed")
    add("arbitrary_python",
        _net([["Conv2d(5,4,__import__('os').getpid())", 4]], outputs_channels=[4]),
        ["layer 1", "Conv2d(5,4,__import__"], "a constructor string that is not a literal call")
    add("unknown_channel_name",
        _net([["Conv2d(5,4,1)", "2*WIDTH"]], outputs_channels=[4]),
        ["layer 1", "WIDTH"], "a channel expression over a name that is not in locals")

    # --- the JSON dialect
    add("json_syntax",
        '{\n  "inputs_channels": [5],\n  "outputs_channels": [5],\n'
        '  "outputs": [[1 0, 0]],\n  "layers": ["ReLU()"]\n}\n',
        ["json_syntax.json:4:"], "a missing comma on line 4: the message names file:line:col")

    # --- the seed example as written (several faults, all reported)
    add("seed_as_written", None,
        ["layer 12", "Conv2d(128,256,3", "256", "128", "layer 17", "YOLO"],
        "the seed README's example: Conv2d(128,256,3) declared 128 and followed by "
        "BatchNorm2d(128) and Conv2d(128,15,1); REL wires two inputs into YOLO, declared "
        "with one; outputs_channels [25] for two outputs",
        copy=os.path.join(SEED_DIR, "seed_as_written.json"), user_ops=["own_module.YOLO"])
    seed = json.load(open(os.path.join(SEED_DIR, "seed.json")))
    seed["layers"][11] = ["torch.nn.Conv2d(128,256,3,padding=1)", 128]
    add("seed_conv_declared_128", seed, ["layer 12", "Conv2d(128,256,3", "256", "128"],
        "the corrected seed, but Conv2d(128,256,3) declared with 128 output channels",
        user_ops=["own_module.YOLO"])

    # --- weights
    def with_base(edit, path_kind="list"):
        def write(path):
            net, sds = _base_state_dicts()
            if path_kind == "flat":
                flat = OrderedDict(net.state_dict())
                edit(flat)
                torch.save(flat, path)
            elif path_kind == "safetensors":
                flat = dict(net.state_dict())
                edit(flat)
                safetensors_io.save(flat, path)
            else:
                edit(sds)
                torch.save(sds, path)
        return write

    def drop_bias(sds):
        del sds[0]["bias"]

    def add_surplus(sds):
        sds[0]["surplus_tensor"] = torch.zeros(2)

    def misshape(sds):
        sds[0]["weight"] = torch.zeros(8, 5, 1, 1)

    add("weights_missing_key", BASE, ["layer 1", "bias"], "Conv2d's bias is missing",
        weights=with_base(drop_bias))
    add("weights_unexpected_key", BASE, ["layer 1", "surplus_tensor"],
        "Conv2d's state dict has an extra tensor", weights=with_base(add_surplus))
    add("weights_misshaped", BASE, ["layer 1", "weight"],
        "Conv2d's weight is 8x5x1x1, the layer needs 8x5x3x3", weights=with_base(misshape))
    add("weights_misshaped_nonstrict", BASE, ["layer 1", "weight"],
        "as weights_misshaped, with strict=false: shapes are never tolerated",
        weights=with_base(misshape), strict=False)
    add("weights_wrong_count", BASE, ["2", "3"],
        "two state dicts for three layer descriptions",
        weights=with_base(lambda sds: sds.pop()))
    add("weights_flat_unexpected", BASE, ["surplus"],
        "a flat state dict with a key no layer has",
        weights=with_base(lambda d: d.__setitem__("layer_001_type_BatchNorm2d.surplus",
                                                  torch.zeros(1)), "flat"))
    add("weights_flat_missing", BASE, ["layer 2", "running_var"],
        "a flat state dict without BatchNorm's running_var",
        weights=with_base(lambda d: d.pop("layer_001_type_BatchNorm2d.running_var"), "flat"))
    add("weights_safetensors_misshaped", BASE, ["layer 1", "weight"],
        "a safetensors file whose Conv2d weight has the wrong shape",
        weights=with_base(lambda d: d.__setitem__("layer_000_type_Conv2d.weight",
                                                  torch.zeros(8, 5, 1, 1)), "safetensors"),
        weights_ext=".safetensors")
    add("weights_file_missing", BASE, ["no_such_weights.pth"],
        "the weights file named does not exist", weights_name="no_such_weights.pth")
    return out


def generate(folder):
    from fixture_models import user_op_classes
    os.makedirs(folder, exist_ok=True)
    known = user_op_classes()
    index, run_index = {}, {}
    for name, spec in cases():
        arch_file = f"{name}.json"
        arch_path = os.path.join(folder, arch_file)
        if spec.get("copy"):
            shutil.copyfile(spec["copy"], arch_path)
        elif isinstance(spec["arch"], str):
            with open(arch_path, "w") as f:
                f.write(spec["arch"])
        else:
            with open(arch_path, "w") as f:
                json.dump(spec["arch"], f, indent=4)
        weights = spec.get("weights_name")
        if spec.get("weights"):
            weights = name + spec.get("weights_ext", ".pth")
            spec["weights"](os.path.join(folder, weights))
        inputs = None
        if spec.get("inputs"):
            gen = torch.Generator().manual_seed(7)
            inputs = []
            for k, shape in enumerate(spec["inputs"]):
                inputs.append(f"{name}_in{k}.npy")
                np.save(os.path.join(folder, inputs[-1]), torch.rand(shape, generator=gen).numpy())
        strict = spec.get("strict", True)
        user_ops = spec.get("user_ops", [])
        xs = None if inputs is None else \
            [torch.from_numpy(np.load(os.path.join(folder, f))) for f in inputs]
        faults = nnx_ref.check(arch_path, None if weights is None else
                               os.path.join(folder, weights), strict,
                               {k: known[k] for k in user_ops}, xs)
        text = "\n".join(faults)
        missing = [s for s in spec["expect"] if s not in text]
        if not faults or missing:
            raise AssertionError(f"bad model {name}: faults {faults}, missing {missing}")
        (index if inputs is None else run_index)[name] = {"arch": arch_file, "weights": weights, "strict": strict,
                       "inputs": inputs, "user_ops": user_ops, "expect": spec["expect"],
                       "why": spec["why"]}
    for file, content in (("cases.json", index), ("run_cases.json", run_index)):
        with open(os.path.join(folder, file), "w") as f:
            json.dump(content, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    import sys
    generate(sys.argv[1] if len(sys.argv) > 1 else "/tmp/nnx_fixture_bad_models")
