"""The recurrent baseline: embedding -> multi-layer LSTM -> LM head tied to the embedding.

Its memory is the recurrent state: unbounded in principle, a fixed-size vector in practice,
which is exactly what the attention and external memories are compared against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import DataSpec, SequenceModel
from harness.registry import register_model


@dataclass
class LSTMConfig:
    name: str = "lstm"
    n_layer: int = field(default=2, metadata={"help": "stacked LSTM layers", "min": 1})
    d_model: int = field(default=128, metadata={"help": "embedding and hidden size", "min": 1})
    dropout: float = field(default=0.0, metadata={"help": "dropout between layers",
                                                  "min": 0, "below": 1})
    carry_state: bool = field(
        default=False,
        metadata={"help": "keep the recurrent state across forward calls; reset_memory() clears"},
    )


@register_model("lstm", config=LSTMConfig)
class LSTM(SequenceModel):
    """Recurrent LSTM language model with a tied output head."""

    def __init__(self, cfg: LSTMConfig, spec: DataSpec):
        super().__init__()
        self.cfg, self.hidden_size = cfg, cfg.d_model
        self.embed = nn.Embedding(spec.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = nn.LSTM(cfg.d_model, cfg.d_model, cfg.n_layer, batch_first=True,
                           dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.state: tuple[Tensor, Tensor] | None = None  # (h, c) when carry_state is on

    def forward(self, x: Tensor) -> Tensor:
        state = self.state if self.cfg.carry_state else None
        if state is not None and state[0].shape[1] != x.shape[0]:
            state = None  # another batch size: these cannot be the same documents
        out, state = self.rnn(self.drop(self.embed(x)), state)
        if self.cfg.carry_state:
            self.state = tuple(s.detach() for s in state)
        return self.ln_f(self.drop(out))

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.embed.weight)  # tied with the input embedding

    def reset_memory(self) -> None:
        self.state = None
