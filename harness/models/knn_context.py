"""Fixed context keys for the kNN-LM store: a random projection of the last ``window`` tokens.

A key learned by the network (a hidden state) drifts as later tasks train it, so an entry
written in task 1 is no longer found from task 1's contexts after task 3. These keys are never
trained: the token at offset j back is a fixed random vector, permuted by a fixed random
permutation per offset (so "red door" and "door red" differ), summed over the window and
L2-normalised. The same context always gives the same key; contexts sharing most of their
window have a high cosine, unrelated ones about 1/sqrt(dim). It plays the part of the frozen key
network of episodic memories for continual learning (MbPA++, de Masson d'Autume et al., 2019),
without a pretrained encoder: matches are on the context's tokens, not its meaning.

The tables are drawn from ``seed`` and are not part of ``state_dict()``: any model built with
the same seed computes the same keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ContextKeys(nn.Module):
    def __init__(self, vocab_size: int, dim: int, window: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.window = window
        table = torch.randn(vocab_size, dim, generator=g) / math.sqrt(dim)
        perms = torch.stack([torch.randperm(dim, generator=g) for _ in range(window)])
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("perms", perms, persistent=False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Unit keys (B, T, dim); the key at t reads x[t - window + 1 .. t] (causal)."""
        emb = self.table[x]  # (B, T, dim)
        keys = torch.zeros_like(emb)
        for j in range(min(self.window, x.shape[1])):
            keys[:, j:] += emb[:, : x.shape[1] - j][..., self.perms[j]]
        return F.normalize(keys, dim=-1)
