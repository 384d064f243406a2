"""Titans (Behrouz, Zhong and Mirrokni, 2025): attention plus a neural memory learned at test time.

The long-term memory (``harness.models.titans_memory``) is an MLP whose weights are written
during the forward pass by gradient steps on an associative loss, with momentum and a
forgetting gate, in chunks of ``chunk_size`` tokens. Two of the paper's variants:

* ``mac`` (memory as context): the input is cut into segments of ``seg_len``. Each segment
  reads the memory left by the earlier segments with its own tokens as queries; every layer
  attends to ``[persistent tokens; retrieved tokens; segment]``, token i seeing the persistent
  tokens, and the retrieved and segment tokens up to i. The last layer's outputs then write
  the memory. (The paper also gates the output with the memory read after this write, which
  would let a token see later tokens of its segment; it is left out.)
* ``mag`` (memory as gate): sliding-window attention (window ``seg_len``) over
  ``[persistent tokens; sequence]``, and, beside it, the memory reading and writing the
  token embeddings chunk by chunk; the output is ``norm(y) * sigmoid(norm(memory read))``.

``n_persist`` learned persistent-memory tokens hold task knowledge independent of the input.
With ``carry_memory`` the memory state (weights and momenta, per batch row) carries over from
one forward call to the next, detached, and travels in ``state_dict`` (``_extra_state``), so a
checkpoint resumes it bit-identically; ``reset_memory()`` drops it.

    python -c "from harness.models.titans import *; from harness.api import DataSpec; \
m = Titans(TitansConfig(seg_len=8, chunk_size=4), DataSpec('tokens', 'lm', vocab_size=258)); \
import torch; print(m(torch.randint(0, 258, (2, 32))).shape)"
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import DataSpec, SequenceModel
from harness.errors import UserError
from harness.models.layers import Attention, Block, check_heads, init_weights, rope
from harness.models.titans_memory import NeuralMemory, State
from harness.registry import register_model

VARIANTS = ("mac", "mag")


@dataclass
class TitansConfig:
    name: str = "titans"
    n_layer: int = field(default=2, metadata={"help": "transformer blocks", "min": 1})
    n_head: int = field(default=4, metadata={"help": "attention heads per block", "min": 1})
    d_model: int = field(default=128, metadata={"help": "hidden size", "min": 1})
    dropout: float = field(default=0.0, metadata={"help": "dropout on attention and MLP",
                                                  "min": 0, "below": 1})
    variant: str = field(default="mac", metadata={
        "help": "mac: memory as context; mag: memory as gate", "choices": VARIANTS})
    seg_len: int = field(default=64, metadata={
        "help": "tokens per segment (mac) or attention window (mag)", "min": 1})
    chunk_size: int = field(default=16, metadata={
        "help": "tokens whose memory gradients are taken together (at most seg_len)", "min": 1})
    n_persist: int = field(default=4, metadata={"help": "persistent memory tokens", "min": 0})
    mem_depth: int = field(default=2, metadata={"help": "layers of the memory MLP",
                                                "min": 1, "max": 4})
    mem_hidden: int = field(default=0, metadata={
        "help": "hidden size of the memory MLP (0 = d_model)", "min": 0})
    mem_lr: float = field(default=0.05, metadata={
        "help": "initial memory step size theta (gates are learned per token)",
        "above": 0, "below": 1})
    momentum: float = field(default=0.9, metadata={
        "help": "initial memory momentum eta", "above": 0, "below": 1})
    decay: float = field(default=0.01, metadata={
        "help": "initial forgetting gate alpha", "above": 0, "below": 1})
    carry_memory: bool = field(
        default=False,
        metadata={"help": "keep the memory across forward calls (batches); reset_memory() clears"},
    )

    def check(self) -> None:
        check_heads(self.d_model, self.n_head)
        if self.chunk_size > self.seg_len:
            raise UserError(f"model.chunk_size={self.chunk_size} must be at most "
                            f"model.seg_len={self.seg_len}: from 1 to {self.seg_len}")


@register_model("titans", config=TitansConfig)
class Titans(SequenceModel):
    """Titans: attention with a neural long-term memory written by gradient steps at test time."""

    def __init__(self, cfg: TitansConfig, spec: DataSpec):
        super().__init__()
        self.cfg, self.hidden_size = cfg, cfg.d_model
        d = cfg.d_model
        self.embed = nn.Embedding(spec.vocab_size, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_head, cfg.dropout) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.persist = nn.Parameter(torch.zeros(cfg.n_persist, d))
        self.memory = NeuralMemory(d, cfg.mem_hidden or d, cfg.mem_depth, cfg.chunk_size,
                                   cfg.mem_lr, cfg.momentum, cfg.decay)
        self.gate_norm = nn.LayerNorm(d) if cfg.variant == "mag" else None
        self.apply(init_weights)
        nn.init.normal_(self.persist, std=0.02)
        self.memory.reset_gates()
        self.carried: State | None = None  # the memory kept between calls (carry_memory)

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        state = self.carried if self.cfg.carry_memory else None
        if state is None or state[0][0].shape[0] != B:
            state = self.memory.initial(B)  # a batch of another size cannot continue them
        if self.cfg.variant == "mac":
            h, state = self.mac(x, state)
        else:
            h, state = self.mag(x, state)
        if self.cfg.carry_memory:
            self.carried = ([w.detach() for w in state[0]], [s.detach() for s in state[1]])
        return h

    def mac(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        outs = []
        for seg in x.split(self.cfg.seg_len, dim=1):
            h = self.drop(self.embed(seg))
            retrieved = self.memory.read(state, h).to(h.dtype)
            prefix = torch.cat([self.persist.expand(len(h), -1, -1).to(h.dtype), retrieved], 1)
            mask = mac_mask(self.cfg.n_persist, seg.shape[1], x.device)
            for block in self.blocks:
                h = block_forward(block, h, prefix, mask)
            state = self.memory.write(state, h)
            outs.append(self.ln_f(h))
        return torch.cat(outs, dim=1), state

    def mag(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h = self.drop(self.embed(x))
        read, state = self.memory.scan(state, h)
        prefix = self.persist.expand(len(h), -1, -1).to(h.dtype)
        mask = window_mask(self.cfg.n_persist, x.shape[1], self.cfg.seg_len, x.device)
        for block in self.blocks:
            h = block_forward(block, h, prefix, mask)
        return self.ln_f(h) * torch.sigmoid(self.gate_norm(read.to(h.dtype))), state

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.embed.weight)  # tied with the input embedding

    def reset_memory(self) -> None:
        self.carried = None

    # The carried memory is test-time state: checkpoints hold it so a resume continues it.
    def get_extra_state(self) -> dict:
        if self.carried is None:
            return {"weights": [], "momenta": []}
        return {"weights": list(self.carried[0]), "momenta": list(self.carried[1])}

    def set_extra_state(self, state: dict) -> None:
        weights, moms = state["weights"], state["momenta"]
        self.carried = (list(weights), list(moms)) if weights else None


def block_forward(block: Block, h: Tensor, prefix: Tensor, mask: Tensor) -> Tensor:
    """One pre-norm block whose attention reads ``[prefix; h]`` under ``mask``."""
    h = h + attend(block.attn, block.ln1(h), block.ln1(prefix), mask)
    return h + block.mlp(block.ln2(h))


def attend(attn: Attention, x: Tensor, prefix: Tensor, mask: Tensor) -> Tensor:
    """``layers.Attention`` of x over ``[prefix; x]`` with an explicit (L, M + L) mask."""
    ctx = torch.cat([prefix, x], dim=1)
    q = attn.heads(attn.q(x))
    k, v = (attn.heads(t) for t in attn.kv(ctx).chunk(2, dim=-1))
    q, k = rope(q, start=prefix.shape[1]), rope(k, start=0)
    drop = attn.dropout if attn.training else 0.0
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
    return attn.proj(y.transpose(1, 2).flatten(2))


def mac_mask(n_persist: int, length: int, device) -> Tensor:
    """Token i sees every persistent token, retrieved tokens <= i and segment tokens <= i."""
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return torch.cat([torch.ones(length, n_persist, dtype=torch.bool, device=device),
                      causal, causal], dim=1)


def window_mask(n_persist: int, length: int, window: int, device) -> Tensor:
    """Token i sees every persistent token and tokens i - window < j <= i."""
    i = torch.arange(length, device=device)
    band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
    return torch.cat([torch.ones(length, n_persist, dtype=torch.bool, device=device), band], 1)
