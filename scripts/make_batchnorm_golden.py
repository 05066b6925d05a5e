#!/usr/bin/python3
# Writes tests/data/batchnorm_golden.json: how PyTorch's BatchNorm1d counts num_batches_tracked
# and what its running statistics are, for tests/test_nn_golden.cpp. Run once with PyTorch:
#   /usr/bin/python3 scripts/make_batchnorm_golden.py
# Two modules see the same sequence of calls: momentum=0.1 and momentum=None (the cumulative
# average, where batch n is weighted 1 / num_batches_tracked). Each call is a training forward
# with grad, a training forward under torch.no_grad(), or an eval forward; after each one the
# file holds the output, the running statistics and the count. Inputs are stored next to them.
import json
import os

import torch
import torch.nn as nn

torch.manual_seed(13)
torch.set_num_threads(1)


def t(x):
    x = x.detach().contiguous()
    return {"shape": list(x.shape), "data": [float(v) for v in x.float().reshape(-1)]}


CALLS = ["train", "train", "no_grad", "eval", "train", "eval"]


def make(momentum, inputs):
    torch.manual_seed(1)
    bn = nn.BatchNorm1d(3, eps=1e-5, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, -1.0]))
        bn.bias.copy_(torch.tensor([0.25, -0.5, 1.0]))
    steps = []
    for kind, x in zip(CALLS, inputs):
        bn.train(kind != "eval")
        if kind == "no_grad":
            with torch.no_grad():
                y = bn(x)
        else:
            y = bn(x)
        steps.append({
            "call": kind, "x": t(x), "output": t(y),
            "running_mean": t(bn.running_mean), "running_var": t(bn.running_var),
            "num_batches_tracked": int(bn.num_batches_tracked),
        })
    return {"momentum": momentum, "weight": t(bn.weight), "bias": t(bn.bias), "steps": steps,
            "repr": repr(bn), "state_dict_keys": list(bn.state_dict().keys()),
            "num_batches_tracked_dtype": str(bn.num_batches_tracked.dtype),
            "num_batches_tracked_shape": list(bn.num_batches_tracked.shape)}


def main():
    inputs = [torch.randn(5, 3) * (1.0 + 0.5 * i) + torch.tensor([1.0, -2.0, 0.5])
              for i in range(len(CALLS))]
    golden = {"torch_version": torch.__version__, "exponential": make(0.1, inputs),
              "cumulative": make(None, inputs)}
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "batchnorm_golden.json")
    with open(path, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
