#!/usr/bin/python3
# Writes tests/data/nn_golden.json: PyTorch reference values for the nn/ tests (layers, losses,
# optimizers, one training step, module names and print(model) text). Run once with PyTorch:
#   /usr/bin/python3 scripts/make_nn_golden.py
# Every input is stored in the file next to its outputs, so the C++ tests never need torch's RNG.
# Tensors are stored as {"shape": [...], "data": [...]} with float32 values written exactly.
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_num_threads(1)


def t(x):
    x = x.detach().contiguous()
    if x.dtype == torch.int64:
        return {"shape": list(x.shape), "dtype": "int64", "data": [int(v) for v in x.reshape(-1)]}
    return {"shape": list(x.shape), "data": [float(v) for v in x.float().reshape(-1)]}


def named(pairs):
    return {name: t(value) for name, value in pairs}


# ---- Linear forward and backward ----
def make_linear():
    layer = nn.Linear(5, 3)
    x = torch.randn(4, 5, requires_grad=True)
    y = layer(x)
    grad_output = torch.randn(4, 3)
    y.backward(grad_output)
    return {
        "in_features": 5, "out_features": 3,
        "x": t(x), "weight": t(layer.weight), "bias": t(layer.bias),
        "grad_output": t(grad_output), "output": t(y),
        "grad_x": t(x.grad), "grad_weight": t(layer.weight.grad), "grad_bias": t(layer.bias.grad),
    }


# ---- BatchNorm1d: 3 training steps, then eval ----
def make_batchnorm():
    bn = nn.BatchNorm1d(4, eps=1e-5, momentum=0.1)
    with torch.no_grad():  # non-trivial affine parameters so their gradients matter
        bn.weight.copy_(torch.randn(4) * 0.5 + 1.0)
        bn.bias.copy_(torch.randn(4) * 0.5)
    out = {"num_features": 4, "eps": 1e-5, "momentum": 0.1,
           "weight": t(bn.weight), "bias": t(bn.bias), "steps": []}

    def run(x, grad_output):
        x = x.clone().requires_grad_(True)
        bn.weight.grad = None
        bn.bias.grad = None
        y = bn(x)
        y.backward(grad_output)
        return {
            "x": t(x), "grad_output": t(grad_output), "output": t(y), "grad_x": t(x.grad),
            "grad_weight": t(bn.weight.grad), "grad_bias": t(bn.bias.grad),
            "running_mean": t(bn.running_mean), "running_var": t(bn.running_var),
            "num_batches_tracked": int(bn.num_batches_tracked),
        }

    bn.train()
    for step in range(3):
        x = torch.randn(6, 4) * (1.0 + step) + torch.tensor([0.5, -1.0, 2.0, 0.0])
        out["steps"].append(run(x, torch.randn(6, 4)))
    bn.eval()
    out["eval"] = run(torch.randn(5, 4), torch.randn(5, 4))
    return out


# ---- MSE loss ----
def make_mse():
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    loss = F.mse_loss(a, b)
    loss.backward()
    return {"input": t(a), "target": t(b), "loss": float(loss),
            "grad_input": t(a.grad), "grad_target": t(b.grad)}


# ---- optimizers on fixed gradient sequences (isolates the update rule) ----
def run_optimizer(make, options, steps=10):
    params = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    grads = [{name: torch.randn_like(p) for name, p in params.items()} for _ in range(steps)]
    live = {name: p.clone().requires_grad_(True) for name, p in params.items()}
    opt = make(list(live.values()), **options)
    after = []
    for g in grads:
        for name, p in live.items():
            p.grad = g[name].clone()
        opt.step()
        after.append(named(live.items()))
    return {"options": options, "params": named(params.items()),
            "grads": [named(g.items()) for g in grads], "after": after}


def make_adam():
    return [
        run_optimizer(torch.optim.Adam, {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8,
                                         "weight_decay": 0.0}),
        run_optimizer(torch.optim.Adam, {"lr": 0.05, "betas": [0.8, 0.99], "eps": 1e-6,
                                         "weight_decay": 0.1}),
    ]


def make_sgd():
    return [
        run_optimizer(torch.optim.SGD, {"lr": 0.1, "momentum": 0.0, "dampening": 0.0,
                                        "weight_decay": 0.0, "nesterov": False}, steps=3),
        run_optimizer(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.0,
                                        "weight_decay": 0.0, "nesterov": False}),
        run_optimizer(torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "dampening": 0.3,
                                        "weight_decay": 0.01, "nesterov": False}),
        run_optimizer(torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.0,
                                        "weight_decay": 0.01, "nesterov": True}),
    ]


# ---- 10 Adam steps on a small regression problem (Linear + MSE) ----
def make_adam_regression():
    layer = nn.Linear(3, 2)
    x = torch.randn(8, 3)
    y = torch.randn(8, 2)
    initial = named(layer.state_dict().items())
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = F.mse_loss(layer(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return {"x": t(x), "y": t(y), "initial": initial, "losses": losses,
            "final": named(layer.state_dict().items())}


# ---- one full training step of a small Embedding -> Linear -> BN -> ReLU -> Linear -> Sigmoid ----
# The first Linear has no bias: a bias followed by training-mode BatchNorm has a gradient that is
# zero up to rounding noise, and Adam scales that noise up to steps of +-lr, so its value after a
# step would differ between any two implementations.
class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(28, 8, padding_idx=0)
        self.decoder = nn.Sequential(
            nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10),
            nn.Sigmoid())

    def forward(self, tokens):
        return self.decoder(self.embedding(tokens).mean(dim=1))


def make_network():
    model = TinyNet()
    initial = named(model.state_dict().items())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    steps = []
    for _ in range(2):
        tokens = torch.randint(0, 28, (6, 5))
        tokens[:, 3:] = 0  # padding at the end, as the tokenizer pads
        tokens[0, 0] = tokens[1, 0] = 7  # a repeated id
        target = torch.rand(6, 10)
        opt.zero_grad()
        output = model(tokens)
        loss = F.mse_loss(output, target)
        loss.backward()
        opt.step()
        steps.append({"tokens": t(tokens), "target": t(target), "output": t(output),
                      "loss": float(loss),
                      "grads": {n: t(p.grad) for n, p in model.named_parameters()},
                      "state_after": named(model.state_dict().items())})
    model.eval()
    tokens = torch.tensor([[3, 4, 5, 0, 0], [9, 9, 0, 0, 0]])
    return {"initial": initial, "steps": steps, "eval_tokens": t(tokens),
            "eval_output": t(model(tokens))}


# ---- names and print(model) of the notebook's model ----
class TextEncoder(nn.Module):
    def __init__(self, vocab_size, embed_dim=32, latent_dim=64):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings=vocab_size, embedding_dim=embed_dim,
                                      padding_idx=0)
        self.projection = nn.Sequential(nn.Linear(embed_dim, 128), nn.ReLU(),
                                        nn.Linear(128, latent_dim))


class ImageGenerator(nn.Module):
    def __init__(self, latent_dim=64, noise_dim=32):
        super().__init__()
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + noise_dim, 256), nn.BatchNorm1d(256), nn.ReLU(),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.ReLU(),
            nn.Linear(512, 784), nn.Sigmoid())


class TextToImageModel(nn.Module):
    def __init__(self, vocab_size=28):
        super().__init__()
        self.text_encoder = TextEncoder(vocab_size)
        self.image_generator = ImageGenerator()


def make_names():
    model = TextToImageModel()
    return {
        "named_parameters": [[n, list(p.shape)] for n, p in model.named_parameters()],
        "named_buffers": [[n, list(b.shape)] for n, b in model.named_buffers()],
        "named_modules": [n for n, _ in model.named_modules()],
        "state_dict": [n for n in model.state_dict().keys()],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "repr": repr(model),
    }


def main():
    golden = {
        "torch_version": torch.__version__,
        "linear": make_linear(),
        "batchnorm": make_batchnorm(),
        "mse": make_mse(),
        "adam": make_adam(),
        "sgd": make_sgd(),
        "adam_regression": make_adam_regression(),
        "network": make_network(),
        "names": make_names(),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                        "nn_golden.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
