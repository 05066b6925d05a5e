#!/usr/bin/python3
# Writes tests/data/optim_golden.json: PyTorch 1.13 reference values for nn/optim's AdamW
# (torch.optim.AdamW, decoupled weight decay) on fixed gradient sequences and on ten steps of a
# small regression problem, and an EMA of weights computed the way nn::EMA documents it
# (shadow = decay * shadow + (1 - decay) * value, in float32). Run once with PyTorch:
#   /usr/bin/python3 scripts/make_optim_golden.py
# Every input is stored next to its outputs, so the C++ tests never need torch's RNG.
# Tensors are {"shape": [...], "data": [...]} with float32 values written exactly.
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_num_threads(1)


def t(x):
    x = x.detach().contiguous()
    return {"shape": list(x.shape), "data": [float(v) for v in x.float().reshape(-1)]}


def named(pairs):
    return {name: t(value) for name, value in pairs}


# ---- AdamW on fixed gradient sequences (isolates the update rule) ----
def run_adamw(options, steps=8):
    params = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    grads = [{name: torch.randn_like(p) for name, p in params.items()} for _ in range(steps)]
    live = {name: p.clone().requires_grad_(True) for name, p in params.items()}
    opt = torch.optim.AdamW(list(live.values()), **options)
    after = []
    for g in grads:
        for name, p in live.items():
            p.grad = g[name].clone()
        opt.step()
        after.append(named(live.items()))
    return {"options": options, "params": named(params.items()),
            "grads": [named(g.items()) for g in grads], "after": after}


# ---- ten AdamW steps on Linear(3, 2) + MSE, with weight decay ----
def make_adamw_regression():
    layer = nn.Linear(3, 2)
    x = torch.randn(8, 3)
    y = torch.randn(8, 2)
    initial = named(layer.state_dict().items())
    opt = torch.optim.AdamW(layer.parameters(), lr=0.01, weight_decay=0.1)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = F.mse_loss(layer(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return {"initial": initial, "x": t(x), "y": t(y), "losses": losses,
            "final": named(layer.state_dict().items())}


# ---- EMA of a sequence of weights ----
def make_ema():
    decay = 0.9
    values = [torch.randn(2, 3) for _ in range(4)]
    shadow = values[0].clone()
    after = []
    for v in values[1:]:
        shadow = shadow * torch.tensor(decay, dtype=torch.float32) + \
            v * torch.tensor(1.0 - decay, dtype=torch.float32)
        after.append(t(shadow))
    return {"decay": decay, "values": [t(v) for v in values], "after": after}


def main():
    data = {
        "adamw": [
            run_adamw({"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-2}),
            run_adamw({"lr": 0.05, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.3}),
            run_adamw({"lr": 0.02, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}),
        ],
        "adamw_regression": make_adamw_regression(),
        "ema": make_ema(),
    }
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "optim_golden.json")
    with open(path, "w") as f:
        json.dump(data, f)
        f.write("\n")
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
