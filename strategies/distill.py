"""Learning without forgetting (LwF): distil a frozen snapshot of the network into itself.

Before each experience from the second on, the network is copied into a teacher (eval mode,
no gradients). On every current mini-batch the student is pulled towards the teacher's
softened predictions::

    loss/distill = alpha * KL(softmax(teacher / T) || softmax(student / T))

averaged over examples, or for language models over the non-ignored next-token positions.
What is distilled:

* language modelling: the whole next-token distribution at every non-ignored position;
* class- and domain-incremental classification: one softmax over the classes seen in earlier
  experiences, the "previously active units" of Avalanche's ``LearningWithoutForgetting``
  (whose class-incremental benchmarks give every example task label 0, so its single-head
  branch distils exactly these classes);
* task-incremental: each earlier task's head (its classes) separately, the KLs summed, as
  Avalanche does for multi-head models; the student's logits of those heads are read unmasked.

As in Avalanche there is no T^2 factor (alpha absorbs it). For a classifier trained for
several epochs, the teacher's outputs on the task's own examples are computed once per task
and cached (``_cached_targets`` says when).
The teacher is part of the checkpoint, so a run resumed from inside an experience keeps that
experience's teacher instead of snapshotting the half-trained network. ``full_logits`` and
``at_targets`` are reused by DER.

    retain run scenario.name=split-digits model.name=mlp strategy=distill \\
        strategy.distill.alpha=1 strategy.distill.temperature=2
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import IGNORE, Context, Outputs, Strategy, carries_memory
from harness.core.network import Network
from harness.registry import register_strategy


@dataclass
class DistillConfig:
    alpha: float = field(default=1.0, metadata={"help": "weight of the distillation term",
                                                "min": 0})
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature T",
                                                      "above": 0})


def full_logits(net: Network, x: Tensor, outputs: Outputs) -> Tensor:
    """The logits of every class, also those a task-incremental head masked out."""
    return net.unmasked_logits(x, outputs)


def at_targets(logits: Tensor, y: Tensor) -> Tensor:
    """Rows that carry a loss: (N, V) non-ignored positions of an LM, else every example."""
    return logits[y != IGNORE] if logits.dim() == 3 else logits


def soft_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``KL(softmax(teacher/T) || softmax(student/T))``, summed over classes, mean over rows,
    in fp32."""
    return kl_to(student, log_targets(teacher, None, temperature), None, temperature)


def log_targets(teacher: Tensor, cols: Tensor | slice | None, temperature: float) -> Tensor:
    """The teacher's side of the KL: log softmax(teacher/T) over the columns, fp32."""
    picked = teacher if cols is None else teacher[:, cols]
    return F.log_softmax(picked.float() / temperature, dim=-1)


def kl_to(student: Tensor, log_q: Tensor, cols: Tensor | slice | None,
          temperature: float) -> Tensor:
    """``KL(q || softmax(student[:, cols] / T))`` for log-targets ``log_q``, summed over
    the columns, mean over rows, in fp32. Plain autograd: a hand-written backward (a Python
    ``autograd.Function``) was slower, its call from the autograd engine costing more than the
    kernels it saved."""
    if student.shape[0] == 0:
        return student.float().sum() * 0.0
    s = student if cols is None else student[:, cols]
    log_p = F.log_softmax(s.float() / temperature, dim=-1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)


CACHE_BYTES = 256 * 2**20  # the most LwF keeps of a task's teacher outputs (per process)


def columns(index: Tensor, n_classes: int) -> Tensor | slice | None:
    """``index`` as a slice when it is a run of consecutive classes (None for all of them):
    reading a slice costs a view, gathering an index a copy."""
    values = index.tolist()
    if not values or values != list(range(values[0], values[0] + len(values))):
        return index
    return None if len(values) == n_classes else slice(values[0], values[0] + len(values))


def snapshot(net: Network) -> Network:
    """A frozen copy: eval mode, no gradients."""
    teacher = copy.deepcopy(net).eval()
    teacher.requires_grad_(False)
    return teacher


@register_strategy("distill", config=DistillConfig)
class Distill(Strategy):
    """Learning without forgetting: KL to a frozen snapshot taken before each task."""

    def __init__(self, cfg: DistillConfig):
        super().__init__(cfg)
        self.teacher: Network | None = None
        self.teacher_task = -1  # the experience after which the teacher was taken
        self.seen: list[int] = []  # classes of the experiences the teacher has learnt
        self._loaded: dict | None = None  # teacher weights from a checkpoint
        # the classes the KL runs over (before_task): per head, an index, slice or None (all)
        self._heads: list[Tensor | slice | None] = []
        self._cache: list[Tensor] | None = None  # see _cached_targets; [] when not used

    def before_task(self, ctx: Context) -> None:
        if ctx.task_id == 0:
            return
        self.teacher = snapshot(ctx.system.net)
        if self._loaded is not None and self.teacher_task == ctx.task_id - 1:
            self.teacher.load_state_dict(self._loaded)
        self.teacher_task, self._loaded = ctx.task_id - 1, None
        # The classes the teacher answers for, fixed during a task: one index per head
        # (task-IL, one per earlier task) or the classes seen so far (class-IL).
        net = ctx.system.net
        mask = net.task_mask
        heads = ([m.nonzero().squeeze(1).cpu() for m in mask[: ctx.task_id]]
                 if mask.numel() else [torch.tensor(self.seen, dtype=torch.long)])
        self._heads = [columns(h, net.spec.n_classes) for h in heads]
        self._cache = None  # the teacher's log-targets for this task's examples, when used

    def loss_terms(self, ctx: Context, batch, outputs: Outputs) -> dict[str, Tensor]:
        if self.teacher is None:
            return {}
        net = ctx.system.net
        student = full_logits(net, batch.x, outputs)
        T, alpha = self.cfg.temperature, self.cfg.alpha
        if net.classifier is None:  # next-token distributions
            teacher = self._teach(batch.x)
            kl = soft_kl(at_targets(student, batch.y), at_targets(teacher, batch.y), T)
        else:
            if any(isinstance(c, Tensor) and c.device != student.device for c in self._heads):
                self._heads = [c.to(student.device) if isinstance(c, Tensor) else c
                               for c in self._heads]  # once per task
            targets = self._cached_targets(ctx, batch) or self._targets_of(batch.x)
            kls = [kl_to(student, log_q, c, T) for c, log_q in zip(self._heads, targets)]
            kl = kls[0] if len(kls) == 1 else torch.stack(kls).sum()
        return {"distill": kl * alpha if alpha != 1 else kl}  # (alpha 1: no extra kernel)

    def _teach(self, x: Tensor) -> Tensor:
        if next(self.teacher.parameters()).device != x.device:  # .to() walks every module:
            self.teacher.to(x.device)  # only when it is elsewhere (after a restore)
        with torch.no_grad():
            return self.teacher(x, None).logits

    def _targets_of(self, x: Tensor) -> list[Tensor]:
        """Each head's log-targets for inputs ``x``: the teacher's forward pass."""
        logits = self._teach(x)
        return [log_targets(logits, c, self.cfg.temperature) for c in self._heads]

    def _cached_targets(self, ctx: Context, batch) -> list[Tensor] | None:
        """Each head's log-targets for the batch, read from the task's cache.

        The teacher and the task's examples are fixed for a whole task, so its outputs are
        computed once, in evaluation-size batches, instead of in every epoch: for a classifier
        that is a forward pass and a log-softmax less per step. Only batches of the task's own
        data know their examples (``Batch.index``; with replay mixed in, the teacher runs).
        The cache is used only where it saves work: when this process would otherwise run the
        teacher on each example more than once (epochs > processes: under DDP each rank
        computes the whole task), for a teacher without memory (its outputs would depend on
        the order it reads the examples in), and up to CACHE_BYTES. It is dropped after the
        task.
        """
        if batch.index is None:
            return None
        if self._cache is None:
            data = ctx.train_data(ctx.task_id)
            n_classes = ctx.system.net.spec.n_classes
            width = sum(n_classes if c is None else c.stop - c.start if isinstance(c, slice)
                        else len(c) for c in self._heads)
            if (ctx.max_epochs <= ctx.dist.world_size or carries_memory(self.teacher.model)
                    or len(data) * width * 4 > CACHE_BYTES):
                self._cache = []
            else:
                step = ctx.eval_batch_size  # what evaluation reads at once, no gradients
                with ctx.flops.once():  # built on the task's first step, read by every step
                    parts = [self._targets_of(data.x[i:i + step].to(batch.x.device))
                             for i in range(0, len(data), step)]
                self._cache = [torch.cat(head) for head in zip(*parts)]
        if not self._cache:
            return None
        return [c[batch.index] for c in self._cache]

    def after_task(self, ctx: Context) -> None:
        self._cache = None  # a speed-up for this task's training only: not kept state
        if ctx.system.net.classifier is not None:
            labels = ctx.train_data(ctx.task_id).y.unique().tolist()
            self.seen = sorted(set(self.seen).union(int(c) for c in labels))

    def memory_bytes(self) -> int:
        if self.teacher is None:
            return 0
        return sum(t.numel() * t.element_size() for t in self.teacher.state_dict().values())

    def state_dict(self) -> dict:
        weights = None if self.teacher is None else dict(self.teacher.state_dict())
        return {"teacher": weights, "teacher_task": self.teacher_task, "seen": list(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.teacher, self._loaded, self._cache = None, state["teacher"], None
        self.teacher_task, self.seen = int(state["teacher_task"]), list(state["seen"])
