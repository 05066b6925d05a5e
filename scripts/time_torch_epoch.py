#!/usr/bin/python3
"""Times PyTorch on the work of one inkgrad training epoch: 71 steps (70 of batch 64, one of 20)
of the notebook's model (forward, MSE, backward, Adam), on fixed random data, so that bench_train's
BM_TrainEpoch has a reference measured on the same machine. Usage: time_torch_epoch.py [threads]
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_model import PROMPTS, TextToImageModel, encode  # noqa: E402


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TextToImageModel().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tokens = torch.tensor([encode(PROMPTS[i % len(PROMPTS)]) for i in range(64)])
    images = (torch.rand(64, 1, 28, 28) > 0.9).float()
    batches = [64] * 70 + [20]

    def epoch():
        for b in batches:
            loss = torch.nn.functional.mse_loss(model(tokens[:b], torch.randn(b, 32)), images[:b])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    epoch()  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"PyTorch {torch.__version__}, {threads} threads: one epoch of model compute "
          f"(71 steps) in {times[2] * 1000:.0f} ms (median of 5)")


if __name__ == "__main__":
    main()
