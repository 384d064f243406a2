"""A bounded example memory with a selectable policy, shared by replay, DER and A-GEM.

Every stored example carries a random key, drawn uniformly when it arrived. A policy splits
the examples into groups and keeps, in each group, those with the largest keys:

* ``reservoir``: one group, so the memory is a uniform sample of the whole stream so far
  (Avalanche's ``ReservoirSamplingBuffer``; the same distribution as Vitter's reservoir).
* ``class_balanced``: one group per class seen, ``mem_size`` split equally among them
  (Avalanche's ``ClassBalancedBuffer`` with ``adaptive_size``); needs class labels.
* ``task_balanced``: one group per experience (Avalanche's ``ExperienceBalancedBuffer``,
  the default memory of its ``ReplayPlugin``).

A group's capacity is ``mem_size // n_groups``, the remainder going to the lowest group ids,
or a fixed ``per_group`` (A-GEM's patterns per experience). Since keys never change, shrinking
a group keeps the examples it would have kept had the capacity always been that small.

Under DDP every rank keeps the whole memory: each offers the whole experience and draws the
same keys (per experience, from the run seed), so every rank holds exactly the memory, in the
same order, that a single process keeps, with no exchange. A memory batch is then drawn
alike on every rank (``stream_seed`` has no rank in it) and split like the current batch:
rank r takes rows ``r::world_size`` (``rank_part``) and weighs its term by its share
(``share``), so the ranks' gradients average to the single-process one. The memory is bounded
by ``mem_size`` (it is small next to the data and the model) and is stored once in a
checkpoint, whatever the number of processes.

Inputs may be feature vectors with class labels or token sequences with next-token targets;
extra per-example fields (DER's logits) are stored beside them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from harness.api import IGNORE, Batch, Collectives, TaskData
from harness.errors import UserError

POLICIES = ("reservoir", "class_balanced", "task_balanced")
CORE = ("x", "y", "t", "task", "key")  # task: experience index; key: the selection key


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise UserError(f"unknown memory policy '{policy}'; choose one of {', '.join(POLICIES)}")
    return policy


class Buffer:
    """Examples (and extra fields) of past experiences, bounded by ``mem_size`` in total."""

    def __init__(self, mem_size: int, policy: str = "reservoir", per_group: int | None = None):
        if mem_size < 0 or (per_group is not None and per_group < 0):
            raise UserError("memory size must be >= 0")
        self.mem_size, self.policy, self.per_group = mem_size, check_policy(policy), per_group
        self.fields: dict[str, Tensor] = {}
        self.seen: list[int] = []  # group ids seen
        self._grouped: tuple | None = None  # see _members

    def __len__(self) -> int:
        return len(self.fields["key"]) if self.fields else 0

    # -- insertion ----------------------------------------------------------------------

    def add(self, data: TaskData, task: int, seed: int,
            extra: Callable[[Batch], dict[str, Tensor]] | None = None) -> None:
        """Offer the examples of ``data`` (experience ``task``); keep the policy's choice.

        ``extra(batch)`` computes extra fields, only for the new examples actually kept.
        """
        # One key per example of the experience, from the run seed: the same on every rank.
        gen = torch.Generator().manual_seed(key_seed(seed, task))
        keys = torch.rand(len(data), dtype=torch.float64, generator=gen)
        new = {"x": data.x, "y": data.y, "t": data.t,
               "task": torch.full((len(data),), task, dtype=torch.long), "key": keys}
        n_old = len(self.fields["key"]) if self.fields else 0
        cand = {k: torch.cat([self.fields[k], new[k]]) if n_old else new[k] for k in CORE}
        groups = self.groups(cand["y"], cand["task"])
        self.seen = sorted(set(self.seen).union(groups.tolist()))
        keep = self._select(groups, cand["key"], self.capacities(self.seen))
        kept_new = keep[n_old:].nonzero().squeeze(1)
        fields = {k: v[keep] for k, v in cand.items()}
        fields.update({k: v[keep[:n_old]] for k, v in self.fields.items() if k not in CORE})
        if extra is not None and len(kept_new):
            rows = extra(Batch(new["x"][kept_new], new["y"][kept_new], new["t"][kept_new]))
            for name, values in rows.items():
                old = fields.get(name)
                fields[name] = values if old is None else torch.cat([old, values.to(old.dtype)])
        self.fields = fields

    def groups(self, y: Tensor, task: Tensor) -> Tensor:
        if self.policy == "reservoir":
            return torch.zeros_like(task)
        if self.policy == "task_balanced":
            return task
        if y.dim() != 1:
            raise UserError("memory policy class_balanced needs class labels; use reservoir "
                            "or task_balanced for token sequences")
        return y.long()

    def capacities(self, groups: list[int]) -> dict[int, int]:
        if self.per_group is not None:
            return {g: self.per_group for g in groups}
        base, rem = divmod(self.mem_size, max(len(groups), 1))
        return {g: base + (i < rem) for i, g in enumerate(sorted(groups))}

    def _select(self, groups: Tensor, keys: Tensor, caps: dict[int, int]) -> Tensor:
        """Mask of the candidates whose key is among their group's ``cap`` largest."""
        keep = torch.zeros_like(keys, dtype=torch.bool)
        for g, cap in caps.items():
            members = keys[groups == g]
            if cap == 0 or len(members) == 0:
                continue
            threshold = members.topk(min(cap, len(members))).values[-1]
            keep |= (groups == g) & (keys >= threshold)
        return keep

    # -- reading ------------------------------------------------------------------------

    def batch(self, index: Tensor) -> Batch:
        return Batch(self.fields["x"][index], self.fields["y"][index], self.fields["t"][index])

    def sample_balanced(self, n: int, gen: torch.Generator) -> Tensor:
        """Indices of ``n // n_groups`` random examples from each group (A-GEM's reference),
        group by group; all of a group's examples if it holds fewer."""
        table, padding = self._members()
        if table.numel() == 0:
            return torch.empty(0, dtype=torch.long)
        per = min(max(n // len(table), 1), table.shape[1])
        # The ``per`` smallest of uniform keys are a uniform sample without replacement: one
        # draw for every group at once (a randperm per group cost twice as much at 4 groups).
        keys = torch.rand(table.shape, generator=gen)
        if padding is not None:
            keys += padding  # padding slots (2.0) lose to every real key (< 1)
        pick = keys.topk(per, dim=1, largest=False, sorted=False).indices
        chosen = table.gather(1, pick)
        return chosen.flatten() if padding is None else chosen[padding.gather(1, pick) == 0]

    def _members(self) -> tuple[Tensor, Tensor | None]:
        """Each group's example indices, one row per group in group order, and (when groups
        differ in size) 2.0 where a row is padded, else 0. A-GEM samples every step and the
        memory only changes between experiences: recomputed only when ``fields`` changed."""
        if self._grouped is None or self._grouped[0] is not self.fields.get("key"):
            groups = self.groups(self.fields["y"], self.fields["task"]) if self.fields \
                else torch.empty(0, dtype=torch.long)
            rows = [(groups == g).nonzero().squeeze(1) for g in groups.unique()]
            width = max((len(r) for r in rows), default=0)
            table = torch.zeros(len(rows), width, dtype=torch.long)
            padding = torch.zeros(len(rows), width)
            for i, r in enumerate(rows):
                table[i, :len(r)] = r
                padding[i, len(r):] = 2.0
            self._grouped = (self.fields.get("key"),
                             (table, padding if padding.any() else None))
        return self._grouped[1]

    def nbytes(self) -> int:
        """Bytes the memory holds (on each rank): examples, labels, extras and selection keys."""
        return sum(v.numel() * v.element_size() for v in self.fields.values())

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"policy": self.policy, "mem_size": self.mem_size, "seen": list(self.seen),
                "fields": {k: v.cpu() for k, v in self.fields.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.seen = [int(g) for g in state["seen"]]
        if "fields" in state:
            self.fields = dict(state["fields"])
        else:  # a checkpoint that kept one part of the memory per rank: their union
            parts = [p for p in state["ranks"] if p]
            self.fields = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts \
                else {}


class MemoryStream:
    """Endless mini-batches from a buffer: shuffled passes, like Avalanche's cycled loader."""

    def __init__(self, buffer: Buffer, batch_size: int, seed: int, drop_last: bool = False):
        self.buffer, self.batch_size, self.drop_last = buffer, batch_size, drop_last
        self.gen = torch.Generator().manual_seed(seed % 2**63)
        self._order: list[Tensor] = []

    def next(self) -> Tensor | None:
        """Indices of the next batch, or None if the memory is (too) small."""
        n = len(self.buffer)
        if n == 0 or (self.drop_last and n < self.batch_size):
            return None
        if not self._order:
            perm = torch.randperm(n, generator=self.gen)
            chunks = list(perm.split(self.batch_size))
            if self.drop_last and len(chunks[-1]) < self.batch_size:
                chunks.pop()
            self._order = chunks
        return self._order.pop(0)

    def state_dict(self) -> dict:
        """Where the stream is (for a checkpoint taken inside a task)."""
        return {"gen": self.gen.get_state(), "order": list(self._order)}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self._order = list(state["order"])


def key_seed(run_seed: int, task_id: int) -> int:
    """Seed of the selection keys an experience's examples draw when offered to a memory
    (the same on every rank)."""
    return (run_seed * 1_000_003 + task_id * 10_007) % 2**63


def stream_seed(run_seed: int, task_id: int) -> int:
    """Seed of the memory sampling during one task: distinct per task, the same on every rank
    (every rank draws the global memory batch and takes its part)."""
    return (run_seed * 7_919 + task_id) * 1_009


def rank_part(index: Tensor, dist: Collectives) -> Tensor:
    """This rank's rows of a global memory batch (rows ``rank::world_size``), as the task
    loop's loader splits the current batch."""
    return index if dist.world_size == 1 else index[dist.rank :: dist.world_size]


def count(y: Tensor) -> int:
    """Targets that carry a loss: examples, or non-ignored tokens."""
    return int((y != IGNORE).sum()) if y.dim() > 1 else len(y)


def share(part: Tensor, whole: Tensor, dist: Collectives) -> float:
    """``W * count(part) / count(whole)`` for the targets ``part`` (this rank's rows) of a
    global batch with targets ``whole``: a mean over the part, weighed by this, averages over
    the ranks to the mean over the whole batch. 1 on one process."""
    if dist.world_size == 1:
        return 1.0
    return dist.world_size * count(part) / max(count(whole), 1)
