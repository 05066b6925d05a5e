#!/usr/bin/python3
"""Times the PyTorch twin of TextToImageDiffusion (scripts/diffusion_twin.py) on the work
bench_diffusion measures, so the two can be compared in one run on the same machine:
  training:  images/s of full steps (text encoder + U-Net forward, ε-MSE with condition dropout,
             backward, AdamW) at batch 64 on random 28x28 images and the nine prompts
  sampling:  images/s of 50 DDIM steps with classifier-free guidance (both halves in one batched
             forward), n images per call
each at 1 and 2 threads (torch.set_num_threads), each in its own process so that the peak RSS
(ru_maxrss) belongs to that measurement alone. Wall-clock figures need a quiet machine; at 1
thread the images per CPU-second are printed too, as a check when the machine is busy.

  /usr/bin/python3 scripts/time_torch_diffusion.py [--config small] [--threads 1 2]
      [--train-steps 5] [--batch 64] [--sample-images 8] [--sample-steps 50] [--repeats 1]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusion_twin import (CONFIGS, PROMPTS, TextToImageDiffusion, alphas_cumprod,  # noqa: E402
                            cfg_denoiser, encode, linear_betas, sample, trailing_timesteps,
                            training_loss)


def measure(args):
    """Runs one measurement in this process; returns a dict."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = CONFIGS[args.config]
    model = TextToImageDiffusion(config)
    abar = alphas_cumprod(linear_betas())
    if args.mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        tokens = torch.tensor([encode(PROMPTS[i % len(PROMPTS)], config.max_length)
                               for i in range(args.batch)])
        images = torch.rand(args.batch, config.in_channels, 28, 28) * 2 - 1

        def step():
            loss = training_loss(model, images, tokens, abar)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step()  # warm-up
        times, cpu = [], []
        for _ in range(args.train_steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        per_step = sorted(times)[len(times) // 2]
        result = {"images_per_s": args.batch / per_step, "seconds": per_step,
                  "cpu_images_per_s": args.batch / sorted(cpu)[len(cpu) // 2]}
    else:
        model.eval()
        n = args.sample_images
        tokens = torch.tensor([encode(PROMPTS[i % len(PROMPTS)], config.max_length)
                               for i in range(n)])
        empty = torch.zeros_like(tokens)
        steps = trailing_timesteps(args.sample_steps)

        def run():
            with torch.no_grad():
                x = torch.randn(n, config.in_channels, 28, 28)
                sample(cfg_denoiser(model, tokens, empty, 3.0), x, abar, steps, "ddim")

        run()  # warm-up
        times, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        per_call = sorted(times)[len(times) // 2]
        result = {"images_per_s": n / per_call, "seconds": per_call,
                  "cpu_images_per_s": n / sorted(cpu)[len(cpu) // 2]}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", choices=CONFIGS)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sample-images", type=int, default=8)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1, help="sampling calls (median)")
    parser.add_argument("--mode", choices=["train", "sample"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # a child process: one measurement, printed as JSON
        args.threads = args.threads[0]
        print(json.dumps(measure(args)))
        return 0
    print(f"PyTorch {torch.__version__}, config {args.config}, 28x28")
    for threads in args.threads:
        for mode in ["train", "sample"]:
            command = [sys.executable, __file__, "--mode", mode, "--threads", str(threads),
                       "--config", args.config, "--train-steps", str(args.train_steps),
                       "--batch", str(args.batch), "--sample-images", str(args.sample_images),
                       "--sample-steps", str(args.sample_steps), "--repeats", str(args.repeats)]
            # torch.set_num_threads does not reach the BLAS library: Debian's torch calls the
            # system libblas (OpenBLAS, which starts one thread per core), so a "1 thread" run
            # kept ~1.8 cores busy and a 2-thread run oversubscribed them. Every pool gets the
            # same count.
            env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                       OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            r = json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                          env=env).stdout)
            what = (f"training, batch {args.batch} (median of {args.train_steps} steps)"
                    if mode == "train" else
                    f"sampling, {args.sample_steps} DDIM steps with CFG, {args.sample_images} "
                    f"images per call")
            # At 1 thread, images per second of process CPU time is a check on a busy machine
            # (wall time then includes waiting for a core); at 2 threads it sums both threads.
            cpu = f"  ({r['cpu_images_per_s']:.1f} per CPU-second)" if threads == 1 else ""
            print(f"  {threads} thread{'s' if threads > 1 else ' '}  {what:58s} "
                  f"{r['images_per_s']:8.1f} images/s   peak RSS {r['peak_rss_mb']:6.0f} MB{cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
