"""Data as every component sees it: the data spec, task data, batches and the batch loader.

An Avalanche experience's dataset is materialised once into three tensors (inputs, targets,
task labels). Batches are then sliced from those tensors: one index operation per block of
batches (each batch a view into it) instead of one ``__getitem__`` + collate per example,
which is where generic data loaders spend most of their time on small models.

Sharding across DDP ranks is done here (not by a DistributedSampler) so that evaluation counts
every example exactly once, with no padding duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from harness.errors import UserError

IGNORE = -100  # target id that carries no loss (padding, prompt positions)


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


class Batch(NamedTuple):
    x: Tensor  # tokens (B, T) long, or features (B, F) float
    y: Tensor  # next-token targets (B, T) with -100 = ignore, or class labels (B,)
    t: Tensor  # task label of each example (B,)
    # Where each example sits in the experience's own training data, when the batch was read
    # from it alone (the task loop's loader sets it): a strategy may keep values per example,
    # e.g. LwF its teacher's outputs. None for any other batch (replayed examples, say).
    index: Tensor | None = None

    def to(self, device) -> Batch:
        return Batch(*(None if v is None else v.to(device, non_blocking=True) for v in self))

    def __len__(self) -> int:  # number of examples, not fields
        return self.x.shape[0]

    def rows(self, start: int, stop: int) -> Batch:
        return Batch(*(None if v is None else v[start:stop] for v in self))

    @staticmethod
    def cat(batches: list[Batch]) -> Batch:
        """One batch of all examples; it has an index only if every part has one."""
        return Batch(*(None if any(p is None for p in parts) else torch.cat(parts)
                       for parts in zip(*batches)))


@dataclass
class TaskData:
    """All examples of one experience's split, as aligned tensors."""

    x: Tensor
    y: Tensor
    t: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, index: Tensor) -> Batch:
        return Batch(self.x[index], self.y[index], self.t[index])

    @staticmethod
    def cat(parts: list[TaskData]) -> TaskData:
        return TaskData(*(torch.cat(p) for p in zip(*((d.x, d.y, d.t) for d in parts))))

    @staticmethod
    def from_dataset(dataset, task: int | None = None) -> TaskData:
        """Materialise any map-style dataset of ``(x, y, t)`` items, one item at a time;
        ``(x, y)`` items take the task label ``task``.

        Scenarios built by retain keep their tensors and skip this
        (``harness.api.scenario.materialise`` checks that they still match what the experience
        holds).
        """
        items = [dataset[i] for i in range(len(dataset))]
        if not items:
            return TaskData(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0))
        sizes = {len(it) if isinstance(it, (tuple, list)) else None for it in items}
        if not sizes <= {2, 3} or (2 in sizes and task is None):
            wanted = "(x, y, t)" if task is None else "(x, y) or (x, y, t)"
            raise UserError(f"dataset items must be {wanted}, not {_shape_of(items[0])}")
        x = [it[0] for it in items]
        y = [it[1] for it in items]
        t = [it[2] if len(it) == 3 else task for it in items]
        try:
            x = torch.stack([torch.as_tensor(v) for v in x])
            y = torch.as_tensor(_stack(y))
        except (TypeError, RuntimeError, ValueError) as err:
            raise UserError(f"dataset items' x and y must be numbers or tensors of one shape "
                            f"(x: {type(x[0]).__name__}): {str(err).splitlines()[0]}") from None
        if y.is_floating_point():
            raise UserError(f"dataset targets must be integer labels or token ids, not {y.dtype}")
        return TaskData(x, y.long(), torch.as_tensor(t, dtype=torch.long))


def _stack(values):
    if isinstance(values[0], Tensor):
        return torch.stack(values)
    return torch.as_tensor(values)


def _shape_of(item) -> str:
    if isinstance(item, (tuple, list)):
        return f"{len(item)}-tuples ({', '.join(type(v).__name__ for v in item)})"
    return f"{type(item).__name__} items"


GATHER_BYTES = 4 << 20  # rows a BatchLoader copies out of its data at once


def _row_bytes(data: TaskData) -> int:
    """Bytes of one example across x, y and t (at least 1)."""
    if len(data) == 0:
        return 1
    return max(1, sum(v[0].numel() * v.element_size() for v in (data.x, data.y, data.t)))


class BatchLoader:
    """Iterates a TaskData in mini-batches; reshuffled each epoch from (seed, epoch).

    With ``world_size > 1`` each rank reads part of the data, in one of two ways:

    * ``split_batches`` (training under DDP): ``batch_size`` is the global batch; the epoch is
      cut into the single-process batches and rank r takes rows ``r::world_size`` of each, so
      the ranks' k-th batches together are exactly one process's k-th batch. A last batch with
      fewer examples than ranks is left out (a rank would have none to step on).
    * otherwise each rank takes a disjoint, contiguous-after-shuffle shard. Training shards
      are trimmed to equal length (every rank must step the same number of times); evaluation
      shards are not trimmed, so every example is seen exactly once.

    ``with_index``: batches carry their examples' positions in ``data`` (``Batch.index``).
    """

    def __init__(self, data: TaskData, batch_size: int, *, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 equal_shards: bool | None = None, with_index: bool = False,
                 split_batches: bool = False):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.seed, self.drop_last = seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.equal_shards = shuffle if equal_shards is None else equal_shards
        self.with_index, self.split_batches = with_index, split_batches
        self.epoch = 0

    def _order(self) -> Tensor:
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            return torch.randperm(n, generator=g)
        return torch.arange(n)

    def _split(self) -> bool:
        return self.split_batches and self.world_size > 1

    def _n_split(self, n: int) -> tuple[int, int]:
        """Split mode: (full global batches, examples of the last one kept, 0 if none)."""
        full, rest = divmod(n, self.batch_size)
        return full, 0 if self.drop_last or rest < self.world_size else rest

    def _local(self) -> tuple[Tensor, int]:
        """This rank's examples in reading order, and its batch size."""
        order = self._order()
        if not self._split():
            if self.world_size > 1:
                if self.equal_shards:
                    order = order[: len(order) - len(order) % self.world_size]
                order = order[self.rank :: self.world_size]
            stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
            return order[:stop], self.batch_size
        full, rest = self._n_split(len(order))
        size, world = self.batch_size, self.world_size
        mine = order[: full * size].view(full, size)[:, self.rank :: world].reshape(-1)
        last = order[full * size : full * size + rest][self.rank :: world]
        return torch.cat([mine, last]), len(range(self.rank, size, world))

    def __len__(self) -> int:
        n = len(self.data)
        if self._split():
            full, rest = self._n_split(n)
            return full + (rest > 0)
        if self.world_size > 1:
            n = len(self._local()[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order, batch_size = self._local()
        self.epoch += 1
        # Rows are gathered a block of batches at a time and each batch is a view into its
        # block: three index operations per block instead of per batch, which matter on small
        # models' steps. A block holds at most GATHER_BYTES (or one batch). In order and
        # unsharded, a block is a slice of the data: views, no copy (evaluation's case).
        in_place = not self.shuffle and self.world_size == 1
        span = batch_size * max(1, GATHER_BYTES // (batch_size * _row_bytes(self.data)))
        for first in range(0, len(order), span):
            last = min(first + span, len(order))
            index = order[first:last]
            data = self.data
            block = (Batch(data.x[first:last], data.y[first:last], data.t[first:last])
                     if in_place else data.batch(index))
            if self.with_index:  # (Batch._replace trips over Batch.__len__)
                block = Batch(block.x, block.y, block.t, index)
            for start in range(0, len(block), batch_size):
                yield block.rows(start, start + batch_size)
