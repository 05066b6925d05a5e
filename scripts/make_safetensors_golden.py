#!/usr/bin/python3
"""Golden safetensors files from PyTorch, and a checker for files written by inkgrad.

The Python `safetensors` package is not available here, so this holds a minimal pure-Python
writer and reader that follow the format and the reference implementation's layout: tensors
sorted by descending dtype alignment then name, compact JSON with "__metadata__" first, header
padded with spaces to a multiple of 8, and the same strict checks on read.

  make_safetensors_golden.py write
      Writes tests/data/golden_pt.safetensors (the state_dict of a small PyTorch
      Linear -> BatchNorm1d after one training step) and tests/data/golden_pt_values.txt
      (every tensor's name, dtype, shape and values, for the C++ test). Run once; commit both.

  make_safetensors_golden.py verify FILE [--module "torch.nn.Sequential(...)"]
      Reads FILE with the strict reader into torch tensors, prints each name, dtype and shape,
      and, with --module, loads them into that PyTorch module with load_state_dict(strict=True).
      Exits non-zero on any problem.

Other scripts can reuse the reader: `from make_safetensors_golden import load_file`.
"""
import argparse
import json
import struct
import sys
from collections import OrderedDict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
GOLDEN_FILE = REPO / "tests" / "data" / "golden_pt.safetensors"
GOLDEN_VALUES = REPO / "tests" / "data" / "golden_pt_values.txt"
MAX_HEADER_BYTES = 100_000_000

# safetensors dtype name -> (torch dtype, size in bytes). Listed in the reference
# implementation's Dtype order, which its writer sorts by (descending) before the name.
DTYPES = OrderedDict([
    ("BOOL", (torch.bool, 1)),
    ("U8", (torch.uint8, 1)),
    ("I8", (torch.int8, 1)),
    ("I16", (torch.int16, 2)),
    ("F16", (torch.float16, 2)),
    ("BF16", (torch.bfloat16, 2)),
    ("I32", (torch.int32, 4)),
    ("F32", (torch.float32, 4)),
    ("F64", (torch.float64, 8)),
    ("I64", (torch.int64, 8)),
])
DTYPE_RANK = {name: rank for rank, name in enumerate(DTYPES)}
NAME_OF_TORCH_DTYPE = {torch_dtype: name for name, (torch_dtype, _) in DTYPES.items()}


def tensor_bytes(t):
    # .numpy() needs a CPU, contiguous tensor; x86 and ARM hosts are little-endian already.
    assert sys.byteorder == "little"
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def save_file(tensors, path, metadata=None):
    """Writes {name: tensor} to `path` the way safetensors.torch.save_file does."""
    items = sorted(tensors.items(),
                   key=lambda kv: (-DTYPE_RANK[NAME_OF_TORCH_DTYPE[kv[1].dtype]], kv[0]))
    header = OrderedDict()
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    offset = 0
    for name, t in items:
        blob = tensor_bytes(t)
        header[name] = OrderedDict([
            ("dtype", NAME_OF_TORCH_DTYPE[t.dtype]),
            ("shape", list(t.shape)),
            ("data_offsets", [offset, offset + len(blob)]),
        ])
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"duplicate keys in header: {duplicates}")
    return OrderedDict(pairs)


def load_file_with_metadata(path):
    """Reads a safetensors file strictly. Returns ({name: tensor} in header order, metadata)."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: only {len(data)} bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise ValueError(f"{path}: bad header length {n} for a file of {len(data)} bytes")
    header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{path}: __metadata__ is not a map of strings")
    body = data[8 + n:]
    tensors = OrderedDict()
    layout = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{path}: tensor {name!r}: bad entry {info!r}")
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name!r}: unknown dtype {info['dtype']!r}")
        torch_dtype, size = DTYPES[info["dtype"]]
        shape = info["shape"]
        begin, end = info["data_offsets"]
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"{path}: tensor {name!r}: bad shape {shape}")
        numel = 1
        for s in shape:
            numel *= s
        if not 0 <= begin <= end <= len(body) or end - begin != numel * size:
            raise ValueError(f"{path}: tensor {name!r}: data_offsets {[begin, end]} do not fit "
                             f"shape {shape} of {info['dtype']} in {len(body)} data bytes")
        layout.append((begin, end, name))
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=torch_dtype)
        else:
            raw = bytearray(body[begin:end])
            if torch_dtype == torch.bfloat16:
                flat = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
            else:
                flat = torch.frombuffer(raw, dtype=torch_dtype)
            tensors[name] = flat.reshape(shape).clone()
    covered = 0
    for begin, end, name in sorted(layout):
        if begin != covered:
            raise ValueError(f"{path}: tensor {name!r} starts at {begin}, expected {covered}")
        covered = end
    if covered != len(body):
        raise ValueError(f"{path}: tensors cover {covered} of {len(body)} data bytes")
    return tensors, metadata


def load_file(path):
    """Like safetensors.torch.load_file: {name: tensor}."""
    return load_file_with_metadata(path)[0]


def golden_state_dict():
    """A real PyTorch state_dict: Linear(3, 2) -> BatchNorm1d(2) after one training forward, so
    the running statistics and num_batches_tracked (an I64 scalar) are not their defaults."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3))
    return model.state_dict()


def format_values(t):
    if t.dtype == torch.int64:
        return " ".join(str(v) for v in t.flatten().tolist())
    # %.9g round-trips every float32 exactly.
    return " ".join("%.9g" % v for v in t.flatten().tolist())


def write_golden():
    state = golden_state_dict()
    save_file(state, GOLDEN_FILE, metadata={"format": "pt"})
    tensors, metadata = load_file_with_metadata(GOLDEN_FILE)
    assert metadata == {"format": "pt"}
    with open(GOLDEN_VALUES, "w") as f:
        f.write("# Written by scripts/make_safetensors_golden.py from PyTorch %s.\n"
                % torch.__version__)
        f.write("# The tensors of golden_pt.safetensors in file order: "
                "name dtype [shape] values...\n")
        for name, t in tensors.items():
            assert torch.equal(t, state[name]), name
            shape = "[" + ",".join(str(s) for s in t.shape) + "]"
            f.write(f"{name} {NAME_OF_TORCH_DTYPE[t.dtype]} {shape} {format_values(t)}\n")
    print(f"wrote {GOLDEN_FILE.relative_to(REPO)} and {GOLDEN_VALUES.relative_to(REPO)}")


def verify(path, module_expression):
    tensors, metadata = load_file_with_metadata(path)
    print(f"{path}: {len(tensors)} tensors, metadata {dict(metadata)}")
    for name, t in tensors.items():
        print(f"  {name:40s} {NAME_OF_TORCH_DTYPE[t.dtype]:4s} {list(t.shape)}")
    if module_expression:
        module = eval(module_expression, {"torch": torch, "nn": torch.nn})
        module.load_state_dict(tensors, strict=True)
        print(f"load_state_dict(strict=True) into {type(module).__name__}: ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("write", help="write the golden files into tests/data")
    check = commands.add_parser("verify", help="read a safetensors file (e.g. written by inkgrad)")
    check.add_argument("file")
    check.add_argument("--module", help="a Python expression building the PyTorch module to "
                       "load the tensors into with strict=True (torch and nn are in scope)")
    args = parser.parse_args()
    if args.command == "write":
        write_golden()
        return 0
    try:
        verify(args.file, args.module)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
