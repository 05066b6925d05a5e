#!/usr/bin/env python3
"""Prints bench_conv's Google Benchmark JSON as a table: shape x pass x threads -> GFLOP/s of
oneDNN and of every conv2d kernel, each kernel's ratio to oneDNN (measured in the same run),
the best kernel's fraction of the machine's peak, and its speed-up from 1 to 2 threads.
Standard library only.

    ./build/bench/bench_conv --benchmark_out=conv.json --benchmark_out_format=json
    python3 scripts/bench_conv_table.py conv.json [--threads 1] [--markdown] [--peak 226]

Row names look like  kernel/shape/pass/dims/threads:T[/real_time].  With repetitions
(--benchmark_repetitions=N) each row's runs are reduced to their median GFLOP/s, or to their best
with --stat best (the better estimate on a shared machine), and the ratios are recomputed from
the reduced rates.
"""

import argparse
import json
import statistics
import sys

REFERENCE = "onednn"
KERNEL_ORDER = [REFERENCE, "naive", "im2col", "grouped", "shifted"]


def parse_name(name):
    parts = [p for p in name.split("/") if p != "real_time"]
    if len(parts) < 5 or not parts[4].startswith("threads:"):
        return None
    kernel, shape, pas, dims, threads = parts[:5]
    return kernel, shape, pas, dims, int(threads.split(":", 1)[1])


def load_rates(path, stat):
    with (sys.stdin if path == "-" else open(path)) as f:
        data = json.load(f)
    runs = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" or "GFLOP" not in b:
            continue
        key = parse_name(b.get("run_name", b["name"]))
        if key is not None:
            runs.setdefault(key, []).append(b["GFLOP"])
    reduce = max if stat == "best" else statistics.median
    return data.get("context", {}), {k: reduce(v) for k, v in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="Google Benchmark JSON output ('-' for stdin)")
    parser.add_argument("--threads", type=int, help="only this thread count")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--stat", choices=["median", "best"], default="median",
                        help="how to reduce repetitions (default: median)")
    parser.add_argument("--peak", type=float, default=226.0,
                        help="peak GFLOP/s of one core (default: 226, AVX-512 FMA on Zen 5)")
    args = parser.parse_args()

    context, rates = load_rates(args.json, args.stat)
    kernels = sorted({k[0] for k in rates},
                     key=lambda k: (KERNEL_ORDER.index(k) if k in KERNEL_ORDER else 99, k))
    ours = [k for k in kernels if k != REFERENCE]
    has_reference = REFERENCE in kernels
    problems = []
    for _, shape, pas, dims, threads in rates:
        if (shape, pas, dims, threads) not in problems:
            problems.append((shape, pas, dims, threads))
    if args.threads is not None:
        problems = [p for p in problems if p[3] == args.threads]

    def best_of(shape, pas, dims, threads):
        found = [(rates[(k, shape, pas, dims, threads)], k) for k in ours
                 if (k, shape, pas, dims, threads) in rates]
        return max(found) if found else (None, None)

    header = ["shape", "pass", "B x C x H x W - O k s", "thr"]
    for k in kernels:
        header.append(k + " GFLOP/s")
        if has_reference and k != REFERENCE:
            header.append("vs " + REFERENCE)
    header += ["best % peak", "best 2thr/1thr"]
    table = [header]
    for shape, pas, dims, threads in problems:
        line = [shape, pas, dims, str(threads)]
        reference = rates.get((REFERENCE, shape, pas, dims, threads))
        for k in kernels:
            rate = rates.get((k, shape, pas, dims, threads))
            line.append("" if rate is None else f"{rate:.1f}")
            if has_reference and k != REFERENCE:
                ok = rate is not None and reference
                line.append(f"{rate / reference:.2f}x" if ok else "")
        best, _ = best_of(shape, pas, dims, threads)
        line.append("" if best is None else f"{100 * best / (args.peak * threads):.0f}%")
        one, _ = best_of(shape, pas, dims, 1)
        line.append(f"{best / one:.2f}x" if threads > 1 and best and one else "")
        table.append(line)

    for key in ("host_name", "num_cpus", "load_avg", "sgemm_isa", "onednn"):
        if key in context:
            print(f"{key}: {context[key]}")
    print(f"peak: {args.peak:g} GFLOP/s per core")
    if args.markdown:
        print("| " + " | ".join(table[0]) + " |")
        print("|" + "|".join("---" for _ in table[0]) + "|")
        for line in table[1:]:
            print("| " + " | ".join(line) + " |")
        return
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for n, line in enumerate(table):
        print("  ".join(cell.rjust(w) if i >= 3 else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
