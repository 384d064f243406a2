"""What the continual system (``harness.system``) needs from a model, and what a model
learns about its data.

A model is a plain ``nn.Module``. It maps inputs to hidden states; the system puts the heads
on top (the model's own tied LM head for next-token prediction, a linear classifier over
pooled hidden states for classification). Models with a long-term memory keep it in buffers
or in ``memory_state_dict`` so that checkpoints carry it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class DataSpec:
    """Shape of a scenario's data, handed to every model constructor."""

    kind: str  # "tokens" (B, T) long or "vectors" (B, F) float
    task: str  # "lm" (next-token prediction) or "classification"
    vocab_size: int = 0  # tokens only
    seq_len: int = 0  # tokens only: length of one training sequence
    input_dim: int = 0  # vectors only
    n_classes: int = 0  # classification only
    pad_id: int = -1  # tokens only: padding id for classification inputs (-1 = none)


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
