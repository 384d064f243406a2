"""A product-key memory layer (Lample et al. 2019; Berges et al. 2024's memory+ gating).

``n_keys^2`` value slots are addressed through two sets of ``n_keys`` half-keys: a query's two
halves each score their half-keys, the top-k of each combine into k^2 candidates whose score is
the sum, and the best k slots are read, weighted by a softmax over their scores. The search
costs ``2 n_keys`` dot products instead of ``n_keys^2``, and only k rows of the value table are
read (an ``EmbeddingBag`` with per-sample weights), so the table can be large. As in memory+,
the read is gated by ``silu(W_g x)`` and projected back to the model width. Several heads
(``heads``) have their own queries and keys and share the values.

``last_indices`` holds the slots the latest call read (no gradient), for strategies that count
slot accesses (``strategies.sparse_memory``), which find these layers by ``is_memory_layer``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ProductKeyMemory(nn.Module):
    """Maps (B, T, d_model) to (B, T, d_model) through a sparse read of ``n_keys^2`` slots."""

    is_memory_layer = True

    def __init__(self, d_model: int, n_keys: int, top_k: int, key_dim: int, value_dim: int,
                 heads: int = 1, dropout: float = 0.0):
        super().__init__()
        self.n_keys, self.top_k, self.heads, self.key_dim = n_keys, top_k, heads, key_dim
        self.n_slots = n_keys * n_keys
        self.query = nn.Linear(d_model, heads * key_dim, bias=False)
        self.query_norm = nn.LayerNorm(key_dim)  # keeps scores well scaled (Lample: BatchNorm)
        self.keys = nn.Parameter(torch.randn(heads, 2, n_keys, key_dim // 2) / (key_dim // 2)**.5)
        self.values = nn.EmbeddingBag(self.n_slots, value_dim, mode="sum")
        self.gate = nn.Linear(d_model, value_dim, bias=False)
        self.out = nn.Linear(value_dim, d_model, bias=False)
        self.drop = nn.Dropout(dropout)
        self.last_indices: Tensor | None = None  # (B, T, heads, top_k) slots of the latest call
        nn.init.normal_(self.values.weight, std=value_dim**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        indices, weights = self.lookup(x)
        self.last_indices = indices.detach()
        flat = indices.flatten(2).flatten(0, 1)  # (B*T, heads*top_k)
        read = self.values(flat, per_sample_weights=weights.flatten(2).flatten(0, 1)
                           .to(self.values.weight.dtype))
        read = read.view(*x.shape[:-1], -1).to(x.dtype)
        return self.drop(self.out(read * F.silu(self.gate(x))))

    def lookup(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The top-k slots of every token and head (B, T, heads, k) and their softmax weights."""
        q = self.query_norm(self.query(x).unflatten(-1, (self.heads, self.key_dim)))
        q1, q2 = q.float().chunk(2, dim=-1)  # (B, T, H, key_dim / 2)
        k = self.keys.float()
        s1 = torch.einsum("bthd,hnd->bthn", q1, k[:, 0])
        s2 = torch.einsum("bthd,hnd->bthn", q2, k[:, 1])
        top1, i1 = s1.topk(self.top_k, dim=-1)
        top2, i2 = s2.topk(self.top_k, dim=-1)
        scores = (top1[..., :, None] + top2[..., None, :]).flatten(-2)  # (B, T, H, k*k)
        slots = (i1[..., :, None] * self.n_keys + i2[..., None, :]).flatten(-2)
        best, pos = scores.topk(self.top_k, dim=-1)
        return slots.gather(-1, pos), best.softmax(dim=-1)
