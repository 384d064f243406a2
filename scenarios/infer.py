"""What a stream of your own data is, read off its tensors: the DataSpec, each task's classes and
the continual-learning setting. Shared by the ``tensors`` and ``avalanche`` scenarios.

* inputs: floating point -> feature vectors (``input_dim`` = features per example, any shape);
  integers -> token ids, one row per sequence (``seq_len``, ``vocab_size`` = largest id + 1);
* targets: one label per example -> classification (``n_classes`` = largest label + 1); one
  target per token (same shape as the tokens, ``-100`` = no loss) -> language modelling.
"""

from __future__ import annotations

import math
from dataclasses import field

import torch

from harness.api import IGNORE, SETTINGS, DataSpec, TaskData
from harness.errors import UserError

SETTING_CHOICES = ("auto", *SETTINGS)


DATA_OPTIONS = {  # what inference would otherwise decide: default, help, range
    "setting": ("auto", "auto | class-il | domain-il | task-il (auto: domain-il for lm and for "
                        "tasks sharing one label set, else class-il)",
                {"choices": SETTING_CHOICES}),
    "n_classes": (0, "classification: number of classes (0 = largest label + 1)", {"min": 0}),
    "vocab_size": (0, "token inputs: vocabulary size (0 = largest id + 1)", {"min": 0}),
    "pad_id": (-1, "token inputs: padding id, left out when pooling (-1 = none)", {"min": -1}),
}


def data_option(name: str):
    """A config field of a scenario that infers its data (``DATA_OPTIONS``)."""
    default, text, rules = DATA_OPTIONS[name]
    return field(default=default, metadata={"help": text, **rules})


def infer_spec(data: dict[str, list[TaskData]], where: str, n_classes: int = 0,
               vocab_size: int = 0, pad_id: int = -1) -> DataSpec:
    """The DataSpec of every split's experiences (checked to agree), e.g. ``{"train": [...]}``.
    ``n_classes`` and ``vocab_size`` (0: inferred) must cover every label and token."""
    parts = [(f"{split} experience {i}", d) for split, ds in data.items()
             for i, d in enumerate(ds)]
    first_name, first = parts[0]
    floating = first.x.is_floating_point()
    shape = tuple(first.x.shape[1:])
    for name, d in parts:
        if d.x.is_floating_point() != floating or tuple(d.x.shape[1:]) != shape:
            raise UserError(f"{where}: the inputs of {name} ({_describe(d.x)}) differ from "
                            f"those of {first_name} ({_describe(first.x)})")
        if d.x.shape[0] and not floating and int(d.x.min()) < 0:
            raise UserError(f"{where}: {name} holds a negative token id {int(d.x.min())}")
        if floating and not torch.isfinite(d.x).all():
            raise UserError(f"{where}: the inputs of {name} hold NaN or infinite values")
    lm = first.y.dim() == 2
    for name, d in parts:
        if lm and (floating or tuple(d.y.shape) != tuple(d.x.shape)):
            raise UserError(f"{where}: {name} has one target per position ({_describe(d.y)}); "
                            "that is language modelling, which needs integer token inputs of "
                            "the same shape")
        if d.y.dim() != (2 if lm else 1):
            raise UserError(f"{where}: the targets of {name} ({_describe(d.y)}) are neither "
                            "one label per example nor one target per token")
    labels = torch.cat([d.y[d.y != IGNORE] if lm else d.y for _, d in parts])
    if labels.numel() and int(labels.min()) < 0:
        raise UserError(f"{where}: a target is negative ({int(labels.min())}); labels are "
                        f"class ids from 0{' (or -100 for no loss)' if lm else ''}")
    largest = int(labels.max()) if labels.numel() else -1
    if lm:
        tokens = max([largest] + [int(d.x.max()) for _, d in parts if d.x.numel()])
        return DataSpec("tokens", "lm", vocab_size=_at_least(vocab_size, tokens, "vocab_size",
                                                             where, "token id"),
                        seq_len=shape[0], pad_id=pad_id)
    n = _at_least(n_classes, largest, "n_classes", where, "label")
    if floating:
        return DataSpec("vectors", "classification", input_dim=math.prod(shape), n_classes=n)
    if len(shape) != 1:
        raise UserError(f"{where}: token inputs are one row of ids per example, not "
                        f"{_describe(first.x)}")
    tokens = max([0] + [int(d.x.max()) for _, d in parts if d.x.numel()])
    return DataSpec("tokens", "classification", seq_len=shape[0], n_classes=n, pad_id=pad_id,
                    vocab_size=_at_least(vocab_size, tokens, "vocab_size", where, "token id"))


def classes_of(train: list[TaskData], test: list[TaskData]) -> list[list[int]]:
    """Each classification task's classes: the labels in its training and test data."""
    return [sorted(set(a.y.tolist()) | set(b.y.tolist())) for a, b in zip(train, test)]


def setting_of(stated: str, spec: DataSpec, classes: list[list[int]] | None) -> str:
    """The stated setting, or for ``auto``: domain-IL for language modelling and for tasks
    that share one label set, class-IL otherwise."""
    if stated != "auto":
        if stated not in SETTINGS:
            raise UserError(f"scenario.setting must be auto, {', '.join(SETTINGS)}; "
                            f"got '{stated}'")
        if stated == "task-il" and spec.task != "classification":
            raise UserError("scenario.setting=task-il needs classification data")
        return stated
    if spec.task == "lm" or all(c == classes[0] for c in classes):
        return "domain-il"
    return "class-il"


def _at_least(stated: int, largest: int, option: str, where: str, what: str) -> int:
    if stated and largest >= stated:
        raise UserError(f"{where}: {what} {largest} is out of range for scenario.{option}="
                        f"{stated}")
    return stated or largest + 1


def _describe(t: torch.Tensor) -> str:
    return f"{'float' if t.is_floating_point() else 'integer'} {tuple(t.shape)}"
