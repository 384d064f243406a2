"""Transformer layers shared by every attention model (gpt, xl, rmt, knn).

One pre-norm block whose attention optionally reads a memory placed before the segment
(``[memory; segment]``), with rotary positions counted from the start of that window, so the
same block is a plain causal GPT layer without memory and a Transformer-XL layer with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UserError


def rope(x: Tensor, start: int) -> Tensor:
    """Rotary position embedding of x (B, H, L, Dh) at positions start..start+L-1."""
    cos, sin = _rope_tables(x.shape[-2], x.shape[-1], start, x.device, x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


@functools.lru_cache(maxsize=64)
def _rope_tables(length: int, head_dim: int, start: int, device, dtype) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles: the same few shapes every step and every layer, so
    built once (seven kernels each time otherwise, twice per layer)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(start, start + length, device=device).float(), inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def causal_mask(n_query: int, n_mem: int, device) -> Tensor:
    """(S, M+S) boolean mask: query i sees all M memory slots and segment positions <= i."""
    keys = torch.arange(n_mem + n_query, device=device)
    return keys[None, :] <= torch.arange(n_query, device=device)[:, None] + n_mem


class Attention(nn.Module):
    """Causal multi-head self-attention of a segment over ``[memory; segment]``."""

    def __init__(self, d_model: int, n_head: int, dropout: float, rotary: bool = True):
        super().__init__()
        if d_model % n_head:
            raise UserError(f"d_model={d_model} must be divisible by n_head={n_head}")
        self.n_head, self.dropout, self.rotary = n_head, dropout, rotary
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def heads(self, x: Tensor) -> Tensor:  # (B, L, D) -> (B, H, L, Dh)
        return x.unflatten(-1, (self.n_head, -1)).transpose(1, 2)

    def forward(self, x: Tensor, mem: Tensor | None = None) -> Tensor:
        ctx = x if mem is None else torch.cat([mem, x], dim=1)
        M = ctx.shape[1] - x.shape[1]
        q = self.heads(self.q(x))
        k, v = (self.heads(t) for t in self.kv(ctx).chunk(2, dim=-1))
        if self.rotary:
            q, k = rope(q, start=M), rope(k, start=0)
        drop = self.dropout if self.training else 0.0
        if M == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            mask = causal_mask(x.shape[1], M, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.proj(y.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Pre-norm transformer block; ``mem``, an optional context of earlier hidden states read
    before the segment, goes through the same ``ln1`` as the segment."""

    def __init__(self, d_model: int, n_head: int, dropout: float, rotary: bool = True):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_head, dropout, rotary)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, mem: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), None if mem is None else self.ln1(mem))
        return x + self.mlp(self.ln2(x))


def init_weights(module: nn.Module) -> None:
    # GPT-2 initialisation: small normal weights keep the residual stream well scaled.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


@dataclass
class SegmentConfig:
    """The fields of a model that reads its sequence segment by segment (xl, rmt, knn), in the
    order they are listed: a model's config subclasses it, and ``name``, which it redefines,
    keeps its first place."""

    name: str = ""
    n_layer: int = field(default=2, metadata={"help": "transformer blocks", "min": 1})
    n_head: int = field(default=4, metadata={"help": "attention heads per block", "min": 1})
    d_model: int = field(default=128, metadata={"help": "hidden size", "min": 1})
    dropout: float = field(default=0.0, metadata={"help": "dropout on attention and MLP",
                                                  "min": 0, "below": 1})
    seg_len: int = field(default=64, metadata={"help": "tokens per segment (attention window)",
                                               "min": 1})

    def check(self) -> None:
        check_heads(self.d_model, self.n_head)


def check_heads(d_model: int, n_head: int, rotary: bool = True) -> None:
    """The config rule of every attention model: heads split d_model evenly and, with rotary
    positions, into an even size (RoPE rotates pairs; an odd size would broadcast wrongly)."""
    if d_model % n_head:
        raise UserError(f"model.d_model={d_model} must be divisible by model.n_head={n_head}")
    if rotary and d_model // n_head % 2:
        raise UserError(f"model.d_model / model.n_head = {d_model // n_head} must be even: "
                        "rotary positions rotate pairs of dimensions")

