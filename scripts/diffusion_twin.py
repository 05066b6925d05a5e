#!/usr/bin/python3
"""The PyTorch twin of issue 11's TextToImageDiffusion (text encoder + U-Net), its DDPM noise
schedule, ε-prediction loss with classifier-free-guidance condition dropout, and the samplers
(DDPM, DDIM, Euler, DPM-Solver++(2M), trailing timestep spacing, CFG in one batched forward).
Module names match the issue exactly, so a state_dict moves to and from inkgrad by name.

  diffusion_twin.py info [--config small] [--size 28]
      parameter counts (text encoder, U-Net, total) and MFLOP of one U-Net forward per image
  diffusion_twin.py write-torch FILE [--config small] [--seed 0] [--perturb] [--probe JSON]
                               [--query-positions]
      a freshly initialised model's state_dict as safetensors, with the model kind and config in
      the metadata (inkgrad's keys too, so `inkgrad generate --checkpoint FILE` runs it); --probe
      also writes the twin's eps for fixed inputs (tests/test_diffusion_interop.cpp);
      --query-positions turns on the config's query_positions (no parameters: same state_dict)
  diffusion_twin.py text-probe FILE --out JSON
      the text encoder of FILE with phrase_attention on: its context for fixed rows of word
      token ids (tests/test_diffusion_interop.cpp)
  diffusion_twin.py sampler-golden
      writes tests/data/samplers_golden.json (schedules, timestep spacing and the samplers'
      results for a closed-form Gaussian denoiser) for tests/test_samplers.cpp
  diffusion_twin.py model-golden [--config tiny]
      writes tests/data/diffusion_golden.safetensors: one training step (loss, every gradient,
      the AdamW step, the EMA), the U-Net's eps and a 10-step DDIM sample with CFG (see
      write_model_golden for the layout)
  diffusion_twin.py check FILE [--probe JSON]
      loads a safetensors checkpoint (e.g. written by inkgrad) with strict=True, using the
      config in its metadata (the twin's "config.json", else inkgrad's "inkgrad.config"), and
      prints the U-Net's ε for fixed inputs; --probe also writes its eps for probe_inputs()
  diffusion_twin.py sample FILE --prompt P [--steps 50] [--guidance 3] [--sampler ddim] [-n 4]
      samples from a checkpoint and prints the images as text (a smoke test)

Other scripts import it: `from diffusion_twin import TextToImageDiffusion, CONFIGS, ...`.

Decisions where the issue leaves room (the C++ model must make the same ones):
  - The attention blocks' norm_self / norm_cross are LayerNorm(C) over the tokens [B, H*W, C]
    (GroupNorm is used only on feature maps: ResBlock norm1/norm2 and norm_out).
  - Down level i: res (ch[i-1] or ch for i = 0 -> ch[i]), attn, then the skip is taken (one skip
    per level, after attn and before downsample); downsample is a Conv2d(ch[i], ch[i], 3,
    stride 2, padding 1), so its parameters are down.i.downsample.{weight,bias}.
  - Up level i (run i = last .. 0): res on cat([h, skip_i], dim=1) (h first) from
    2 ch[i] to ch[i] (h has ch[i] channels: it comes from mid or from level i+1's upsample),
    attn, and upsample = nearest x2 then Conv2d(ch[i],
    ch[i-1], 3, padding 1) stored directly as up.i.upsample.{weight,bias}.
  - The time embedding: temb = lin2(silu(lin1(sinusoidal(t)))), with t the integer timestep as
    a float; each ResBlock adds time_proj(silu(temb)) after conv1. sinusoidal(t) =
    [sin(t f_0..f_{half-1}), cos(t f_0..f_{half-1})], f_i = exp(-ln(10000) i / half), half = ch/2,
    computed in float64 and then rounded to float32 (float32 angles t f_i are off by up to 1e-4).
  - Text: context = norm_out(layers(cat([null_emb, tok_emb(tokens)], 1) + pos_emb)), key mask =
    [1, tokens != 0]. tok_emb has padding_idx 0 (only its initial row 0 = 0 is affected: padding
    keys are masked everywhere, so that row never gets a gradient). null_emb and pos_emb start as
    N(0, 0.02^2); every Linear/Conv2d/Embedding/norm uses PyTorch's default initialisation, then
    ResBlock conv2 and the U-Net attention blocks' to_out are zeroed (weight and bias).
  - query_positions (off unless the config says so; issue 13): every U-Net attention block adds
    a constant, query_position_table(H, W, C), to norm_cross(t) before the cross-attention (the
    keys, values and the self-attention are unchanged). Token (y, x) gets, for k < C/4, in the
    channel blocks [0, C/4), [C/4, C/2), [C/2, 3C/4), [3C/4, C): sin(pi (k+1) (y+0.5) / H),
    cos(same), sin(pi (k+1) (x+0.5) / W), cos(same), computed in float64 and then rounded to
    float32. It has no parameters, so the state_dict is the same with it on or off.
  - phrase_attention (off unless the config says so; issue 13, word tokens only): the text
    layers' self-attention gets a mask per query. The null token (position 0) is a phrase of its
    own; the words up to the first "and" (word id AND_ID) are phrase 0, and each "and" starts the
    next. Query i may attend to key j when j is valid and j is the null token or in i's phrase.
    No parameters, so the state_dict is the same with it on or off.
  - Attention: heads = config heads everywhere (text layers, self and cross attention); a query
    row with no valid key outputs 0 (cannot happen here: the null token is always valid).
  - Sampling: x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) clipped to [-1, 1], and every
    sampler continues from the clipped x0_hat (DDIM and DDPM re-derive eps from it). abar before
    the first timestep (t = -1) is 1. Trailing spacing: t_i = round(T - i T / steps) - 1.
"""
import argparse
import functools
import json
import math
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_safetensors_golden import load_file_with_metadata, save_file  # noqa: E402
from notebook_model import PROMPTS, encode  # noqa: E402


@dataclass
class Config:
    ch: int = 32
    channel_mult: tuple = (1, 2, 2)
    attention_levels: tuple = (1, 2)
    context_dim: int = 64
    text_layers: int = 2
    heads: int = 4
    groups: int = 8
    in_channels: int = 1
    vocab_size: int = 28
    max_length: int = 32
    query_positions: bool = False
    phrase_attention: bool = False

    def level_channels(self):
        return [self.ch * m for m in self.channel_mult]


CONFIGS = {"tiny": Config(ch=16), "small": Config(ch=32), "base": Config(ch=64),
           # A few thousand parameters: small enough to commit as a test file.
           "micro": Config(ch=8, channel_mult=(1, 2), attention_levels=(1,), context_dim=16,
                           text_layers=1, heads=2, groups=4)}

# The word "and" in inkgrad's word tokenizer (models/word_tokenizer.cpp): it joins the phrases.
AND_ID = 25

# FLOP counter of the attention products (the Linear and Conv2d layers are counted by hooks).
_attention_flops = [0]


def attention(q, k, v, key_mask=None):
    """softmax(q k^T / sqrt(d), masked keys at -inf) v over q [B, h, Lq, d], k/v [B, h, Lk, d];
    key_mask [B, Lk] (nonzero = valid) or [B, Lq, Lk] (a mask for each query). A row with no
    valid key gives 0."""
    b, h, lq, d = q.shape
    _attention_flops[0] += 4 * b * h * lq * k.shape[2] * d
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if key_mask is None:
        return F.softmax(scores, dim=-1) @ v
    valid = (key_mask != 0)[:, None, None, :] if key_mask.dim() == 2 else (key_mask != 0)[:, None]
    any_valid = valid.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~valid, float("-inf"))
    scores = torch.where(any_valid, scores, torch.zeros_like(scores))
    return (F.softmax(scores, dim=-1) * any_valid) @ v


class Attention(nn.Module):
    """PROTOCOL.md's Attention(query_dim, context_dim, heads): to_q/to_k/to_v/to_out with bias."""

    def __init__(self, query_dim, context_dim, heads):
        super().__init__()
        assert query_dim % heads == 0, f"{query_dim} features do not split into {heads} heads"
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

        out = attention(split(self.to_q(x), lq), split(self.to_k(context), lk),
                        split(self.to_v(context), lk), key_mask)
        return self.to_out(out.transpose(1, 2).reshape(b, lq, dim))


def zero_(layer):
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


# ---- text encoder ----
class TextLayer(nn.Module):
    """Pre-LayerNorm transformer layer: x += attn(norm1(x)); x += fc2(gelu(fc1(norm2(x))))."""

    def __init__(self, d, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x, key_mask):
        h = self.norm1(x)
        x = x + self.attn(h, h, key_mask)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TextEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.context_dim
        self.tok_emb = nn.Embedding(config.vocab_size, d, padding_idx=0)
        self.null_emb = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_emb = nn.Parameter(torch.randn(1, config.max_length + 1, d) * 0.02)
        self.layers = nn.ModuleList(TextLayer(d, config.heads) for _ in range(config.text_layers))
        self.norm_out = nn.LayerNorm(d)
        self.phrase_attention = config.phrase_attention

    def forward(self, tokens):
        """tokens [B, L] (0 = padding) -> context [B, L+1, d], key mask [B, L+1] (1 = valid)."""
        b = tokens.shape[0]
        x = torch.cat([self.null_emb.expand(b, -1, -1), self.tok_emb(tokens)], dim=1)
        x = x + self.pos_emb
        key_mask = torch.cat([torch.ones(b, 1, dtype=torch.int64), (tokens != 0).long()], dim=1)
        attention_mask = phrase_mask(tokens, key_mask) if self.phrase_attention else key_mask
        for layer in self.layers:
            x = layer(x, attention_mask)
        return self.norm_out(x), key_mask


def phrase_mask(tokens, key_mask):
    """[B, L+1, L+1]: query i sees key j when j is valid and is the null token or in i's phrase."""
    phrase = torch.cumsum((tokens == AND_ID).long(), dim=1)  # [B, L]: the "and"s before, inclusive
    phrase = torch.cat([torch.full_like(phrase[:, :1], -1), phrase], dim=1)  # null: its own
    same = phrase[:, :, None] == phrase[:, None, :]
    same[:, :, 0] = True
    return (same & (key_mask[:, None, :] != 0)).long()


# ---- U-Net ----
def sinusoidal_embedding(t, dim):
    """[sin(t f_i), cos(t f_i)], f_i = exp(-ln(10000) i / half), i < half = dim / 2."""
    half = dim // 2
    # In float64 (then rounded): t f_i reaches ~1000 rad, where float32 angles are off by 1e-4.
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = t.double()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class TimeEmbed(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.ch = ch
        self.lin1 = nn.Linear(ch, 4 * ch)
        self.lin2 = nn.Linear(4 * ch, 4 * ch)

    def forward(self, t):
        emb = sinusoidal_embedding(t, self.ch).to(self.lin1.weight.dtype)
        return self.lin2(F.silu(self.lin1(emb)))


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, temb_dim, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x))) + self.time_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.skip is None else self.skip(x)) + h


@functools.lru_cache(maxsize=None)
def query_position_table(h, w, c):
    """The constant query_positions adds to the cross-attention queries, [1, H*W, C] float32:
    token (y, x) gets, for k < C/4, sin(pi (k+1) (y+0.5)/H), cos(same), sin(pi (k+1) (x+0.5)/W),
    cos(same) in the channel blocks [0, C/4), [C/4, C/2), [C/2, 3C/4), [3C/4, C)."""
    if h < 1 or w < 1 or c < 4 or c % 4:
        raise ValueError(f"query_position_table: needs H, W >= 1 and C a positive multiple of 4, "
                         f"got {h}x{w}x{c}")
    freqs = math.pi * torch.arange(1, c // 4 + 1, dtype=torch.float64)
    ay = freqs[None, :] * (torch.arange(h, dtype=torch.float64)[:, None] + 0.5) / h  # [H, C/4]
    ax = freqs[None, :] * (torch.arange(w, dtype=torch.float64)[:, None] + 0.5) / w  # [W, C/4]
    table = torch.cat([torch.sin(ay)[:, None, :].expand(h, w, -1),
                       torch.cos(ay)[:, None, :].expand(h, w, -1),
                       torch.sin(ax)[None, :, :].expand(h, w, -1),
                       torch.cos(ax)[None, :, :].expand(h, w, -1)], dim=2)
    return table.reshape(1, h * w, c).float()


class AttentionBlock(nn.Module):
    """On the image as tokens [B, H*W, C]: (optional) t += self_attn(norm_self(t));
    t += cross_attn(norm_cross(t) [+ query_position_table(H, W, C)], context, key_mask)."""

    def __init__(self, ch, context_dim, heads, self_attention, query_positions=False):
        super().__init__()
        self.query_positions = query_positions
        if self_attention:
            self.norm_self = nn.LayerNorm(ch)
            self.self_attn = Attention(ch, ch, heads)
            zero_(self.self_attn.to_out)
        self.norm_cross = nn.LayerNorm(ch)
        self.cross_attn = Attention(ch, context_dim, heads)
        zero_(self.cross_attn.to_out)
        self.self_attention = self_attention

    def forward(self, x, context, key_mask):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        if self.self_attention:
            n = self.norm_self(t)
            t = t + self.self_attn(n, n)
        q = self.norm_cross(t)
        if self.query_positions:  # a constant, not a parameter or a saved buffer
            q = q + query_position_table(h, w, c).to(q.dtype)
        t = t + self.cross_attn(q, context, key_mask)
        return t.transpose(1, 2).reshape(b, c, h, w)


class Upsample(nn.Conv2d):
    """Nearest x2, then this 3x3 conv (so its parameters are upsample.weight and upsample.bias)."""

    def __init__(self, in_ch, out_ch):
        super().__init__(in_ch, out_ch, 3, padding=1)

    def forward(self, x):
        return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownLevel(nn.Module):
    def __init__(self, in_ch, out_ch, temb_dim, config, attn, last):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, temb_dim, config.groups)
        if attn:
            self.attn = AttentionBlock(out_ch, config.context_dim, config.heads, False,
                                       config.query_positions)
        if not last:
            self.downsample = nn.Conv2d(out_ch, out_ch, 3, stride=2, padding=1)


class UpLevel(nn.Module):
    def __init__(self, in_ch, out_ch, temb_dim, config, attn, prev_ch):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, temb_dim, config.groups)
        if attn:
            self.attn = AttentionBlock(out_ch, config.context_dim, config.heads, False,
                                       config.query_positions)
        if prev_ch is not None:
            self.upsample = Upsample(out_ch, prev_ch)


class UNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        chs = config.level_channels()
        levels = len(chs)
        temb = 4 * config.ch
        self.time_embed = TimeEmbed(config.ch)
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        self.down = nn.ModuleList(
            DownLevel(chs[i - 1] if i > 0 else config.ch, chs[i], temb, config,
                      i in config.attention_levels, i == levels - 1) for i in range(levels))
        self.mid_res1 = ResBlock(chs[-1], chs[-1], temb, config.groups)
        self.mid_attn = AttentionBlock(chs[-1], config.context_dim, config.heads, True,
                                       config.query_positions)
        self.mid_res2 = ResBlock(chs[-1], chs[-1], temb, config.groups)
        self.up = nn.ModuleList(
            UpLevel(2 * chs[i], chs[i], temb, config,
                    i in config.attention_levels, chs[i - 1] if i > 0 else None)
            for i in range(levels))
        self.norm_out = nn.GroupNorm(config.groups, config.ch)
        self.conv_out = nn.Conv2d(config.ch, config.in_channels, 3, padding=1)

    def forward(self, x, t, context, key_mask):
        temb = self.time_embed(t)
        h = self.conv_in(x)
        skips = []
        for level in self.down:
            h = level.res(h, temb)
            if hasattr(level, "attn"):
                h = level.attn(h, context, key_mask)
            skips.append(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, temb), context, key_mask), temb)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            h = level.res(torch.cat([h, skips[i]], dim=1), temb)
            if hasattr(level, "attn"):
                h = level.attn(h, context, key_mask)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class TextToImageDiffusion(nn.Module):
    def __init__(self, config=CONFIGS["small"]):
        super().__init__()
        self.config = config
        self.text_encoder = TextEncoder(config)
        self.unet = UNet(config)

    def forward(self, x_t, t, tokens):
        context, key_mask = self.text_encoder(tokens)
        return self.unet(x_t, t, context, key_mask)


# ---- noise schedule ----
def linear_betas(T=1000, beta_start=1e-4, beta_end=0.02):
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T=1000, s=0.008, max_beta=0.999):
    """Nichol & Dhariwal: abar(t) = cos^2((t/T + s)/(1 + s) pi/2) / abar(0); beta clipped."""
    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(T)],
                        dtype=torch.float64)


def alphas_cumprod(betas):
    return torch.cumprod(1.0 - betas, dim=0)


def trailing_timesteps(steps, T=1000):
    """t_i = round(T - i T / steps) - 1 for i < steps: [999, 979, ..., 19] for 50 steps."""
    return [int(round(T - i * T / steps)) - 1 for i in range(steps)]


# ---- training ----
def training_loss(model, x0, tokens, abar, cond_dropout=0.1, generator=None):
    """ε-prediction MSE with CFG condition dropout (the prompt replaced by the empty prompt).
    x0 [B, C, H, W] in [-1, 1]; tokens [B, L]. Draws, in order: t, eps, dropout uniforms."""
    b = x0.shape[0]
    t = torch.randint(0, abar.shape[0], (b,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    drop = torch.rand(b, generator=generator) < cond_dropout
    return loss_for(model, x0, tokens, abar, t, eps, drop)[0]


def loss_for(model, x0, tokens, abar, t, eps, drop):
    """The loss for given draws: timesteps t [B], noise eps, drop [B] bool (True = the prompt is
    replaced by the empty prompt). Returns (loss, predicted eps)."""
    tokens = torch.where(drop[:, None], torch.zeros_like(tokens), tokens)
    a = abar[t].to(x0.dtype)[:, None, None, None]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    eps_pred = model(x_t, t, tokens)
    return F.mse_loss(eps_pred, eps), eps_pred


# ---- sampling ----
def cfg_denoiser(model, tokens, negative_tokens, guidance):
    """eps(x_t, t) = eps_u + w (eps_c - eps_u), both halves in one batched U-Net forward."""
    context, key_mask = model.text_encoder(torch.cat([tokens, negative_tokens], dim=0))

    def denoise(x, t):
        eps = model.unet(torch.cat([x, x]), torch.cat([t, t]), context, key_mask)
        eps_c, eps_u = eps.chunk(2)
        return eps_u + guidance * (eps_c - eps_u)
    return denoise


def sample(denoise, x, abar, timesteps, sampler="ddim", eta=0.0, generator=None,
           callback=None, clip=True):
    """Runs `sampler` from x = x_T ~ N(0, I) over `timesteps` (descending); returns x_0.
    denoise(x_t, t [B] int64) -> eps. callback(i, t, x_t, x0_hat) after each model call."""
    abar = abar.double()

    def ab(t):
        return 1.0 if t < 0 else float(abar[t])

    def x0_of(x_t, t):
        eps = denoise(x_t, torch.full((x_t.shape[0],), t, dtype=torch.int64))
        x0 = (x_t - math.sqrt(1 - ab(t)) * eps) / math.sqrt(ab(t))
        if clip:
            x0 = x0.clamp(-1, 1)
        if callback is not None:
            callback(i, t, x_t, x0)
        return x0

    prev = list(timesteps[1:]) + [-1]
    if sampler == "ddpm":  # the Gaussian posterior q(x_t' | x_t, x0_hat)
        for i, (t, tp) in enumerate(zip(timesteps, prev)):
            x0 = x0_of(x, t)
            if tp < 0:
                return x0
            a = ab(t) / ab(tp)
            b = 1 - a
            x = (math.sqrt(ab(tp)) * b / (1 - ab(t))) * x0 + \
                (math.sqrt(a) * (1 - ab(tp)) / (1 - ab(t))) * x
            x = x + math.sqrt((1 - ab(tp)) / (1 - ab(t)) * b) * torch.randn(x.shape,
                                                                           generator=generator)
        return x
    if sampler == "ddim":
        for i, (t, tp) in enumerate(zip(timesteps, prev)):
            x0 = x0_of(x, t)
            eps = (x - math.sqrt(ab(t)) * x0) / math.sqrt(1 - ab(t))
            var = eta ** 2 * (1 - ab(tp)) / (1 - ab(t)) * (1 - ab(t) / ab(tp))
            x = math.sqrt(ab(tp)) * x0 + math.sqrt(max(1 - ab(tp) - var, 0.0)) * eps
            if var > 0:
                x = x + math.sqrt(var) * torch.randn(x.shape, generator=generator)
        return x
    # Euler and DPM-Solver++(2M) in k-diffusion's variable: y = x_t / sqrt(abar), sigma =
    # sqrt((1 - abar) / abar), denoised = x0_hat; sigma after the last step is 0.
    def sigma(t):
        return 0.0 if t < 0 else math.sqrt((1 - ab(t)) / ab(t))

    y = x / math.sqrt(ab(timesteps[0]))
    old = None
    h_last = None
    for i, (t, tp) in enumerate(zip(timesteps, prev)):
        s, s_next = sigma(t), sigma(tp)
        denoised = x0_of(y * math.sqrt(ab(t)), t)
        if s_next == 0:
            y = denoised
        elif sampler == "euler":
            y = (1 - s_next / s) * denoised + (s_next / s) * y
        elif sampler == "dpmpp2m":
            h = math.log(s / s_next)  # lambda = -log sigma
            d = denoised
            if old is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            y = (s_next / s) * y - math.expm1(-h) * d
            old, h_last = denoised, h
        else:
            raise ValueError(f"unknown sampler {sampler!r}")
    return y


# ---- checkpoints ----
def config_dict(config):
    """asdict(config), with query_positions and phrase_attention only when on (as inkgrad writes its config), so the
    files written before it existed stay as they were."""
    values = asdict(config)
    for flag in ("query_positions", "phrase_attention"):
        if not values[flag]:
            del values[flag]
    return values


def config_metadata(name, config):
    """The twin's own keys, plus the two inkgrad reads (models/image_model.h): the registry kind
    and its DiffusionConfig JSON, so that a file written here drives `inkgrad generate`."""
    inkgrad_config = dict(config_dict(config), name=name, image_size=28, tokenizer="char",
                          schedule="linear", timesteps=1000)
    return {"format": "pt", "model": "diffusion", "config": name,
            "config.json": json.dumps(config_dict(config), sort_keys=True),
            "inkgrad.kind": "diffusion",
            "inkgrad.config": json.dumps(inkgrad_config, sort_keys=True)}


def probe_inputs(config, batch=2):
    """Inputs any language can rebuild without a random generator: x[i] = sin(0.37 i) over the
    flattened [batch, C, 28, 28] tensor, t = [10, 900], prompts [PROMPTS[0], '']."""
    n = batch * config.in_channels * 28 * 28
    x = torch.sin(0.37 * torch.arange(n, dtype=torch.float64)).float()
    x = x.reshape(batch, config.in_channels, 28, 28)
    tokens = torch.tensor([encode(PROMPTS[0], config.max_length), encode("", config.max_length)])
    return x, torch.tensor([10, 900]), tokens


def write_probe(model, checkpoint, path):
    """The model's eps for probe_inputs() as JSON (read by tests/test_diffusion_interop.cpp)."""
    x, t, tokens = probe_inputs(model.config)
    with torch.no_grad():
        eps = model(x, t, tokens)
    Path(path).write_text(json.dumps({
        "checkpoint": Path(checkpoint).name, "inputs": probe_inputs.__doc__.strip(),
        "torch_version": torch.__version__, "eps_shape": list(eps.shape),
        "eps": [round(v, 7) for v in eps.flatten().tolist()]}, indent=0) + "\n")
    print(f"wrote {path}: the twin's eps for probe_inputs()")


# Rows of word token ids for text-probe, padded to the checkpoint's max_length: "a red circle on
# the left and a blue square on the right", "small green cross and a triangle and white", and the
# empty prompt.
TEXT_PROBE_ROWS = [[2, 6, 13, 22, 17, 20, 25, 2, 8, 12, 22, 17, 21],
                   [4, 7, 15, 25, 2, 14, 25, 11], []]


def write_text_probe(path, out):
    """The text encoder of `path` with phrase_attention on, for TEXT_PROBE_ROWS, as JSON."""
    tensors, metadata = load_file_with_metadata(path)
    config = replace(config_from_metadata(metadata), phrase_attention=True)
    model = TextToImageDiffusion(config)
    model.load_state_dict(tensors, strict=True)
    rows = [r + [0] * (config.max_length - len(r)) for r in TEXT_PROBE_ROWS]
    with torch.no_grad():
        context, _ = model.text_encoder(torch.tensor(rows))
    Path(out).write_text(json.dumps({
        "checkpoint": Path(path).name, "tokens": rows, "torch_version": torch.__version__,
        "context_shape": list(context.shape),
        "context": [round(v, 7) for v in context.flatten().tolist()]}, indent=0) + "\n")
    print(f"wrote {out}: the twin's phrase-attention context for {len(rows)} rows")


def config_from_metadata(metadata):
    """The twin's "config.json", else the fields of inkgrad's DiffusionConfig JSON that the twin
    has (a checkpoint written by inkgrad), else the preset named by "config"."""
    if "config.json" in metadata:
        values = json.loads(metadata["config.json"])
    elif "inkgrad.config" in metadata:
        inkgrad_config = json.loads(metadata["inkgrad.config"])
        names = [f.name for f in fields(Config)]
        values = {k: v for k, v in inkgrad_config.items() if k in names}
    else:
        return CONFIGS[metadata.get("config", "small")]
    values["channel_mult"] = tuple(values["channel_mult"])
    values["attention_levels"] = tuple(values["attention_levels"])
    return Config(**values)


def load_model(path):
    tensors, metadata = load_file_with_metadata(path)
    model = TextToImageDiffusion(config_from_metadata(metadata))
    model.load_state_dict(tensors, strict=True)
    return model, metadata


# ---- counting ----
def count_flops(module, *inputs):
    """FLOP (2 per multiply-add) of one forward: Conv2d, Linear and the attention products."""
    flops = [0]

    def conv_hook(m, inp, out):
        flops[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
            m.kernel_size[1]

    def linear_hook(m, inp, out):
        flops[0] += 2 * out.numel() * m.in_features

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    _attention_flops[0] = 0
    with torch.no_grad():
        module(*inputs)
    for h in hooks:
        h.remove()
    return flops[0] + _attention_flops[0]


def gaussian_denoiser(abar, mu, s):
    """The exact E[eps | x_t] when x_0 ~ N(mu, s^2 I): sqrt(1 - a) (x_t - sqrt(a) mu) /
    (a s^2 + 1 - a), a = abar_t. A test denoiser with a closed form and a non-trivial path."""
    def denoise(x, t):
        a = abar.double()[t][:, None, None, None]
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s * s + 1 - a)
    return denoise


def write_sampler_golden(path):
    """tests/data/samplers_golden.json for tests/test_samplers.cpp: both schedules'
    alphas_cumprod, trailing timesteps, and each deterministic sampler's result (float64) for
    the Gaussian denoiser above from a fixed x_T (float32-exact values)."""
    def values(x):
        return [float(v) for v in x.double().flatten()]

    linear = alphas_cumprod(linear_betas())
    cosine = alphas_cumprod(cosine_betas())
    g = torch.Generator().manual_seed(0)
    shape = (2, 1, 3, 3)
    x_T = torch.randn(shape, generator=g).double()
    # Means inside and outside [-1, 1], so clipping is exercised in the early steps.
    mu = (torch.randn((1,) + shape[1:], generator=g) * 0.8).double()
    s = 0.5
    runs = []
    for schedule, abar in [("linear", linear), ("cosine", cosine)]:
        for sampler in ["ddim", "euler", "dpmpp2m"]:
            for steps, clip in [(10, True), (4, False)]:
                out = sample(gaussian_denoiser(abar, mu, s), x_T, abar,
                             trailing_timesteps(steps), sampler, clip=clip)
                runs.append({"schedule": schedule, "sampler": sampler, "steps": steps,
                             "clip_x0": clip, "x0": values(out)})
    golden = {
        "torch_version": torch.__version__,
        "alphas_cumprod": {"linear": values(linear), "cosine": values(cosine)},
        "trailing_timesteps": {str(n): trailing_timesteps(n) for n in [1, 3, 10, 16, 50, 1000]},
        "gaussian": {"shape": list(shape), "x_T": values(x_T), "mu": values(mu), "s": s,
                     "runs": runs},
    }
    with open(path, "w") as f:
        json.dump(golden, f)
        f.write("\n")
    print(f"wrote {path}")


def write_model_golden(path, name):
    """Golden numbers for the C++ model (issue 11's tests), computed in float64 from float32-exact
    values and stored as float32 in one safetensors file:
      param.*      the starting state_dict: PyTorch's initialisation, except that the tensors
                   that start at zero (ResBlock conv2, attention to_out) get N(0, 0.02^2) values
                   so that every path is active
      input.*      x0 [2, C, 28, 28] in [-1, 1], tokens [2, L] (two prompts), t [2], noise, drop
                   [2] (I64, 1 = the prompt replaced by the empty prompt)
      output.eps_pred, output.loss [1]   the U-Net's eps for x_t and the ε-MSE
      grad.*       every parameter's gradient of that loss
      adamw.*      the parameters after one AdamW step (metadata: lr, betas, eps, weight_decay)
      ema.*        an EMA (decay in the metadata) started at param.* after one update with
                   adamw.*: ema = decay ema + (1 - decay) param
      ddim.x_T, ddim.tokens, ddim.negative_tokens, ddim.x0   a 10-step DDIM (eta 0, trailing,
                   linear schedule, x0_hat clipped) with CFG at the metadata's guidance, from
                   param.* (not the stepped weights); ddim.x0_unclipped the same without
                   clipping (with these untrained weights most clipped pixels end at +-1)"""
    torch.manual_seed(0)
    config = CONFIGS[name]
    model = TextToImageDiffusion(config)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape) * 0.02)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.double()
    hyper = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01,
             "ema_decay": 0.999, "guidance": 3.0, "ddim_steps": 10}
    abar = alphas_cumprod(linear_betas())
    c = config.in_channels
    x0 = ((torch.rand(2, c, 28, 28) > 0.8).float() * 2 - 1).double()
    tokens = torch.tensor([encode(PROMPTS[0], config.max_length),
                           encode(PROMPTS[5], config.max_length)])
    t = torch.tensor([10, 700])
    noise = torch.randn(2, c, 28, 28).double()
    drop = torch.tensor([False, True])
    loss, eps_pred = loss_for(model, x0, tokens, abar, t, noise, drop)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=hyper["lr"],
                                  betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"],
                                  weight_decay=hyper["weight_decay"])
    optimizer.step()
    after = {k: p.detach().clone() for k, p in model.named_parameters()}
    d = hyper["ema_decay"]
    ema = {k: d * initial[k].double() + (1 - d) * after[k] for k in after}
    model.load_state_dict({k: v.double() for k, v in initial.items()})
    x_T = torch.randn(2, c, 28, 28).double()
    empty = torch.zeros_like(tokens)
    with torch.no_grad():
        denoise = cfg_denoiser(model, tokens, empty, hyper["guidance"])
        steps = trailing_timesteps(hyper["ddim_steps"])
        x_ddim = sample(denoise, x_T, abar, steps, "ddim")
        # An untrained network drives most clipped pixels to +-1; unclipped, every pixel counts.
        x_ddim_unclipped = sample(denoise, x_T, abar, steps, "ddim", clip=False)
    out = {}
    for k, v in initial.items():
        out["param." + k] = v.float()
    for prefix, tensors in [("grad.", grads), ("adamw.", after), ("ema.", ema)]:
        for k, v in tensors.items():
            out[prefix + k] = v.float()
    out.update({"input.x0": x0.float(), "input.tokens": tokens, "input.t": t,
                "input.noise": noise.float(), "input.drop": drop.long(),
                "output.eps_pred": eps_pred.detach().float(),
                "output.loss": loss.detach().float().reshape(1),
                "ddim.x_T": x_T.float(), "ddim.tokens": tokens, "ddim.negative_tokens": empty,
                "ddim.x0": x_ddim.float(),
                "ddim.x0_unclipped": x_ddim_unclipped.float()})
    metadata = config_metadata(name, config)
    metadata.update({k: repr(v) for k, v in hyper.items()})
    metadata["torch_version"] = torch.__version__
    save_file(out, path, metadata)
    print(f"wrote {path}: loss {loss.item():.6f}, {len(out)} tensors")


def info(name, size):
    torch.manual_seed(0)
    config = CONFIGS[name]
    model = TextToImageDiffusion(config)
    n_text = sum(p.numel() for p in model.text_encoder.parameters())
    n_unet = sum(p.numel() for p in model.unet.parameters())
    tokens = torch.tensor([encode(PROMPTS[0], config.max_length)])
    context, mask = model.text_encoder(tokens)
    x = torch.randn(1, config.in_channels, size, size)
    t = torch.tensor([500])
    unet_flops = count_flops(model.unet, x, t, context, mask)
    text_flops = count_flops(model.text_encoder, tokens)
    print(f"config {name}: {asdict(config)}")
    print(f"parameters: text_encoder {n_text}, unet {n_unet}, total {n_text + n_unet}")
    print(f"one U-Net forward at {size}x{size}: {unet_flops / 1e6:.1f} MFLOP per image; "
          f"text encoder {text_flops / 1e6:.2f} MFLOP per prompt")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("info")
    p.add_argument("--config", default="small", choices=CONFIGS)
    p.add_argument("--size", type=int, default=28)
    p = commands.add_parser("write-torch")
    p.add_argument("file")
    p.add_argument("--config", default="small", choices=CONFIGS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--perturb", action="store_true",
                   help="add 0.05 * randn to every parameter (so zero-initialised ones count)")
    p.add_argument("--probe", help="also write the twin's eps for probe_inputs() to this JSON")
    p.add_argument("--query-positions", action="store_true",
                   help="the config with query_positions on (the same parameters)")
    p = commands.add_parser("text-probe")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p = commands.add_parser("sampler-golden")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" /
                                        "data" / "samplers_golden.json"))
    p = commands.add_parser("model-golden")
    p.add_argument("--config", default="tiny", choices=CONFIGS)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" /
                                        "data" / "diffusion_golden.safetensors"))
    p = commands.add_parser("check")
    p.add_argument("file")
    p.add_argument("--probe", help="also write the model's eps for probe_inputs() to this JSON")
    p = commands.add_parser("sample")
    p.add_argument("file")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm", "euler", "dpmpp2m"])
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-n", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "info":
        info(args.config, args.size)
    elif args.command == "write-torch":
        torch.manual_seed(args.seed)
        model = TextToImageDiffusion(replace(CONFIGS[args.config],
                                             query_positions=args.query_positions))
        # Fresh zero-initialised branches (conv2, to_out) would hide most of the network from a
        # check; perturb every parameter a little so that each one changes the output.
        if args.perturb:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
        save_file(model.state_dict(), args.file, config_metadata(args.config, model.config))
        print(f"wrote {args.file}: {len(model.state_dict())} tensors")
        if args.probe:
            write_probe(model, args.file, args.probe)
    elif args.command == "text-probe":
        write_text_probe(args.file, args.out)
    elif args.command == "sampler-golden":
        write_sampler_golden(args.out)
    elif args.command == "model-golden":
        write_model_golden(args.out, args.config)
    elif args.command == "check":
        model, metadata = load_model(args.file)
        print(f"{args.file}: load_state_dict(strict=True) ok, metadata {metadata}")
        if args.probe:
            write_probe(model, args.file, args.probe)
        torch.manual_seed(0)
        c = model.config
        x = torch.randn(2, c.in_channels, 28, 28)
        tokens = torch.tensor([encode(PROMPTS[0], c.max_length), encode("", c.max_length)])
        with torch.no_grad():
            eps = model(x, torch.tensor([10, 900]), tokens)
        print(f"eps for randn(2, {c.in_channels}, 28, 28) (seed 0), t = [10, 900], prompts "
              f"[{PROMPTS[0]!r}, '']: mean {eps.mean():.6f}, std {eps.std():.6f}, first "
              f"{eps.flatten()[:4].tolist()}")
    elif args.command == "sample":
        model, _ = load_model(args.file)
        c = model.config
        g = torch.Generator().manual_seed(args.seed)
        tokens = torch.tensor([encode(args.prompt, c.max_length)] * args.n)
        negative = torch.tensor([encode(args.negative_prompt, c.max_length)] * args.n)
        abar = alphas_cumprod(linear_betas())
        with torch.no_grad():
            x = torch.randn(args.n, c.in_channels, 28, 28, generator=g)
            x = sample(cfg_denoiser(model, tokens, negative, args.guidance), x, abar,
                       trailing_timesteps(args.steps), args.sampler, args.eta, g)
        for image in x:
            for row in image[0]:
                print("".join(" .:-=+*#%@"[min(9, int((v + 1) / 2 * 10))] for v in row.tolist()))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
