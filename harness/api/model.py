"""The model protocol: what the continual system (``harness.core.system``) needs from a model.

A model is a plain ``nn.Module``. It maps inputs to hidden states; the network
(``harness.core.network``) puts the heads on top (the model's own tied LM head for next-token
prediction, a linear classifier over pooled hidden states for classification). Models with a
long-term memory keep it in buffers or in ``memory_state_dict`` so that checkpoints carry it.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn


class Outputs(NamedTuple):
    """What the network returns for a batch: what strategies' ``loss_terms`` receive."""

    logits: Tensor  # (B, T, V) next-token or (B, C) class logits
    hidden: Tensor  # the model's hidden states


class SequenceModel(nn.Module):
    """Base class documenting the model protocol; subclasses set ``hidden_size``.

    ``forward(x)`` returns hidden states: (B, T, D) for token inputs, (B, D) for vectors.
    ``lm_logits(h)`` maps hidden states to next-token logits (token models only).
    ``reset_memory()`` clears any memory carried between calls (a no-op by default).
    """

    hidden_size: int

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - protocol
        raise NotImplementedError

    def lm_logits(self, hidden: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} has no language-model head")

    def reset_memory(self) -> None:
        pass


def carries_memory(model: nn.Module) -> bool:
    """Whether a model's output may depend on its earlier calls (with its memory switched on).
    The protocol says a model that carries memory between calls clears it in ``reset_memory``,
    so such a model overrides it."""
    return getattr(type(model), "reset_memory", None) is not SequenceModel.reset_memory
