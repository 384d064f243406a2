"""A small GPT-style decoder: the baseline every memory-augmented model is compared with.

Pre-norm blocks, causal attention through ``scaled_dot_product_attention`` (flash/memory-
efficient kernels on GPU), rotary or learned positions, and an LM head tied to the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UserError
from harness.models.base import DataSpec, SequenceModel
from harness.registry import register_model


@dataclass
class GPTConfig:
    name: str = "gpt"
    n_layer: int = field(default=2, metadata={"help": "transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "attention heads per block"})
    d_model: int = field(default=128, metadata={"help": "hidden size"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on attention and MLP"})
    positions: str = field(default="rope", metadata={"help": "rope | learned"})
    max_len: int = field(default=1024, metadata={"help": "longest sequence (learned positions)"})
    tie_weights: bool = field(default=True, metadata={"help": "tie LM head to the embedding"})


def rope_tables(seq_len: int, head_dim: int, offset: int = 0, device=None):
    """cos/sin tables for rotary embeddings at absolute positions offset..offset+seq_len-1."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    pos = torch.arange(offset, offset + seq_len, device=device).float()
    angles = torch.outer(pos, inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs of x (B, H, T, Dh) by position-dependent angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float):
        super().__init__()
        if d_model % n_head:
            raise ValueError("d_model must be divisible by n_head")
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, rope=None) -> Tensor:
        x = x + self.attn(self.ln1(x), rope)
        return x + self.mlp(self.ln2(x))


@register_model("gpt", config=GPTConfig)
class GPT(SequenceModel):
    """Decoder-only transformer over token ids."""

    def __init__(self, cfg: GPTConfig, spec: DataSpec):
        super().__init__()
        if spec.kind != "tokens":
            raise UserError("model gpt needs token inputs; use model.name=mlp for vector data")
        if cfg.positions not in ("rope", "learned"):
            raise ValueError(f"positions must be 'rope' or 'learned', not '{cfg.positions}'")
        self.cfg, self.hidden_size = cfg, cfg.d_model
        self.embed = nn.Embedding(spec.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_head, cfg.dropout) for _ in range(cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, spec.vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        h = self.embed(x)
        rope = None
        if self.pos is not None:
            if T > self.cfg.max_len:
                raise ValueError(f"sequence length {T} exceeds model.max_len={self.cfg.max_len}")
            h = h + self.pos(torch.arange(T, device=x.device))
        else:
            rope = rope_tables(T, self.cfg.d_model // self.cfg.n_head, device=x.device)
        h = self.drop(h)
        for block in self.blocks:
            h = block(h, rope)
        return self.ln_f(h)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return self.head(hidden)


def _init_weights(module: nn.Module) -> None:
    # GPT-2 initialisation: small normal weights keep the residual stream well scaled.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
