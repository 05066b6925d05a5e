#!/usr/bin/python3
"""Writes tests/data/layers_golden.json: PyTorch reference values for the phase 2 ops and layers
(issue 10): conv2d, upsample_nearest2d, avg_pool2d, group_norm, layer_norm, silu, gelu, softmax,
log_softmax, scaled dot-product attention with a key mask, the Attention layer, and one small
chained network. Run once with PyTorch 1.13 and commit the output:
    /usr/bin/python3 scripts/make_layers_golden.py

Precision: every input, parameter and upstream gradient is drawn in float32 (fixed seeds) and
then widened to float64, so the same values are exact in both dtypes; the forward and backward
are computed in float64 and every output and gradient is stored as a float64 (shortest
round-trip decimal). A C++ test can therefore run the case in Float64 and compare tightly, or in
Float32 (same inputs) with a float32 tolerance.

Format (JSON):
  {"torch_version": "...", "computed_in": "float64", "inputs_exact_in": "float32",
   "cases": {NAME: CASE, ...}}
  A tensor is {"shape": [...], "data": [... row-major ...]}, plus "dtype": "int64" for integer
  tensors (key masks: 1 = the key is valid, 0 = masked).
  CASE = {
    "op":      the op or layer under test ("conv2d", "group_norm", "Attention", "chain", ...),
    "attrs":   the non-tensor arguments, named as in PROTOCOL.md (stride, padding, groups, eps,
               dim, heads, query_dim, ...),
    "inputs":  {name: tensor} the op's tensor arguments that are not parameters, in call order
               (x, q/k/v, context, key_mask, ...),
    "params":  {name: tensor} parameters by their PyTorch state_dict name (weight, bias,
               to_q.weight, ...); absent parameters (bias=False) are simply not listed,
    "grad_output": tensor, the fixed upstream gradient dL/d(output),
    "output":  tensor, the forward result,
    "grads":   {name: tensor} dL/d(name) for every floating input and every parameter (the keys of
               "inputs" minus integer masks, plus the keys of "params"),
    "state_dict": [names in PyTorch's order]   (only for layers and the chained network)
  }

Conventions the C++ side must match:
  - scaled dot-product attention: scale 1/sqrt(d), masked keys set to -inf before the softmax;
    a query row whose keys are all masked outputs zeros and passes zero gradient (PROTOCOL.md).
    PyTorch 1.13 has no F.scaled_dot_product_attention, so the reference is written out below.
  - Attention(query_dim, context_dim, heads): to_q/to_k/to_v/to_out are Linear with bias, the
    feature dim is split into heads of query_dim/heads, heads laid out as [B, L, heads, d_head]
    -> [B, heads, L, d_head] (the usual reshape + transpose), merged back the same way.
  - the chained network ("chain"): conv_in (3x3, pad 1) -> norm (GroupNorm) -> SiLU ->
    tokens [B, H*W, C] (x.flatten(2).transpose(1, 2)) -> attn (cross-attention over a context with
    a key mask) -> back to [B, C, H, W] (transpose(1, 2).reshape) -> conv_out (3x3, pad 1).
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)


def t(x):
    x = x.detach().contiguous()
    if x.dtype in (torch.int64, torch.bool):
        return {"shape": list(x.shape), "dtype": "int64",
                "data": [int(v) for v in x.long().reshape(-1)]}
    return {"shape": list(x.shape), "data": [float(v) for v in x.double().reshape(-1)]}


def randn(*shape, scale=1.0):
    """float32 normal draws, widened to float64 (so they are exact in both dtypes)."""
    return (torch.randn(*shape) * scale).double()


def run_case(op, attrs, inputs, params, fn, module=None):
    """Runs fn(**inputs) in float64 with a fixed random upstream gradient; returns the case."""
    leaves = {}
    for name, value in inputs.items():
        if value.is_floating_point():
            value = value.clone().requires_grad_(True)
        leaves[name] = value
    output = fn(**leaves)
    grad_output = randn(*output.shape)
    output.backward(grad_output)
    grads = {name: v.grad for name, v in leaves.items() if v.is_floating_point()}
    for name, p in params.items():
        grads[name] = p.grad
    for name, g in grads.items():
        assert g is not None, f"{op}: no gradient for {name}"
    case = {
        "op": op, "attrs": attrs,
        "inputs": {name: t(v) for name, v in inputs.items()},
        "params": {name: t(p) for name, p in params.items()},
        "grad_output": t(grad_output), "output": t(output),
        "grads": {name: t(g) for name, g in grads.items()},
    }
    if module is not None:
        case["state_dict"] = list(module.state_dict().keys())
    return case


def module_params(module):
    """A float64 module's parameters by state_dict name (gradients cleared)."""
    module.double()
    for p in module.parameters():
        p.grad = None
    return dict(module.named_parameters())


# ---- convolution and resampling ----
def conv_case(in_ch, out_ch, kernel, stride, padding, bias, x_shape):
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias)
    params = module_params(conv)
    attrs = {"stride": stride, "padding": padding, "dilation": 1, "groups": 1,
             "bias": bias, "kernel": kernel}
    return run_case("conv2d", attrs, {"x": randn(*x_shape)}, params, lambda x: conv(x), conv)


def make_convs():
    return {
        "conv2d_3x3_s1_p1": conv_case(3, 4, 3, 1, 1, True, (2, 3, 5, 6)),
        "conv2d_3x3_s1_p1_nobias": conv_case(3, 4, 3, 1, 1, False, (2, 3, 5, 6)),
        "conv2d_3x3_s2_p1": conv_case(3, 4, 3, 2, 1, True, (2, 3, 7, 6)),
        "conv2d_3x3_s2_p1_nobias": conv_case(2, 3, 3, 2, 1, False, (1, 2, 6, 5)),
        "conv2d_3x3_s1_p0": conv_case(2, 3, 3, 1, 0, True, (2, 2, 5, 4)),
        "conv2d_1x1": conv_case(5, 3, 1, 1, 0, True, (2, 5, 3, 4)),
        "conv2d_1x1_nobias": conv_case(5, 3, 1, 1, 0, False, (2, 5, 3, 4)),
    }


def make_resampling():
    return {
        "upsample_nearest2d_x2": run_case(
            "upsample_nearest2d", {"scale": 2}, {"x": randn(2, 3, 3, 4)}, {},
            lambda x: F.interpolate(x, scale_factor=2, mode="nearest")),
        "avg_pool2d_2": run_case(
            "avg_pool2d", {"kernel": 2}, {"x": randn(2, 3, 6, 4)}, {},
            lambda x: F.avg_pool2d(x, 2)),
        # Odd sizes: PyTorch (ceil_mode=False) drops the last row and column.
        "avg_pool2d_2_odd": run_case(
            "avg_pool2d", {"kernel": 2}, {"x": randn(1, 2, 5, 7)}, {},
            lambda x: F.avg_pool2d(x, 2)),
    }


# ---- normalisation ----
def affine(module, channels):
    """Non-trivial weight and bias, so that their gradients and effects are tested."""
    with torch.no_grad():
        module.weight.copy_(torch.randn(channels) * 0.5 + 1.0)
        module.bias.copy_(torch.randn(channels) * 0.5)
    return module


def make_norms():
    gn = affine(nn.GroupNorm(3, 6, eps=1e-5), 6)
    gn1d = affine(nn.GroupNorm(2, 4, eps=1e-5), 4)
    ln = affine(nn.LayerNorm(8, eps=1e-5), 8)
    ln_plain = nn.LayerNorm(8, eps=1e-5, elementwise_affine=False)
    return {
        "group_norm": run_case(
            "group_norm", {"groups": 3, "eps": 1e-5},
            {"x": randn(2, 6, 3, 4, scale=2.0) + 0.5}, module_params(gn), lambda x: gn(x), gn),
        "group_norm_rank3": run_case(
            "group_norm", {"groups": 2, "eps": 1e-5},
            {"x": randn(3, 4, 5)}, module_params(gn1d), lambda x: gn1d(x), gn1d),
        "layer_norm": run_case(
            "layer_norm", {"eps": 1e-5}, {"x": randn(2, 3, 8, scale=1.5) - 0.3},
            module_params(ln), lambda x: ln(x), ln),
        "layer_norm_no_affine": run_case(
            "layer_norm", {"eps": 1e-5}, {"x": randn(4, 8)}, {}, lambda x: ln_plain(x)),
    }


# ---- activations ----
def make_activations():
    def big_rows(x):
        x = x.clone()
        x[0] = torch.tensor([1000.0, -1000.0, 999.0, 0.0, -999.5, 1000.0], dtype=torch.float64)
        x[1] = torch.tensor([-1000.0, -1000.0, -1001.0, -998.0, -1000.0, -999.0],
                            dtype=torch.float64)
        return x

    soft_x = big_rows(randn(4, 6, scale=2.0))
    return {
        "silu": run_case("silu", {}, {"x": randn(3, 7, scale=3.0)}, {},
                         lambda x: F.silu(x)),
        "gelu": run_case("gelu", {}, {"x": randn(3, 7, scale=3.0)}, {},
                         lambda x: F.gelu(x, approximate="none")),
        "softmax_lastdim": run_case("softmax", {"dim": -1}, {"x": soft_x}, {},
                                    lambda x: F.softmax(x, dim=-1)),
        "softmax_dim1": run_case("softmax", {"dim": 1}, {"x": randn(2, 3, 4, scale=2.0)}, {},
                                 lambda x: F.softmax(x, dim=1)),
        "log_softmax_lastdim": run_case("log_softmax", {"dim": -1}, {"x": soft_x}, {},
                                        lambda x: F.log_softmax(x, dim=-1)),
        "log_softmax_dim0": run_case("log_softmax", {"dim": 0}, {"x": randn(3, 5, scale=2.0)},
                                     {}, lambda x: F.log_softmax(x, dim=0)),
    }


# ---- attention ----
def sdpa(q, k, v, key_mask=None):
    """softmax(q k^T / sqrt(d) with masked keys at -inf) v; rows with no valid key give 0."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, h, Lq, Lk]
    if key_mask is None:
        return F.softmax(scores, dim=-1) @ v
    # [B, Lk]: one mask for every query; [B, Lq, Lk]: a mask of its own for each query.
    valid = (key_mask != 0)[:, None, None, :] if key_mask.dim() == 2 else (key_mask != 0)[:, None]
    any_valid = valid.any(dim=-1, keepdim=True)  # [B, 1, 1, 1]
    scores = scores.masked_fill(~valid, float("-inf"))
    scores = torch.where(any_valid, scores, torch.zeros_like(scores))
    weights = F.softmax(scores, dim=-1) * any_valid
    return weights @ v


class Attention(nn.Module):
    """PROTOCOL.md's Attention(query_dim, context_dim, heads)."""

    def __init__(self, query_dim, context_dim, heads):
        super().__init__()
        assert query_dim % heads == 0
        self.heads = heads
        self.to_q = nn.Linear(query_dim, query_dim)
        self.to_k = nn.Linear(context_dim, query_dim)
        self.to_v = nn.Linear(context_dim, query_dim)
        self.to_out = nn.Linear(query_dim, query_dim)

    def forward(self, x, context=None, key_mask=None):
        context = x if context is None else context
        b, lq, dim = x.shape
        lk = context.shape[1]
        d = dim // self.heads

        def split(y, length):  # [B, L, dim] -> [B, heads, L, d]
            return y.reshape(b, length, self.heads, d).transpose(1, 2)

        q = split(self.to_q(x), lq)
        k = split(self.to_k(context), lk)
        v = split(self.to_v(context), lk)
        out = sdpa(q, k, v, key_mask)  # [B, heads, Lq, d]
        return self.to_out(out.transpose(1, 2).reshape(b, lq, dim))


def make_attention():
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.int64)
    all_masked = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.int64)
    cases = {
        "sdpa_masked": run_case(
            "scaled_dot_product_attention", {},
            {"q": randn(2, 2, 3, 4), "k": randn(2, 2, 5, 4), "v": randn(2, 2, 5, 4),
             "key_mask": mask}, {}, sdpa),
        "sdpa_no_mask": run_case(
            "scaled_dot_product_attention", {},
            {"q": randn(1, 3, 4, 8, scale=2.0), "k": randn(1, 3, 6, 8), "v": randn(1, 3, 6, 8)},
            {}, sdpa),
        # Batch 1 has no valid key: its output rows and its gradients are zero.
        "sdpa_all_masked_row": run_case(
            "scaled_dot_product_attention", {},
            {"q": randn(2, 1, 2, 4), "k": randn(2, 1, 4, 4), "v": randn(2, 1, 4, 4),
             "key_mask": all_masked}, {}, sdpa),
    }
    cross = Attention(8, 6, 2)
    cases["attention_cross"] = run_case(
        "Attention", {"query_dim": 8, "context_dim": 6, "heads": 2},
        {"x": randn(2, 3, 8), "context": randn(2, 4, 6),
         "key_mask": torch.tensor([[1, 1, 1, 0], [1, 0, 1, 0]], dtype=torch.int64)},
        module_params(cross), lambda x, context, key_mask: cross(x, context, key_mask), cross)
    self_attn = Attention(8, 8, 4)
    cases["attention_self"] = run_case(
        "Attention", {"query_dim": 8, "context_dim": 8, "heads": 4},
        {"x": randn(2, 5, 8)}, module_params(self_attn), lambda x: self_attn(x), self_attn)
    # A mask for each query [B, Lq, Lk] (the text encoder's phrase attention): batch 0 causal,
    # batch 1 two blocks and a query (row 2) with no valid key.
    query_mask = torch.tensor([[[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]],
                               [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]], dtype=torch.int64)
    cases["sdpa_query_mask"] = run_case(
        "scaled_dot_product_attention", {},
        {"q": randn(2, 2, 3, 4), "k": randn(2, 2, 4, 4), "v": randn(2, 2, 4, 4),
         "key_mask": query_mask}, {}, sdpa)
    return cases


# ---- one small network chaining them ----
class Chain(nn.Module):
    def __init__(self, in_ch=2, ch=8, groups=4, context_dim=6, heads=2, out_ch=2):
        super().__init__()
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.norm = nn.GroupNorm(groups, ch)
        self.attn = Attention(ch, context_dim, heads)
        self.conv_out = nn.Conv2d(ch, out_ch, 3, padding=1)

    def forward(self, x, context, key_mask):
        h = F.silu(self.norm(self.conv_in(x)))
        b, c, height, width = h.shape
        tokens = h.flatten(2).transpose(1, 2)  # [B, H*W, C]
        tokens = self.attn(tokens, context, key_mask)
        h = tokens.transpose(1, 2).reshape(b, c, height, width)
        return self.conv_out(h)


def make_chain():
    net = Chain()
    affine(net.norm, 8)
    inputs = {"x": randn(2, 2, 4, 5), "context": randn(2, 3, 6),
              "key_mask": torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.int64)}
    attrs = {"in_ch": 2, "ch": 8, "groups": 4, "eps": 1e-5, "context_dim": 6, "heads": 2,
             "out_ch": 2, "kernel": 3, "padding": 1}
    return {"chain": run_case("chain", attrs, inputs, module_params(net),
                              lambda x, context, key_mask: net(x, context, key_mask), net)}


def main():
    cases = {}
    for seed, make in enumerate([make_convs, make_resampling, make_norms, make_activations,
                                 make_attention, make_chain]):
        torch.manual_seed(seed)  # one seed per group: adding a case elsewhere changes nothing here
        cases.update(make())
    golden = {"torch_version": torch.__version__, "computed_in": "float64",
              "inputs_exact_in": "float32", "cases": cases}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                        "layers_golden.json")
    with open(path, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
