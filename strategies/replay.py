"""Experience replay: every training mini-batch is extended with a mini-batch from a memory.

As in Avalanche's ``ReplayPlugin``, from the second experience on each current mini-batch of
``batch_size`` examples is concatenated with ``batch_size_mem`` examples drawn from the memory
(shuffled passes over it, restarted when used up), so replayed examples go through the task
loss like current ones and no extra loss term is needed. The memory is filled after each
experience from that experience's training data, under the chosen policy (reservoir over the
stream, class-balanced or experience-balanced; see ``strategies.buffer``), and never holds more
than ``mem_size`` examples. It stores feature vectors with labels or token sequences with
next-token targets alike.

Under DDP each rank keeps examples of its own shard; the union over ranks is the memory one
process would keep (``strategies.buffer``). Like ``trainer.batch_size``, ``batch_size_mem`` is
global: each of W ranks adds ``batch_size_mem / W`` (rounded up) examples from its own part.

    retain run scenario.name=split-digits model.name=mlp strategy=replay \\
        strategy.replay.mem_size=200 strategy.replay.policy=class_balanced
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.api import Batch, Context, Strategy
from harness.registry import register_strategy
from strategies.buffer import POLICIES, Buffer, MemoryStream, check_policy, per_rank, stream_seed


@dataclass
class ReplayConfig:
    mem_size: int = field(default=200, metadata={"help": "examples kept in memory (all ranks)",
                                                 "min": 0})
    policy: str = field(default="reservoir", metadata={
        "help": "memory policy (reservoir: uniform over the stream)", "choices": POLICIES})
    batch_size_mem: int = field(default=0, metadata={
        "help": "memory examples added to each (global) mini-batch (0: the training batch size)",
        "min": 0})


@register_strategy("replay", config=ReplayConfig)
class Replay(Strategy):
    """Experience replay from a bounded memory."""

    def __init__(self, cfg: ReplayConfig):
        super().__init__(cfg)
        check_policy(cfg.policy)
        self.buffer = Buffer(cfg.mem_size, cfg.policy)
        self.filled = 0  # experiences offered to the memory

    def train_loader(self, ctx: Context, loader):
        if self.filled == 0:
            return loader
        self.buffer.dist = ctx.dist
        return ReplayLoader(loader, self.buffer, self.cfg.batch_size_mem or ctx.batch_size,
                            ctx.seed, ctx.task_id)

    def after_task(self, ctx: Context) -> None:
        self.buffer.dist = ctx.dist
        self.buffer.add(ctx.train_data(ctx.task_id), ctx.task_id, ctx.seed)
        self.filled += 1

    def memory_bytes(self) -> int:
        return self.buffer.nbytes()

    def state_dict(self) -> dict:
        return {"filled": self.filled, "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.filled = int(state["filled"])
        self.buffer.load_state_dict(state["buffer"])


class ReplayLoader:
    """The current loader's batches, each concatenated with a batch from the memory.

    Its length is the current loader's: the memory is oversampled, never the other way round.
    The memory stream is seeded per rank and continues across epochs of one experience.
    """

    def __init__(self, loader, buffer: Buffer, batch_size_mem: int, seed: int, task_id: int):
        self.loader, self.buffer = loader, buffer
        self.batch_size_mem, self.seed, self.task_id = batch_size_mem, seed, task_id
        self.stream: MemoryStream | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.stream is None:  # inside fit: the process group (if any) exists now
            dist = self.buffer.dist
            self.stream = MemoryStream(self.buffer, per_rank(self.batch_size_mem, dist),
                                       stream_seed(self.seed, self.task_id, dist.rank))
        for batch in self.loader:
            index = self.stream.next()
            yield batch if index is None else Batch.cat([batch, self.buffer.batch(index)])
