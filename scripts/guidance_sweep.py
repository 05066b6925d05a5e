#!/usr/bin/python3
"""The fidelity / diversity trade-off of classifier-free guidance: runs `inkgrad eval` on one
diffusion checkpoint at several guidance scales (same seed, sampler and steps) and prints a
Markdown table, one row per scale, with the ground-truth ceiling beneath.

  scripts/guidance_sweep.py CHECKPOINT [--guidance 1 2 3 5 7.5] [--steps 50] [--sampler ddim]
      [--guidance-interval LOW,HIGH] [-n 64] [--seed 0] [--out runs/sweep] [--inkgrad build/apps/inkgrad]

Columns: fidelity (share of samples the judge reads as their prompt: mean over the nine prompts,
and the lowest prompt), diversity (mean pairwise distance over the real data's: the range over
prompts; 1 = as varied as the data), the Frechet distance in the judge's feature space, and
precision / recall. The eval.json of each scale stays in --out/w<scale>/.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1, 2, 3, 5, 7.5])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--guidance-interval", help="LOW,HIGH (default: inkgrad eval's)")
    parser.add_argument("-n", type=int, default=64, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--inkgrad", default="build/apps/inkgrad")
    args = parser.parse_args()

    rows = []
    ceiling = None
    for w in args.guidance:
        out = Path(args.out) / f"w{w:g}"
        command = [args.inkgrad, "eval", "-c", args.checkpoint, "-n", str(args.n), "--seed",
                   str(args.seed), "--steps", str(args.steps), "--sampler", args.sampler,
                   "--guidance", f"{w:g}", "--out", str(out)]
        if args.guidance_interval:
            command += ["--guidance-interval", args.guidance_interval]
        start = time.time()
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
        seconds = time.time() - start
        data = json.loads((out / "eval.json").read_text())
        prompts = data["model"]["prompts"]
        overall = data["model"]["overall"]
        worst = min(prompts, key=lambda p: p["fidelity"])
        rows.append((w, overall, worst, min(p["diversity"] for p in prompts),
                     max(p["diversity"] for p in prompts), seconds))
        ceiling = data["ceiling"]["overall"]
        print(f"w = {w:g}: fidelity {overall['fidelity']:.3f}, {seconds:.0f} s", file=sys.stderr)

    interval = f", guidance interval {args.guidance_interval}" if args.guidance_interval else ""
    print(f"{args.checkpoint}: {args.sampler}, {args.steps} steps{interval}, {args.n} samples "
          f"per prompt, seed {args.seed}\n")
    print("| guidance w | fidelity (mean) | lowest prompt | diversity (range over prompts) | "
          "FD | precision | recall |")
    print("|---|---|---|---|---|---|---|")
    for w, overall, worst, dmin, dmax, _ in rows:
        print(f"| {w:g} | {overall['fidelity']:.3f} | {worst['fidelity']:.2f} ({worst['prompt']}) "
              f"| {dmin:.2f}-{dmax:.2f} | {overall['frechet_distance']:.1f} | "
              f"{overall['precision']:.3f} | {overall['recall']:.3f} |")
    print(f"| ground truth | {ceiling['fidelity']:.3f} | | {ceiling['diversity']:.2f} | "
          f"{ceiling['frechet_distance']:.1f} | {ceiling['precision']:.3f} | "
          f"{ceiling['recall']:.3f} |")


if __name__ == "__main__":
    main()
