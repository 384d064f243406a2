"""LoRA per task: every task trains a fresh LoRA adapter on the frozen base model.

``strategy.lora_per_task.after_task`` says what becomes of a task's adapter once it is trained:

* ``keep``: it is kept, and scoring a batch uses the adapter of the batch's task label
  (task-aware inference, as in task-incremental learning; a task not trained yet is scored by
  the base model, a general set that is no task by the latest adapter). Earlier tasks cannot be
  forgotten: their adapters never change again.
* ``merge``: it is merged into the base weights (peft's delta), and the next task's adapter
  starts from that model, as a sequence of LoRA fine-tunings does.

The network keeps one adapter slot (``strategies.lora_slot``): the task's adapter trains in it
and the kept ones (or the merged base weights) are the strategy's state, in the checkpoint.

    retain run model.name=hf model.source=/path/to/model model.adapter=lora \\
        strategy=lora_per_task strategy.lora_per_task.after_task=keep
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from harness.api import Context, Strategy
from harness.errors import UserError
from harness.registry import register_strategy
from strategies import lora_slot


@dataclass
class LoraPerTaskConfig:
    after_task: str = field(default="keep", metadata={
        "help": "keep: each task's adapter is kept and chosen by the task label when scoring; "
                "merge: merged into the base weights after its task",
        "choices": ("keep", "merge")})


@register_strategy("lora_per_task", config=LoraPerTaskConfig)
class LoraPerTask(Strategy):
    def __init__(self, cfg: LoraPerTaskConfig):
        super().__init__(cfg)
        self.adapters: list[dict] = []  # keep: each finished task's adapter tensors
        self.base: dict = {}  # merge: the base weights as merged so far
        self.started = -1  # the task whose adapter the network's slot holds
        self._unwritten = False  # merged base weights from a checkpoint, not yet in the net
        self._selector: TaskSelector | None = None

    def check(self, net: nn.Module) -> None:
        lora_slot.require_lora(net, "lora_per_task")

    def before_task(self, ctx: Context) -> None:
        net = ctx.system.net
        layers = lora_slot.require_lora(net, "lora_per_task")
        if self._unwritten:
            lora_slot.write_base(net, self.base)
            self._unwritten = False
        if self.started != ctx.task_id:  # not when resumed inside the task: it is training
            if ctx.task_id > 0 and self.cfg.after_task == "keep":
                lora_slot.restart(layers)  # (merge restarted it right after merging)
            self.started = ctx.task_id
        if self.cfg.after_task == "keep" and self._selector is None:
            self._selector = TaskSelector(net, self)

    def after_task(self, ctx: Context) -> None:
        net = ctx.system.net
        if self.cfg.after_task == "keep":
            self.adapters.append(lora_slot.snapshot(lora_slot.adapter_params(net)))
            return
        layers = lora_slot.require_lora(net, "lora_per_task")
        self.base = lora_slot.merge(layers)
        lora_slot.restart(layers)  # the merged update must not count twice

    def memory_bytes(self) -> int:
        tensors = [t for a in self.adapters for t in a.values()] + list(self.base.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict:
        return {"adapters": self.adapters, "base": self.base, "started": self.started}

    def load_state_dict(self, state: dict) -> None:
        self.adapters = [dict(a) for a in state["adapters"]]
        self.base, self.started = dict(state["base"]), int(state["started"])
        self._unwritten = bool(self.base)


class TaskSelector:
    """Scoring with the adapter of the batch's task: the slot's tensors are swapped for the
    kept ones around each forward pass in eval mode, then put back (training is untouched)."""

    def __init__(self, net: nn.Module, owner: LoraPerTask):
        self.owner, self.params = owner, lora_slot.adapter_params(net)
        self.live = None
        net.register_forward_pre_hook(self.before, with_kwargs=True)
        net.register_forward_hook(self.after, with_kwargs=True)

    def before(self, net, args, kwargs):
        t = args[1] if len(args) > 1 else kwargs.get("t")
        if net.training or t is None:
            return None
        tasks = t.unique().tolist()
        if len(tasks) != 1:
            raise UserError("lora_per_task with after_task=keep scores a batch with one task's "
                            f"adapter, but this batch mixes tasks {tasks}")
        task = tasks[0]
        if task == self.owner.started or task < 0:  # -1: no task (a general set): as trained
            return None
        self.live = lora_slot.snapshot(self.params)
        kept = self.owner.adapters
        # a task not trained yet has no adapter: zeros, the base model's own scores
        lora_slot.write(self.params, kept[task] if task < len(kept)
                        else {n: p.new_zeros(p.shape) for n, p in self.params.items()})
        return None

    def after(self, net, args, kwargs, output):
        if self.live is not None:
            lora_slot.write(self.params, self.live)
            self.live = None
        return output
