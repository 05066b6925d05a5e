#!/usr/bin/env python3
"""Prints bench_matmul's Google Benchmark JSON as a table: shape x kernel -> GFLOP/s and % of
OpenBLAS (measured in the same run). Standard library only.

    ./build/bench/bench_matmul --benchmark_out=matmul.json --benchmark_out_format=json
    python3 scripts/bench_table.py matmul.json [--threads 1] [--markdown]

Row names look like  kernel/shape/layout/MxNxK/threads:T[/real_time].  With repetitions
(--benchmark_repetitions), the median aggregate is used; otherwise the single run.
"""

import argparse
import json
import sys

KERNEL_ORDER = ["openblas", "naive", "blocked", "packed", "packed_mt"]


def parse_name(name):
    parts = [p for p in name.split("/") if p != "real_time"]
    if len(parts) < 5 or not parts[4].startswith("threads:"):
        return None
    kernel, shape, layout, dims, threads = parts[:5]
    return kernel, shape, layout, dims, int(threads.split(":", 1)[1])


def load_rows(path):
    with (sys.stdin if path == "-" else open(path)) as f:
        data = json.load(f)
    have_medians = any(b.get("aggregate_name") == "median" for b in data["benchmarks"])
    rows = {}
    for b in data["benchmarks"]:
        if have_medians and b.get("aggregate_name") != "median":
            continue
        if not have_medians and b.get("run_type") == "aggregate":
            continue
        key = parse_name(b.get("run_name", b["name"]))
        if key is None or "GFLOP" not in b:
            continue
        kernel, shape, layout, dims, threads = key
        rows[(shape, layout, dims, threads, kernel)] = (b["GFLOP"], b.get("vs_openblas"))
    return data.get("context", {}), rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="Google Benchmark JSON output ('-' for stdin)")
    parser.add_argument("--threads", type=int, help="only this thread count")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    context, rows = load_rows(args.json)
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
