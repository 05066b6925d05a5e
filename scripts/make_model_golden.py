#!/usr/bin/python3
"""Golden numbers for one full training step of the notebook's model, from PyTorch.

Writes tests/data/model_golden.safetensors, read by tests/test_model_golden.cpp:
  init.<name>       the model's initial state_dict (torch.manual_seed(0))
  input.tokens      I64 [8, 32]   the nine prompts, tokenized (first eight)
  input.images      F32 [8, 1, 28, 28]  binary targets
  input.noise       F32 [8, 32]
  expected.loss     F32 []        MSE of the training-mode forward
  expected.grad.<name>   the gradient of every parameter
  expected.step.<name>   state_dict entries after one Adam step (lr 1e-3): all but the two
                         largest weights, which the gradients above already pin down
Run once with /usr/bin/python3 (python3-torch); commit the output. CI needs no Python.
"""
import sys
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_safetensors_golden import save_file  # noqa: E402
from notebook_model import PROMPTS, TextToImageModel, encode  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "model_golden.safetensors"


def main():
    torch.manual_seed(0)
    model = TextToImageModel()
    out = OrderedDict()
    for name, t in model.state_dict().items():
        out["init." + name] = t.clone()

    gen = torch.Generator().manual_seed(1)
    tokens = torch.tensor([encode(p) for p in PROMPTS[:8]])
    images = (torch.rand(8, 1, 28, 28, generator=gen) > 0.8).float()
    noise = torch.randn(8, 32, generator=gen)
    out["input.tokens"] = tokens
    out["input.images"] = images
    out["input.noise"] = noise

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.mse_loss(model(tokens, noise), images)
    optimizer.zero_grad()
    loss.backward()
    out["expected.loss"] = loss.detach().clone()
    for name, p in model.named_parameters():
        out["expected.grad." + name] = p.grad.clone()
    optimizer.step()
    for name, t in model.state_dict().items():
        if t.numel() < 100_000:
            out["expected.step." + name] = t.clone()

    save_file(out, str(OUT), {"format": "pt", "generator": "scripts/make_model_golden.py"})
    print(f"wrote {OUT} (loss {loss.item():.8f})")


if __name__ == "__main__":
    main()
