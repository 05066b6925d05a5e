#!/usr/bin/env python3
"""Prints bench_matmul's Google Benchmark JSON as a table: shape x kernel -> GFLOP/s and % of
OpenBLAS (measured in the same run). Standard library only.

    ./build/bench/bench_matmul --benchmark_out=matmul.json --benchmark_out_format=json
    python3 scripts/bench_table.py matmul.json [--threads 1] [--markdown]

Row names look like  kernel/shape/layout/MxNxK/threads:T[/real_time].  With repetitions
(--benchmark_repetitions=N), each row's N runs are reduced to their median GFLOP/s, or to their
best with --stat best (the better estimate on a machine shared with other work), and the % of
OpenBLAS is recomputed from the two reduced rates. Without repetitions it is the row's own
vs_openblas counter.
"""

import argparse
import json
import statistics
import sys

KERNEL_ORDER = ["openblas", "naive", "blocked", "packed", "packed_mt"]


def parse_name(name):
    parts = [p for p in name.split("/") if p != "real_time"]
    if len(parts) < 5 or not parts[4].startswith("threads:"):
        return None
    kernel, shape, layout, dims, threads = parts[:5]
    return kernel, shape, layout, dims, int(threads.split(":", 1)[1])


def load_rows(path, stat):
    with (sys.stdin if path == "-" else open(path)) as f:
        data = json.load(f)
    runs = {}  # key -> list of (GFLOP/s, vs_openblas) of the individual runs
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        key = parse_name(b.get("run_name", b["name"]))
        if key is None or "GFLOP" not in b:
            continue
        kernel, shape, layout, dims, threads = key
        runs.setdefault((shape, layout, dims, threads, kernel), []).append(
            (b["GFLOP"], b.get("vs_openblas")))
    rows = {}
    for key, values in runs.items():
        if len(values) == 1:
            rows[key] = values[0]
            continue
        rates = sorted(v[0] for v in values)
        rows[key] = (rates[-1] if stat == "best" else statistics.median(rates), None)
    # With repetitions, the ratio comes from the reduced rates of the same run.
    for (shape, layout, dims, threads, kernel), (rate, ratio) in list(rows.items()):
        reference = rows.get((shape, layout, dims, threads, "openblas"))
        if ratio is None and reference is not None:
            rows[(shape, layout, dims, threads, kernel)] = (rate, rate / reference[0])
    return data.get("context", {}), rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="Google Benchmark JSON output ('-' for stdin)")
    parser.add_argument("--threads", type=int, help="only this thread count")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--stat", choices=["median", "best"], default="median",
                        help="how to reduce repetitions (default: median)")
    args = parser.parse_args()

    context, rows = load_rows(args.json, args.stat)
    kernels = sorted({k[4] for k in rows},
                     key=lambda k: (KERNEL_ORDER.index(k) if k in KERNEL_ORDER else 99, k))
    problems = []  # in the order the benchmark ran them
    for shape, layout, dims, threads, _ in rows:
        if (shape, layout, dims, threads) not in problems:
            problems.append((shape, layout, dims, threads))
    if args.threads is not None:
        problems = [p for p in problems if p[3] == args.threads]
    has_reference = any(k[4] == "openblas" for k in rows)

    header = ["shape", "layout", "M x N x K", "thr"]
    for k in kernels:
        header.append(k + " GFLOP/s")
        if has_reference and k != "openblas":
            header.append(k + " %")
    table = [header]
    for shape, layout, dims, threads in problems:
        line = [shape, layout, dims.replace("x", " x "), str(threads)]
        for k in kernels:
            cell = rows.get((shape, layout, dims, threads, k))
            line.append("" if cell is None else f"{cell[0]:.1f}")
            if has_reference and k != "openblas":
                ratio = None if cell is None else cell[1]
                line.append("" if ratio is None else f"{100 * ratio:.0f}%")
        table.append(line)

    for key in ("host_name", "sgemm_isa", "openblas"):
        if key in context:
            print(f"{key}: {context[key]}")
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
