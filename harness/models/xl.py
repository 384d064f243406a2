"""Transformer-XL: segment recurrence with a cache of earlier segments' hidden states.

A long input (B, T) is cut into segments of ``seg_len`` tokens, processed left to right. Each
layer keeps the last ``mem_len`` hidden states it received (its input, detached); the next
segment's queries attend to ``[memory; segment]``. Positions are rotary (RoPE) and counted from
the start of that window, so they are relative by construction and stay valid however many
segments have gone by. With ``mem_len=0`` the model is a GPT whose attention window is one
segment: the baseline the recall tests compare against.

The attention layers live in ``harness.models.layers``, shared with ``gpt``, ``rmt`` and ``knn``.

    python -c "from harness.models.xl import *; from harness.api import DataSpec; \
m = XL(XLConfig(seg_len=8, mem_len=8), DataSpec('tokens', 'lm', vocab_size=258)); \
import torch; print(m(torch.randint(0, 258, (2, 32))).shape)"
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import DataSpec, SequenceModel
from harness.errors import UserError
from harness.models.layers import Block, SegmentConfig, init_weights
from harness.registry import register_model


@dataclass
class XLConfig(SegmentConfig):
    name: str = "xl"
    mem_len: int = field(default=64, metadata={"help": "cached hidden states per layer (0 = off)",
                                               "min": 0})
    carry_memory: bool = field(
        default=False,
        metadata={"help": "keep the cache across forward calls (batches); reset_memory() clears"},
    )


@register_model("xl", config=XLConfig)
class XL(SequenceModel):
    """Transformer-XL: each layer attends to a cache of earlier segments' hidden states."""

    def __init__(self, cfg: XLConfig, spec: DataSpec):
        super().__init__()
        if spec.seq_len and cfg.seg_len > spec.seq_len:  # one segment: memory never read
            raise UserError(f"model.seg_len={cfg.seg_len} is longer than the scenario's "
                            f"sequences ({spec.seq_len} tokens): the memory would never be "
                            f"read; choose model.seg_len from 1 to {spec.seq_len}")
        self.cfg, self.hidden_size = cfg, cfg.d_model
        self.embed = nn.Embedding(spec.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_head, cfg.dropout) for _ in range(cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(init_weights)
        # (n_layer, B, <=mem_len, D) cache kept between calls when carry_memory is on. It is
        # transient working state (its batch size varies), so checkpoints do not carry it.
        self.register_buffer("memory", None, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        mems = self.memory if self.cfg.carry_memory else None
        if mems is not None and mems.shape[1] != x.shape[0]:
            mems = None  # a batch of another size cannot continue these documents
        outs = []
        for seg in x.split(self.cfg.seg_len, dim=1):
            h, mems = self.segment(seg, mems)
            outs.append(h)
        if self.cfg.carry_memory:
            self.memory = mems
        return torch.cat(outs, dim=1)

    def segment(self, tokens: Tensor, mems: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Hidden states of one segment and the updated per-layer cache."""
        h = self.drop(self.embed(tokens))
        new_mems = []
        for i, block in enumerate(self.blocks):
            mem = None if mems is None else mems[i]
            if self.cfg.mem_len:
                # Cache this layer's input, without gradient: XL's stop-gradient memory.
                ctx = h if mem is None else torch.cat([mem, h], dim=1)
                new_mems.append(ctx[:, -self.cfg.mem_len:].detach())
            h = block(h, mem)
        return self.ln_f(h), torch.stack(new_mems) if new_mems else None

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.embed.weight)  # tied with the input embedding

    def reset_memory(self) -> None:
        self.memory = None
