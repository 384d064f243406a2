"""Joint (cumulative) training: at experience i, train on the union of experiences 0..i.

Not a continual learner (it keeps all data); it is the upper bound strategies are measured
against. Its state is only which experiences it has seen, so a checkpoint stays small::

    retain run strategy=joint
"""

from dataclasses import dataclass

from harness.api import Context, Strategy, TaskData
from harness.registry import register_strategy


@dataclass
class JointConfig:
    pass


@register_strategy("joint", config=JointConfig)
@register_strategy("cumulative", config=JointConfig)
class Joint(Strategy):
    """Train on the union of all tasks so far (upper bound)."""

    def __init__(self, cfg: JointConfig):
        super().__init__(cfg)
        self.seen: list[int] = []
        self._bytes = 0

    def before_task(self, ctx: Context) -> None:
        if ctx.task_id not in self.seen:
            self.seen.append(ctx.task_id)

    def train_loader(self, ctx: Context, loader):
        if len(self.seen) == 1:
            return loader
        return ctx.make_loader(TaskData.cat([ctx.train_data(i) for i in self.seen]))

    def memory_bytes(self) -> int:
        # Joint keeps every example it has seen; cost plots must show that, not zero.
        return self._bytes

    def after_task(self, ctx: Context) -> None:
        self._bytes = sum(_nbytes(ctx.train_data(i)) for i in self.seen)

    def state_dict(self) -> dict:
        return {"seen": list(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.seen = list(state["seen"])


def _nbytes(data: TaskData) -> int:
    return sum(t.element_size() * t.nelement() for t in (data.x, data.y, data.t))
