"""Recurrent Memory Transformer (Bulatov et al., 2022): memory tokens carried between segments.

Each segment is processed as ``[read memory; segment tokens; write memory]`` with one causal
attention over all of it. Segment tokens read the memory that came before them; the write slots
come last, see the whole segment, and their outputs become the read memory of the next segment.
Gradients flow back through the memory for ``bptt_segments`` segments and are cut beyond
(truncated backpropagation through time), which bounds the activation memory of long inputs.

    python -c "from harness.models.rmt import *; from harness.api import DataSpec; \
m = RMT(RMTConfig(seg_len=8), DataSpec('tokens', 'lm', vocab_size=258)); \
import torch; print(m(torch.randint(0, 258, (2, 32))).shape)"
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import DataSpec, SequenceModel
from harness.errors import UserError
from harness.models.layers import Block, SegmentConfig
from harness.registry import register_model


@dataclass
class RMTConfig(SegmentConfig):
    name: str = "rmt"
    n_mem_tokens: int = field(default=8, metadata={"help": "memory tokens read and written",
                                                   "min": 1})
    bptt_segments: int = field(default=2, metadata={
        "help": "segments gradients flow back through (0 = unlimited)", "min": 0})
    carry_memory: bool = field(
        default=False,
        metadata={"help": "keep the memory across forward calls (batches); reset_memory() clears"},
    )


@register_model("rmt", config=RMTConfig)
class RMT(SequenceModel):
    """Recurrent Memory Transformer: memory tokens written by one segment, read by the next."""

    def __init__(self, cfg: RMTConfig, spec: DataSpec):
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
        # Written memory is layer-normed: the raw residual stream grows with depth and training,
        # and a memory whose scale drifts from segment to segment trains poorly through BPTT.
        self.mem_norm = nn.LayerNorm(cfg.d_model)
        # Linear layers keep PyTorch's default init (std ~ 1/sqrt(d)), not GPT-2's 0.02: the
        # memory path is two attention hops deep (write in segment k, read in k+1), and with
        # tiny weights their product starts near zero and training stalls on that plateau.
        nn.init.normal_(self.embed.weight, std=0.02)
        # The first segment of a document reads this learned memory (unit scale, like mem_norm).
        self.mem_init = nn.Parameter(torch.randn(cfg.n_mem_tokens, cfg.d_model))
        # (B, n_mem_tokens, D) kept between calls when carry_memory is on; transient state
        # whose batch size varies, so checkpoints do not carry it.
        self.register_buffer("memory", None, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        mem = self.memory if self.cfg.carry_memory else None
        if mem is None or mem.shape[0] != x.shape[0]:
            mem = self.mem_init.expand(x.shape[0], -1, -1)
        outs = []
        for i, seg in enumerate(x.split(self.cfg.seg_len, dim=1)):
            if i and self.cfg.bptt_segments and i % self.cfg.bptt_segments == 0:
                mem = mem.detach()  # truncated BPTT: no gradient further back than this
            h, mem = self.segment(seg, mem)
            outs.append(h)
        if self.cfg.carry_memory:
            self.memory = mem.detach()
        return torch.cat(outs, dim=1)

    def segment(self, tokens: Tensor, mem: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden states of one segment and the memory it writes."""
        m, S = self.cfg.n_mem_tokens, tokens.shape[1]
        mem = mem.to(self.embed.weight.dtype)
        h = torch.cat([mem, self.drop(self.embed(tokens)), mem], dim=1)
        for block in self.blocks:
            h = block(h)  # causal over [read; segment; write]
        return self.ln_f(h[:, m : m + S]), self.mem_norm(h[:, m + S :])

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.embed.weight)  # tied with the input embedding

    def reset_memory(self) -> None:
        self.memory = None
