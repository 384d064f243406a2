"""A small GPT-style decoder: the baseline every memory-augmented model is compared with.

Pre-norm blocks (``harness.models.layers``, shared with the memory models), causal attention
through ``scaled_dot_product_attention`` (flash/memory-efficient kernels on GPU), rotary or
learned positions, and an LM head tied to the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.api import DataSpec, SequenceModel
from harness.errors import UserError
from harness.models.layers import Block, check_heads, init_weights
from harness.registry import register_model


@dataclass
class GPTConfig:
    name: str = "gpt"
    n_layer: int = field(default=2, metadata={"help": "transformer blocks", "min": 1})
    n_head: int = field(default=4, metadata={"help": "attention heads per block", "min": 1})
    d_model: int = field(default=128, metadata={"help": "hidden size", "min": 1})
    dropout: float = field(default=0.0, metadata={"help": "dropout on attention and MLP",
                                                  "min": 0, "below": 1})
    positions: str = field(default="rope", metadata={"help": "position encoding",
                                                     "choices": ("rope", "learned")})
    max_len: int = field(default=1024, metadata={"help": "longest sequence (learned positions)",
                                                 "min": 1})
    tie_weights: bool = field(default=True, metadata={"help": "tie LM head to the embedding"})

    def check(self) -> None:
        check_heads(self.d_model, self.n_head, rotary=self.positions == "rope")


@register_model("gpt", config=GPTConfig)
class GPT(SequenceModel):
    """Decoder-only transformer over token ids."""

    def __init__(self, cfg: GPTConfig, spec: DataSpec):
        super().__init__()
        if cfg.positions == "learned" and spec.seq_len > cfg.max_len:
            raise UserError(f"model.max_len={cfg.max_len} is shorter than the scenario's "
                            f"sequences ({spec.seq_len} tokens); raise it or use "
                            "model.positions=rope")
        self.cfg, self.hidden_size = cfg, cfg.d_model
        self.embed = nn.Embedding(spec.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        rotary = cfg.positions == "rope"
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_head, cfg.dropout, rotary) for _ in range(cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, spec.vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        h = self.embed(x)
        if self.pos is not None:
            if T > self.cfg.max_len:
                raise ValueError(f"sequence length {T} exceeds model.max_len={self.cfg.max_len}")
            h = h + self.pos(torch.arange(T, device=x.device))
        h = self.drop(h)
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return self.head(hidden)
