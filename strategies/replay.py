"""Experience replay: every training mini-batch is extended with a mini-batch from a memory.

As in Avalanche's ``ReplayPlugin``, from the second experience on each current mini-batch of
``batch_size`` examples is concatenated with ``batch_size_mem`` examples drawn from the memory
(shuffled passes over it, restarted when used up), so replayed examples go through the task
loss like current ones and no extra loss term is needed. The memory is filled after each
experience from that experience's training data, under the chosen policy (reservoir over the
stream, class-balanced or experience-balanced; see ``strategies.buffer``), and never holds more
than ``mem_size`` examples. It stores feature vectors with labels or token sequences with
next-token targets alike.

Under DDP every rank keeps the memory one process keeps (``strategies.buffer``). Like
``trainer.batch_size``, ``batch_size_mem`` is global: every rank draws the same memory batch
and adds its rows ``rank::W`` to its part of the current batch, so the ranks' batches together
are the single-process batch (the system weighs each rank's loss by its share of it).

    retain run scenario.name=split-digits model.name=mlp strategy=replay \\
        strategy.replay.mem_size=200 strategy.replay.policy=class_balanced
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.api import Batch, Context, Strategy
from harness.registry import register_strategy
from strategies.buffer import POLICIES, Buffer, MemoryStream, check_policy, rank_part, stream_seed


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
        return ReplayLoader(loader, self.buffer, self.cfg.batch_size_mem or ctx.batch_size,
                            ctx.seed, ctx.task_id, ctx.dist)

    def after_task(self, ctx: Context) -> None:
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
    The memory stream is seeded alike on every rank (each takes its rows of the global memory
    batch) and continues across epochs of one experience.
    """

    def __init__(self, loader, buffer: Buffer, batch_size_mem: int, seed: int, task_id: int,
                 dist):
        self.loader, self.buffer, self.dist = loader, buffer, dist
        self.stream = MemoryStream(buffer, batch_size_mem, stream_seed(seed, task_id))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            index = self.stream.next()
            if index is not None:  # rank known here: inside fit the process group exists
                batch = Batch.cat([batch, self.buffer.batch(rank_part(index, self.dist))])
            yield batch
