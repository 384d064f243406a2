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
    ``inputs`` and ``tasks`` say which data the model reads: the framework refuses a scenario
    whose ``DataSpec`` is another kind before the model is built (``fits``), so a model need
    not check its spec. Language modelling also needs ``lm_logits``.
    """

    hidden_size: int
    inputs: tuple[str, ...] = ("tokens",)  # "tokens" (B, T) long, "vectors" (B, F) float
    tasks: tuple[str, ...] = ("lm", "classification")
    # Weights learned before the stream: the untrained row is then a meaningful reference
    # for forward transfer (harness.core.metrics.fwt_note)
    pretrained: bool = False

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


KINDS = {"tokens": "token sequences", "vectors": "feature vectors"}
TASKS = {"lm": "language modelling", "classification": "classification"}


def misfit(model_cls: type, spec) -> str | None:
    """Why a model class cannot take a scenario's data (``DataSpec``), or None if it can."""
    inputs = getattr(model_cls, "inputs", SequenceModel.inputs)
    tasks = getattr(model_cls, "tasks", SequenceModel.tasks)
    if spec.kind not in inputs:
        return f"reads {' or '.join(KINDS.get(k, k) for k in inputs)}"
    if spec.task not in tasks:
        return f"does {' or '.join(TASKS.get(t, t) for t in tasks)} only"
    if spec.task == "lm" and getattr(model_cls, "lm_logits", None) in (
            None, SequenceModel.lm_logits):
        return "has no language-model head (lm_logits)"
    return None
