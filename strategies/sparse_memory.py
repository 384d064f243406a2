"""Sparse memory finetuning (Lin et al. 2025, arXiv 2510.15103): train only task-specific slots.

For a model with memory layers (``model.name=memory_layer``), each task trains only the
``slots`` value rows of each memory layer that are most specific to it, ranked by TF-IDF of
slot accesses::

    score(i) = tf(i) * idf(i),   tf(i) = accesses of slot i / all accesses (current task)
    idf(i) = log((1 + N) / (1 + df(i))) + 1

where ``df(i)`` counts the background sequences that read slot i and ``N`` is their number.
The background is a sample (``sample`` sequences) of every earlier task, counted after that
task was trained. The paper finetunes a pretrained model; here the tasks before
``start_task`` (default: the first) train every parameter and become that base model, and its
data the first background. With ``start_task=0`` the first task is sparse too, against an
empty background (ranked by access count alone). A
slot that old tasks read often is thus left alone, one that only the new task reads is trained.

``rank=task`` ranks once per task on ``sample`` of its training sequences, before training;
``rank=batch`` ranks on each training batch's own accesses, as the paper does. Every other
parameter (attention, embeddings, keys, queries, the rest of the memory layer) is frozen
(``requires_grad=False``, so the optimizer never holds it) for the task and unfrozen after;
the unselected value rows are masked (their gradient zeroed before every step). The optimizer
is built afresh per task, so masked rows keep zero moments and do not move at all; decoupled
weight decay would shrink them, so ``trainer.weight_decay`` must be 0.

    retain run model.name=memory_layer scenario.name=text-domains strategy=sparse_memory \\
        strategy.sparse_memory.slots=64
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.api import Context, Strategy
from harness.errors import UserError
from harness.registry import register_strategy


@dataclass
class SparseMemoryConfig:
    slots: int = field(default=64, metadata={
        "help": "value slots trained per memory layer (at most the layer's n_keys^2)", "min": 1})
    rank: str = field(default="task", metadata={
        "help": "task: rank once per task on a sample; batch: rank on every batch",
        "choices": ("task", "batch")})
    sample: int = field(default=256, metadata={
        "help": "sequences counted per task (current-task ranking and background)", "min": 1})
    start_task: int = field(default=1, metadata={
        "help": "tasks before this one (0-based) train every parameter: the base model",
        "min": 0})


@register_strategy("sparse_memory", config=SparseMemoryConfig)
class SparseMemory(Strategy):
    """Trains only the memory slots most specific to the current task (TF-IDF of accesses)."""

    def __init__(self, cfg: SparseMemoryConfig):
        super().__init__(cfg)
        self.background_df: list[Tensor] = []  # per layer: background sequences reading slot i
        self.background_n = 0  # background sequences counted
        self.selected: list[Tensor] = []  # per layer: bool (n_slots,) rows trained this task
        self.selected_task = -1
        self._frozen: list[torch.nn.Parameter] = []
        self._pending: list[Tensor] | None = None  # rank=batch: union over an accumulation
        self._active = False  # whether this task is trained sparsely (task >= start_task)

    def check_config(self, cfg) -> None:
        if cfg.trainer.weight_decay:
            raise UserError(f"strategy sparse_memory needs trainer.weight_decay=0 (got "
                            f"{cfg.trainer.weight_decay}): decoupled weight decay would shrink "
                            "the slots it leaves untrained")

    def check(self, net) -> None:
        check_slots(memory_layers_of(net), self.cfg.slots)

    def before_task(self, ctx: Context) -> None:
        layers = memory_layers(ctx)
        if not self.background_df:
            self.background_df = [torch.zeros(m.n_slots) for m in layers]
        self._active = ctx.task_id >= self.cfg.start_task
        if not self._active:
            return
        values = {id(m.values.weight) for m in layers}
        self._frozen = [p for p in ctx.system.net.parameters()
                        if p.requires_grad and id(p) not in values]
        for p in self._frozen:
            p.requires_grad_(False)
        if self.cfg.rank == "task" and self.selected_task != ctx.task_id:
            counts, _ = access_counts(ctx, layers, ctx.train_data(ctx.task_id).x,
                                      self.cfg.sample)
            self.selected = [self.choose(i, c) for i, c in enumerate(counts)]
            self.selected_task = ctx.task_id

    def choose(self, layer: int, counts: Tensor) -> Tensor:
        """The ``slots`` rows of one layer with the highest TF-IDF, as a boolean mask."""
        tf = counts / counts.sum().clamp_min(1)
        idf = torch.log((1 + self.background_n) / (1 + self.background_df[layer])) + 1
        score = tf * idf
        mask = torch.zeros(len(score), dtype=torch.bool)
        order = torch.sort(score, descending=True, stable=True).indices  # ties: lower slot first
        mask[order[: self.cfg.slots]] = True
        return mask

    def loss_terms(self, ctx: Context, batch, outputs) -> dict[str, Tensor]:
        if self._active and self.cfg.rank == "batch":
            layers = memory_layers(ctx)
            masks = []
            for i, m in enumerate(layers):
                counts = torch.bincount(m.last_indices.flatten(), minlength=m.n_slots).float()
                counts = ctx.dist.all_reduce_(counts)  # on its device (NCCL): one selection
                masks.append(self.choose(i, counts.cpu()))
            self._pending = masks if self._pending is None else [
                a | b for a, b in zip(self._pending, masks)]
        return {}

    def before_optimizer_step(self, ctx: Context) -> None:
        if not self._active:
            return
        masks = self.selected if self.cfg.rank == "task" else self._pending
        self._pending = None
        for m, mask in zip(memory_layers(ctx), masks or []):
            grad = m.values.weight.grad
            if grad is not None:
                grad[~mask.to(grad.device)] = 0

    def after_task(self, ctx: Context) -> None:
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []
        # this task joins the background, counted with the weights it ends with
        layers = memory_layers(ctx)
        x = ctx.train_data(ctx.task_id).x
        _, dfs = access_counts(ctx, layers, x, self.cfg.sample)
        self.background_df = [bg + df for bg, df in zip(self.background_df, dfs)]
        self.background_n += min(len(x), self.cfg.sample)

    def memory_bytes(self) -> int:
        return sum(t.nbytes for t in [*self.background_df, *self.selected])

    def state_dict(self) -> dict:
        return {"background_df": list(self.background_df), "background_n": self.background_n,
                "selected": list(self.selected), "selected_task": self.selected_task}

    def load_state_dict(self, state: dict) -> None:
        self.background_df = list(state["background_df"])
        self.background_n = int(state["background_n"])
        self.selected = list(state["selected"])
        self.selected_task = int(state["selected_task"])


def memory_layers(ctx: Context) -> list:
    return memory_layers_of(ctx.system.net)


def memory_layers_of(net) -> list:
    """The network's memory layers (modules that declare ``is_memory_layer``)."""
    layers = [m for m in net.modules() if getattr(m, "is_memory_layer", False)]
    if not layers:
        name = getattr(getattr(net.model, "cfg", None), "name", type(net.model).__name__)
        raise UserError(f"strategy sparse_memory needs a model with memory layers "
                        f"(model.name=memory_layer); model {name} has none")
    return layers


def check_slots(layers: list, slots: int) -> None:
    for m in layers:
        if slots > m.n_slots:
            raise UserError(f"strategy.sparse_memory.slots={slots} must be at most the memory "
                            f"layer's n_keys^2 = {m.n_slots}: from 1 to {m.n_slots}")


@torch.no_grad()
def access_counts(ctx: Context, layers: list, x: Tensor,
                  sample: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer: how often each slot is read by the first ``sample`` sequences of x, and by
    how many of them (its document frequency); the network is put back in its mode."""
    net, n = ctx.system.net, min(len(x), sample)
    counts = [torch.zeros(m.n_slots) for m in layers]
    dfs = [torch.zeros(m.n_slots) for m in layers]
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        for start in range(0, n, ctx.eval_batch_size):
            xb = x[start:min(start + ctx.eval_batch_size, n)].to(device)
            net.model(xb)
            for i, m in enumerate(layers):
                idx = m.last_indices.flatten(1).cpu()  # (b, reads per sequence)
                counts[i] += torch.bincount(idx.flatten(), minlength=m.n_slots).float()
                seen = torch.zeros(len(idx), m.n_slots, dtype=torch.bool)
                seen.scatter_(1, idx, True)
                dfs[i] += seen.sum(0).float()
        net.model.reset_memory()
    finally:
        net.train(was_training)
    return counts, dfs
