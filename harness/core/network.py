"""A model plus its heads: what every strategy sees as "the network".

The model maps inputs to hidden states; ``Network`` turns them into task logits:
next-token logits for language modelling, or class logits from pooled hidden states for
classification. In the task-incremental setting each example only competes among its own
task's classes (a multi-head classifier expressed as a mask over one shared head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import IGNORE, KINDS, TASKS, Batch, DataSpec, Outputs, SequenceModel, misfit
from harness.errors import UserError
from harness.registry import MODELS


def build_model(cfg, spec: DataSpec, scenario: str) -> SequenceModel:
    """The model ``cfg.name`` for a scenario's data, refused in one line (naming the models
    that fit) when it does not read that kind of data or serve that task."""
    cls = MODELS.get(cfg.name).cls
    why = misfit(cls, spec)
    if why is not None:
        raise UserError(f"model {cfg.name} {why}, but scenario {scenario} gives "
                        f"{KINDS[spec.kind]} for {TASKS[spec.task]}; models that fit: "
                        f"{', '.join(fitting_models(spec)) or 'none registered'}")
    return cls(cfg, spec)


def fitting_models(spec: DataSpec) -> list[str]:
    """Registered models that take ``spec``'s data (a model whose module does not import,
    for want of an optional package, is left out)."""
    names = []
    for name in MODELS.names():
        try:
            cls = MODELS.get(name).cls
        except (ImportError, UserError):
            continue
        if misfit(cls, spec) is None:
            names.append(name)
    return names


class Network(nn.Module):
    def __init__(self, model: SequenceModel, spec: DataSpec,
                 task_classes: list[list[int]] | None = None):
        super().__init__()
        self.model, self.spec = model, spec
        self.classifier = None
        if spec.task == "classification":
            self.classifier = nn.Linear(model.hidden_size, spec.n_classes)
        mask = torch.ones(0, 0, dtype=torch.bool)
        if task_classes is not None:  # task-IL: row t marks the classes of task t
            mask = torch.zeros(len(task_classes), spec.n_classes, dtype=torch.bool)
            for t, classes in enumerate(task_classes):
                mask[t, classes] = True
        self.register_buffer("task_mask", mask, persistent=False)

    def forward(self, x: Tensor, t: Tensor | None = None) -> Outputs:
        hidden = self.model(x)
        if self.classifier is None:
            return Outputs(self.model.lm_logits(hidden), hidden)
        logits = self.classifier(self._pool(x, hidden))
        if self.task_mask.numel() and t is not None:
            logits = logits.masked_fill(~self.task_mask[t], torch.finfo(logits.dtype).min)
        return Outputs(logits, hidden)

    def unmasked_logits(self, x: Tensor, outputs: Outputs) -> Tensor:
        """Logits of every class, also those a task-incremental mask hides (for distillation)."""
        if self.classifier is None or not self.task_mask.numel():
            return outputs.logits
        return self.classifier(self._pool(x, outputs.hidden))

    def _pool(self, x: Tensor, hidden: Tensor) -> Tensor:
        if hidden.dim() == 2:  # vector models already return one vector per example
            return hidden
        if self.spec.pad_id < 0:
            return hidden.mean(dim=1)
        keep = (x != self.spec.pad_id).unsqueeze(-1).to(hidden.dtype)
        return (hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    def loss(self, batch: Batch, outputs: Outputs) -> Tensor:
        """Mean cross-entropy over the examples (or non-ignored tokens) of the batch."""
        logits, y = outputs.logits.float(), batch.y
        if logits.dim() > 2:  # (B, T, V) tokens; classification logits are already (B, C)
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        return F.cross_entropy(logits, y, ignore_index=IGNORE)
