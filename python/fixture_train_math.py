"""PyTorch references for the training maths of include/nnx/loss.h and include/nnx/optim.h.

`generate(folder)` (called by gen_fixtures.py with <build>/fixtures/train_math) writes
- losses/<case>/: case.json (loss, options, value), pred.npy, target.npy, [weight.npy],
  [pos_weight.npy], grad.npy: F.<loss> on the float32 prediction taken to float64;
- optim/<case>/: case.json (optimizer, options, steps, lr changes, missing grads, tol),
  param<k>.npy (initial values), grads<k>.npy (steps x shape), final<k>.npy (after the run),
  state.pth (torch.save(optimizer.state_dict()) after `resume_at` steps) and
  mid<k>.npy (the values then): a C++ optimizer loading state.pth at mid<k> must reach
  final<k> with the remaining grads;
- clip/<case>/: case.json (max_norm, norm_type, total_norm), grad<k>.npy, clipped<k>.npy;
- schedules/schedules.json: the lr per epoch of StepLR and CosineAnnealingLR.

Run as a script, `fixture_train_math.py resume DIR...` checks a state file the C++ side wrote:
DIR/case.json names the optimizer and options, DIR/state.pth the state, DIR/param<k>.npy and
DIR/grad<k>.npy the values and grads of one more step; torch.load must read the state,
torch.optim.<X>.load_state_dict accept it, and one step writes DIR/torch_next<k>.npy.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def save(folder, name, t):
    np.save(os.path.join(folder, name + ".npy"), t.detach().cpu().numpy())


def write_json(folder, data):
    with open(os.path.join(folder, "case.json"), "w") as f:
        json.dump(data, f, indent=2)


# ---- losses ----

def loss_cases():
    g = torch.Generator().manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    def labels(shape, c, ignore=None, ignored=0.0):
        y = torch.randint(0, c, shape, generator=g)
        if ignore is not None:
            mask = torch.rand(shape, generator=g) < ignored
            y[mask] = ignore
        return y

    def probs(shape):
        return torch.softmax(randn(*shape) * 2, dim=1 if len(shape) > 1 else 0)

    cases = []

    def ce(name, pred, target, **kw):
        cases.append((name, "cross_entropy", pred, target, kw))

    ce("ce_basic", randn(8, 5), labels((8,), 5))
    ce("ce_sum", randn(8, 5), labels((8,), 5), reduction="sum")
    ce("ce_weight", randn(8, 5), labels((8,), 5), weight=torch.rand(5) + 0.1)
    ce("ce_ignore", randn(10, 4), labels((10,), 4, -100, 0.3))
    ce("ce_ignore_custom", randn(10, 4), labels((10,), 4), ignore_index=1)
    ce("ce_smooth", randn(8, 5), labels((8,), 5), label_smoothing=0.1)
    ce("ce_smooth_weight_ignore", randn(12, 6), labels((12,), 6, -100, 0.25),
       weight=torch.rand(6) + 0.1, label_smoothing=0.2)
    ce("ce_smooth_sum_ignore", randn(12, 6), labels((12,), 6, -100, 0.25),
       label_smoothing=0.3, reduction="sum")
    ce("ce_spatial", randn(3, 4, 5, 6), labels((3, 5, 6), 4, -100, 0.1),
       weight=torch.rand(4) + 0.1, label_smoothing=0.05)
    ce("ce_spatial_sum", randn(2, 3, 7), labels((2, 7), 3), reduction="sum")
    ce("ce_unbatched", randn(5), labels((), 5))
    ce("ce_probs", randn(8, 5), probs((8, 5)))
    ce("ce_probs_weight_smooth", randn(8, 5), probs((8, 5)), weight=torch.rand(5) + 0.1,
       label_smoothing=0.1)
    ce("ce_probs_spatial_sum", randn(2, 4, 3, 3), probs((2, 4, 3, 3)), reduction="sum")
    ce("ce_large_logits", randn(6, 5) * 60, labels((6,), 5))
    for red in ("mean", "sum"):
        x, y = randn(4, 7), randn(4, 7)
        y[0, :3] = x[0, :3]  # exact zeros: sign(0) = 0
        cases.append((f"mse_{red}", "mse", x, y, {"reduction": red}))
        cases.append((f"l1_{red}", "l1", x, y, {"reduction": red}))
    for beta in (1.0, 0.5, 0.0):
        x, y = randn(3, 4, 5), randn(3, 4, 5)
        cases.append((f"smooth_l1_beta{beta}", "smooth_l1", x, y, {"beta": beta}))
    cases.append(("smooth_l1_sum", "smooth_l1", randn(20), randn(20),
                  {"beta": 2.0, "reduction": "sum"}))
    t = (torch.rand(6, 4, generator=g) > 0.5).float()
    cases.append(("bce_basic", "bce_with_logits", randn(6, 4) * 3, t, {}))
    cases.append(("bce_soft_targets", "bce_with_logits", randn(6, 4), torch.rand(6, 4), {}))
    cases.append(("bce_pos_weight", "bce_with_logits", randn(6, 4) * 3, t,
                  {"pos_weight": torch.rand(4) * 3}))
    cases.append(("bce_weight_pos_weight_sum", "bce_with_logits", randn(6, 4) * 3, t,
                  {"weight": torch.rand(6, 1), "pos_weight": torch.rand(4) * 3,
                   "reduction": "sum"}))
    cases.append(("bce_large", "bce_with_logits", randn(2, 3) * 50, torch.rand(2, 3), {}))
    return cases


def torch_loss(kind, x, y, kw):
    red = kw.get("reduction", "mean")
    if kind == "cross_entropy":
        w = kw.get("weight")
        return F.cross_entropy(x, y if not y.is_floating_point() else y.double(),
                               weight=None if w is None else w.double(),
                               ignore_index=kw.get("ignore_index", -100),
                               label_smoothing=kw.get("label_smoothing", 0.0), reduction=red)
    if kind == "mse":
        return F.mse_loss(x, y.double(), reduction=red)
    if kind == "l1":
        return F.l1_loss(x, y.double(), reduction=red)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(x, y.double(), reduction=red, beta=kw.get("beta", 1.0))
    w, pw = kw.get("weight"), kw.get("pos_weight")
    return F.binary_cross_entropy_with_logits(
        x, y.double(), weight=None if w is None else w.double(),
        pos_weight=None if pw is None else pw.double(), reduction=red)


def generate_losses(root):
    for name, kind, pred, target, kw in loss_cases():
        folder = os.path.join(root, name)
        os.makedirs(folder)
        x = pred.double().requires_grad_(True)
        loss = torch_loss(kind, x, target, kw)
        loss.backward()
        meta = {"loss": kind, "reduction": kw.get("reduction", "mean"),
                "ignore_index": kw.get("ignore_index", -100),
                "label_smoothing": kw.get("label_smoothing", 0.0), "beta": kw.get("beta", 1.0),
                "value": loss.item(), "weight": "weight" in kw, "pos_weight": "pos_weight" in kw}
        if kind == "cross_entropy" and not target.is_floating_point() and pred.dim() > 1:
            counted = target != meta["ignore_index"]
            meta["correct"] = int(((pred.argmax(1) == target) & counted).sum())
            meta["counted"] = int(counted.sum())
        write_json(folder, meta)
        save(folder, "pred", pred)
        save(folder, "target", target)
        save(folder, "grad", x.grad)
        for key in ("weight", "pos_weight"):
            if key in kw:
                save(folder, key, kw[key])


# ---- optimizers ----

SHAPES = [(4, 3), (5,), (2, 3, 2), (1,)]


def make_optimizer(name, params, opts):
    o = dict(opts)
    if name == "sgd":
        return torch.optim.SGD(params, lr=o.pop("lr"), **o)
    betas = (o.pop("beta1", 0.9), o.pop("beta2", 0.999))
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, betas=betas, **o)


def optim_cases():
    cases = [
        ("sgd_plain", "sgd", {"lr": 0.1}),
        ("sgd_momentum", "sgd", {"lr": 0.05, "momentum": 0.9}),
        ("sgd_dampening_wd", "sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3,
                                     "weight_decay": 0.01}),
        ("sgd_nesterov_wd", "sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True,
                                    "weight_decay": 1e-3}),
        ("sgd_maximize", "sgd", {"lr": 0.02, "momentum": 0.5, "maximize": True,
                                 "weight_decay": 0.1}),
        ("adam_default", "adam", {"lr": 1e-2}),
        ("adam_wd", "adam", {"lr": 1e-2, "weight_decay": 0.1}),
        ("adam_amsgrad", "adam", {"lr": 3e-2, "amsgrad": True}),
        ("adam_betas_eps_amsgrad_wd", "adam", {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99,
                                               "eps": 1e-6, "amsgrad": True,
                                               "weight_decay": 0.05}),
        ("adam_maximize", "adam", {"lr": 1e-2, "maximize": True}),
        ("adamw_default", "adamw", {"lr": 1e-2}),
        ("adamw_wd_amsgrad", "adamw", {"lr": 2e-2, "weight_decay": 0.1, "amsgrad": True}),
        ("adamw_no_wd", "adamw", {"lr": 1e-2, "weight_decay": 0.0}),
    ]
    out = []
    for name, opt, opts in cases:
        out.append({"name": name, "optimizer": opt, "options": opts, "steps": 8,
                    "lr_changes": {"4": opts["lr"] * 0.3}, "missing": [[0, 1], [5, 3]],
                    "resume_at": 5, "tol": 1e-5})
    for name, opt, opts in [("long_sgd_nesterov", "sgd", {"lr": 0.01, "momentum": 0.9,
                                                           "nesterov": True,
                                                           "weight_decay": 1e-4}),
                            ("long_adam_amsgrad", "adam", {"lr": 1e-3, "amsgrad": True,
                                                           "weight_decay": 1e-4}),
                            ("long_adamw", "adamw", {"lr": 1e-3})]:
        out.append({"name": name, "optimizer": opt, "options": opts, "steps": 200,
                    "lr_changes": {"100": opts["lr"] * 0.1}, "missing": [], "resume_at": 150,
                    "tol": 1e-4})
    return out


def generate_optim(root):
    g = torch.Generator().manual_seed(2)
    for case in optim_cases():
        folder = os.path.join(root, case["name"])
        os.makedirs(folder)
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]
        grads = [torch.randn((case["steps"],) + s, generator=g) for s in SHAPES]
        for k, p in enumerate(params):
            save(folder, f"param{k}", p)
            save(folder, f"grads{k}", grads[k])
        opt = make_optimizer(case["optimizer"], params, case["options"])
        missing = {tuple(m) for m in case["missing"]}
        for step in range(case["steps"]):
            if str(step) in case["lr_changes"]:
                for group in opt.param_groups:
                    group["lr"] = case["lr_changes"][str(step)]
            if step == case["resume_at"]:
                torch.save(opt.state_dict(), os.path.join(folder, "state.pth"))
                for k, p in enumerate(params):
                    save(folder, f"mid{k}", p)
            for k, p in enumerate(params):
                p.grad = None if (step, k) in missing else grads[k][step].clone()
            opt.step()
        for k, p in enumerate(params):
            save(folder, f"final{k}", p)
        write_json(folder, case)


# ---- clip_grad_norm ----

def generate_clip(root):
    g = torch.Generator().manual_seed(3)
    for name, max_norm, norm_type, scale in [("l2_clipped", 1.0, 2.0, 1.0),
                                             ("l2_not_clipped", 100.0, 2.0, 1.0),
                                             ("l1_clipped", 2.0, 1.0, 1.0),
                                             ("p3_clipped", 0.5, 3.0, 1.0),
                                             ("inf_clipped", 0.1, math.inf, 1.0),
                                             ("l2_large", 10.0, 2.0, 1000.0)]:
        folder = os.path.join(root, name)
        os.makedirs(folder)
        params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
        for k, p in enumerate(params):
            p.grad = torch.randn(s := SHAPES[k], generator=g) * scale
            save(folder, f"grad{k}", p.grad)
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        for k, p in enumerate(params):
            save(folder, f"clipped{k}", p.grad)
        write_json(folder, {"max_norm": max_norm,
                            "norm_type": "inf" if math.isinf(norm_type) else norm_type,
                            "total_norm": total.item(), "count": len(SHAPES)})


# ---- schedules ----

def generate_schedules(folder):
    """lr per epoch of StepLR and CosineAnnealingLR, as schedules.json."""
    out = {}
    for name, make in [("step", lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5)),
                       ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
                           o, T_max=10, eta_min=1e-4))]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make(opt)
        lrs = []
        for _ in range(12):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        out[name] = lrs
    os.makedirs(folder)
    with open(os.path.join(folder, "schedules.json"), "w") as f:
        json.dump({"lr": 0.1, "step_size": 3, "gamma": 0.5, "total_epochs": 10, "lr_min": 1e-4,
                   "lrs": out}, f, indent=2)


def generate(folder):
    torch.set_num_threads(1)
    generate_losses(os.path.join(folder, "losses"))
    generate_optim(os.path.join(folder, "optim"))
    generate_clip(os.path.join(folder, "clip"))
    generate_schedules(os.path.join(folder, "schedules"))


# ---- checking a state file written by the C++ side ----

def resume(folder):
    with open(os.path.join(folder, "case.json")) as f:
        case = json.load(f)
    state = torch.load(os.path.join(folder, "state.pth"))
    assert set(state) >= {"state", "param_groups"}, sorted(state)
    count = case["count"]
    params = [torch.nn.Parameter(torch.from_numpy(np.load(os.path.join(folder, f"param{k}.npy"))))
              for k in range(count)]
    opt = make_optimizer(case["optimizer"], params, case["options"])
    opt.load_state_dict(state)
    for k, p in enumerate(params):
        p.grad = torch.from_numpy(np.load(os.path.join(folder, f"grad{k}.npy")))
    opt.step()
    for k, p in enumerate(params):
        save(folder, f"torch_next{k}", p)
    print("resumed", case["optimizer"], "from", os.path.join(folder, "state.pth"))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "resume":
        for path in sys.argv[2:]:
            resume(path)
    elif len(sys.argv) == 2:
        generate(sys.argv[1])
    else:
        sys.exit("usage: fixture_train_math.py resume DIR... | fixture_train_math.py OUT_DIR")
