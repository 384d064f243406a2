"""A GPT whose feed-forward block in chosen layers is a product-key memory layer.

Berges et al. (2024) replace some feed-forward blocks of a transformer with a large memory
layer (``harness.models.product_keys``): many parameters, few of them touched per token. Its
slots are the unit the ``sparse_memory`` strategy trains (arXiv 2510.15103): new knowledge goes
into the slots most specific to it, which is what keeps old knowledge in place.

Everything else is ``gpt`` (rotary attention, pre-norm blocks, tied LM head). ``seg_len`` cuts
the sequence into independent windows, for probes that compare memories beyond a window with a
window-limited model (the product-key memory holds weights, not context, so it cannot bridge them).

    retain run model.name=memory_layer model.memory_layers=[1] model.n_keys=32 model.top_k=8 \\
        scenario.name=text-domains strategy=sparse_memory strategy.sparse_memory.slots=64
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from harness.api import DataSpec
from harness.errors import UserError
from harness.models.gpt import GPT, GPTConfig
from harness.models.layers import init_weights
from harness.models.product_keys import ProductKeyMemory
from harness.registry import register_model


@dataclass
class MemoryLayerConfig(GPTConfig):
    name: str = "memory_layer"
    memory_layers: list[int] = field(default_factory=lambda: [1], metadata={
        "help": "blocks whose feed-forward is a memory layer (0-based, each below n_layer)",
        "min": 0})
    n_keys: int = field(default=32, metadata={
        "help": "half-keys per product set (slots = n_keys^2)", "min": 2, "max": 4096})
    top_k: int = field(default=8, metadata={"help": "slots read per token and head (<= n_keys)",
                                            "min": 1})
    key_dim: int = field(default=64, metadata={"help": "query and key size (even)", "min": 2})
    value_dim: int = field(default=0, metadata={"help": "slot size (0 = d_model)", "min": 0})
    mem_heads: int = field(default=1, metadata={"help": "memory heads (own keys, shared values)",
                                                "min": 1})
    seg_len: int = field(default=0, metadata={
        "help": "attention window: independent segments of this many tokens (0 = whole sequence)",
        "min": 0})

    def check(self) -> None:
        super().check()
        if not self.memory_layers:
            raise UserError("model.memory_layers must name at least one block: from 0 to "
                            f"{self.n_layer - 1} (model.n_layer={self.n_layer})")
        for i in self.memory_layers:
            if i >= self.n_layer:
                raise UserError(f"model.memory_layers has {i}: blocks go from 0 to "
                                f"{self.n_layer - 1} (model.n_layer={self.n_layer})")
        if len(set(self.memory_layers)) != len(self.memory_layers):
            raise UserError(f"model.memory_layers={self.memory_layers} names a block twice")
        if self.top_k > self.n_keys:
            raise UserError(f"model.top_k={self.top_k} must be at most model.n_keys="
                            f"{self.n_keys}: from 1 to {self.n_keys}")
        if self.key_dim % 2:
            raise UserError(f"model.key_dim={self.key_dim} must be even: a query is split into "
                            "two halves")


@register_model("memory_layer", config=MemoryLayerConfig)
class MemoryLayerGPT(GPT):
    """GPT with product-key memory layers in place of the chosen blocks' feed-forward."""

    def __init__(self, cfg: MemoryLayerConfig, spec: DataSpec):
        super().__init__(cfg, spec)
        for i in cfg.memory_layers:
            self.blocks[i].mlp = ProductKeyMemory(
                cfg.d_model, cfg.n_keys, cfg.top_k, cfg.key_dim, cfg.value_dim or cfg.d_model,
                cfg.mem_heads, cfg.dropout)
            self.blocks[i].mlp.apply(init_weights)  # its Linear layers, as in the rest of gpt

    def forward(self, x: Tensor) -> Tensor:
        B, T = x.shape
        S = self.cfg.seg_len
        if not S or T <= S:
            return super().forward(x)
        n = -(-T // S)
        # segments become batch rows; padding goes at the end, where causality hides it
        h = super().forward(F.pad(x, (0, n * S - T)).reshape(B * n, S))
        for m in self.memory_modules():  # accesses per sequence again, for sparse_memory
            m.last_indices = m.last_indices.reshape(B, n * S, *m.last_indices.shape[2:])[:, :T]
        return h.reshape(B, n * S, -1)[:, :T]

    def memory_modules(self) -> list[ProductKeyMemory]:
        return [self.blocks[i].mlp for i in self.cfg.memory_layers]
