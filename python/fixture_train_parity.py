"""Whole-network training parity: the corrected seed network (examples/seed/seed.json, with
the YOLO user op) trained five steps by PyTorch from its default initialisation, on fixed
batches at a small input size; the C++ test (tests/train/network_parity_test.cpp) trains the
same five steps with nnx::Trainer and compares every weight and BatchNorm statistic.

Cases (OUT/train_parity/<case>/):
  seed_sgd           SGD, momentum 0.9, weight decay 1e-4
  seed_adamw_nobias  AdamW on a variant whose convolutions before BatchNorm have bias=False
  seed_adamw_bias    AdamW on seed.json itself: the biases that feed BatchNorm have a true
                     gradient of zero, which Adam turns into whole steps of rounding noise, so
                     the test only checks that they moved less than lr per step, and that the
                     running means of those BatchNorms (which move with the biases) differ by
                     no more than the biases do; the rest must match.
Files: arch.json, init.pth (two-file form), x<k>.npy, t<k>_<j>.npy (target of output j at step
k), after.pth (the weights and buffers after the last step), case.json. The loss is the sum
over outputs of MSE(output_j, target_j).
"""
import json
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

import fixture_models as fm
import nnx_ref

STEPS = 5
BATCH_SHAPE = (4, 3, 48, 64)


def _bias_false_before_bn(arch):
    """Conv2d layers directly followed by BatchNorm2d get bias=False."""
    layers = arch["layers"]
    for i, layer in enumerate(layers[:-1]):
        call = layer[0]
        if call.startswith("torch.nn.Conv2d(") and layers[i + 1][0].startswith("torch.nn.BatchNorm2d"):
            layer[0] = re.sub(r"\)$", ", bias=False)", call)
    return arch


def _train(arch, yolo, make_optimizer, data_seed, jitter_seed=None):
    """Five steps from the default initialisation on the data of `data_seed`. With
    `jitter_seed`, every ReLU's and MaxPool2d's input gets 1e-6 of its standard deviation times
    N(0, 1) added (a rounding-sized disturbance). Returns the model, its initial state, the
    inputs, the targets and the last outputs."""
    ex = fm.build(arch, seed=0, user_ops=yolo)
    init = fm.layer_state_dicts(ex)
    init = [{k: v.clone() for k, v in sd.items()} for sd in init]
    if jitter_seed is not None:
        jitter = torch.Generator().manual_seed(jitter_seed)

        def disturb(module, inputs):
            x = inputs[0]
            return (x + 1e-6 * x.detach().std() * torch.randn(x.shape, generator=jitter),)

        for m in ex.modules():
            if isinstance(m, (torch.nn.ReLU, torch.nn.MaxPool2d)):
                m.register_forward_pre_hook(disturb)
    ex.train()
    opt = make_optimizer(ex.parameters())
    gen = torch.Generator().manual_seed(data_seed)
    xs, ts = [], []
    for k in range(STEPS):
        x = torch.randn(BATCH_SHAPE, generator=gen)
        xs.append(x)
        opt.zero_grad()
        outs = ex(x)
        loss = 0
        step_targets = []
        for y in outs:
            # Targets near the outputs' scale: the YOLO head's boxes are in input pixels.
            t = (y.detach() * (1 + 0.1 * torch.randn(y.shape, generator=gen))
                 + 0.1 * torch.randn(y.shape, generator=gen))
            step_targets.append(t)
            loss = loss + F.mse_loss(y, t)
        ts.append(step_targets)
        loss.backward()
        opt.step()
    return ex, init, xs, ts, outs


def _state(ex):
    """Weights and buffers as float64 tensors, by flat key ("<layer index>.<name>")."""
    out = {}
    for i, sd in enumerate(fm.layer_state_dicts(ex)):
        for key, value in sd.items():
            if value.dtype.is_floating_point:
                out[f"{i}.{key}"] = value.detach().double()
    return out


def _noise_params(name, arch):
    """seed_adamw_bias: the biases that feed BatchNorm (they move with rounding noise by design)
    and the running means that follow them."""
    frozen_check, follows = [], {}
    if name == "seed_adamw_bias":
        for i, layer in enumerate(arch["layers"][:-1]):
            if layer[0].startswith("torch.nn.Conv2d(") and \
                    arch["layers"][i + 1][0].startswith("torch.nn.BatchNorm2d"):
                frozen_check.append(f"{i}.bias")
                # The batch mean, and so the running mean, moves with those biases.
                follows[f"{i + 1}.running_mean"] = f"{i}.bias"
    return frozen_check, follows


def _one(root, name, arch, make_optimizer, hyper):
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "arch.json"), "w") as f:
        json.dump(arch, f, indent=1)
    yolo = fm.user_op_classes()
    frozen_check, follows = _noise_params(name, arch)
    skip = set(frozen_check) | set(follows)
    # Only well-conditioned data: where an activation within rounding of zero wins its max-pool
    # window after a ReLU (or two window entries are within rounding of each other), the
    # gradient jumps with the summation order (a full upstream gradient one way, none the
    # other), and the case would test which way a near-tie falls, not the arithmetic (at data
    # seed 11, seed_adamw_nobias's weights moved 4e-4 when one layer ran on Winograd). So the
    # five steps are rerun three times with the ReLU and MaxPool2d inputs disturbed at the
    # rounding's size, and the first data seed from 11 whose reruns stay within a quarter of
    # the tolerance is kept.
    # (For SGD about one data seed in six qualifies on this machine; the best one found is kept,
    # with a warning, should none in 11..70 do so elsewhere.)
    best = None
    for data_seed in range(11, 71):
        run = _train(arch, yolo, make_optimizer, data_seed)
        clean = _state(run[0])
        worst = 0.0
        for jitter_seed in (1, 2, 3):
            other = _state(_train(arch, yolo, make_optimizer, data_seed, jitter_seed)[0])
            worst = max(worst, max((clean[k] - other[k]).abs().max().item()
                                   for k in clean if k not in skip))
            if worst >= 0.25e-4:
                break
        if best is None or worst < best[0]:
            best = (worst, data_seed, run)
        if worst < 0.25e-4:
            break
    else:
        print(f"warning: {name}: no data seed in 11..70 is well conditioned; keeping seed "
              f"{best[1]} (disturbed runs {best[0]:.2g} apart)")
    worst, data_seed, (ex, init, xs, ts, outs) = best
    torch.save(init, os.path.join(folder, "init.pth"))
    for k in range(STEPS):
        np.save(os.path.join(folder, f"x{k}.npy"), xs[k].numpy())
        for j, t in enumerate(ts[k]):
            np.save(os.path.join(folder, f"t{k}_{j}.npy"), t.numpy())
    fm.save_list(ex, os.path.join(folder, "after.pth"))
    with open(os.path.join(folder, "case.json"), "w") as f:
        json.dump({"steps": STEPS, "outputs": len(outs), "user_ops": ["own_module.YOLO"],
                   "noise_only": frozen_check, "follows_noise": follows, "tol": 1e-4,
                   "data_seed": data_seed, "disturbed_gap": worst, **hyper},
                  f, indent=1)


# The three cases, each generated alone by python/gen_fixtures.py's workers (generate(root, part)).
PARTS = ("seed_sgd", "seed_adamw_nobias", "seed_adamw_bias")


def generate(root, part=None):
    torch.set_num_threads(1)
    seed_arch = nnx_ref.jsonc.load(os.path.join(fm.SEED_DIR, "seed.json"))
    # Learning rates small enough that the five steps stay out of the chaotic regime: at lr
    # 0.05 (SGD) or 1e-3 (AdamW) rounding differences grow ~20x per step on this network (two
    # PyTorch summation orders part as fast). AdamW's steps are ~lr per element whatever the
    # gradient's size, so its lr sets how far the weights move: 5e-4 over five steps, five
    # times the tolerance.
    sgd = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}
    if part in (None, "seed_sgd"):
        _one(root, "seed_sgd", json.loads(json.dumps(seed_arch)),
             lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-4), sgd)
    # Adam's first steps are lr * g / (|g| + eps): with PyTorch's eps of 1e-8 an element whose
    # gradient is rounding noise steps a full lr in the noise's direction, so PyTorch in float32
    # and in float64 already part by 7e-5 on layer 11's weight (and a different processor's
    # kernels, by 1.8e-4). eps 1e-6 leaves real gradients their full steps (the weights still
    # move 5e-4) and cuts that float32/float64 gap to 2.5e-6.
    adamw = {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.01, "eps": 1e-6}
    if part in (None, "seed_adamw_nobias"):
        _one(root, "seed_adamw_nobias", _bias_false_before_bn(json.loads(json.dumps(seed_arch))),
             lambda p: torch.optim.AdamW(p, lr=1e-4, weight_decay=0.01, eps=1e-6), adamw)
    if part in (None, "seed_adamw_bias"):
        _one(root, "seed_adamw_bias", json.loads(json.dumps(seed_arch)),
             lambda p: torch.optim.AdamW(p, lr=1e-4, weight_decay=0.01, eps=1e-6), adamw)
