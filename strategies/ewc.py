"""Elastic weight consolidation (Kirkpatrick et al., 2017), separate or online (Schwarz et al.).

After each experience a diagonal Fisher ``F`` is estimated on ``fisher_batches`` mini-batches
of that experience's training data (all of them by default), as Avalanche's ``EWCPlugin``
does: the network in eval mode, batches in order, ``F = mean over batches of grad(loss)^2``
(``fisher_batch_size=1`` gives the per-example empirical Fisher instead). The penalty is::

    loss/ewc = lam * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2        (mode=separate)
    loss/ewc = lam * sum_i F~_i (theta_i - theta*_i)^2,  F~ <- gamma F~ + F   (mode=online)

with no 1/2, as in Avalanche. The separate sum over experiences is kept in closed form,
``sum_k F_k (theta - theta*_k)^2 = A (theta - mu)^2 + c`` with ``A = sum_k F_k`` and ``mu`` the
Fisher-weighted mean of the anchors, so a step costs O(parameters) whatever the number of
experiences, and the penalty is exactly zero at a single anchor. Everything is fp32. The
penalty's gradient is added in closed form (``strategies.penalty``), not through autograd.

Under DDP the estimate is the single-process one: each rank computes the gradient of its
rows ``rank::W`` of every single-process mini-batch, weighted by its share of the batch's
targets; one all-reduce per batch sums them into that mini-batch's gradient, which is then
squared. (Squaring each rank's own gradient instead gives another estimate: ~3x the Fisher
with 2 ranks.) Every rank holds the same Fisher and penalty.

    retain run scenario.name=split-digits model.name=mlp strategy=ewc \\
        strategy.ewc.lam=1000 strategy.ewc.mode=separate
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.api import BatchLoader, Context, Strategy, carries_memory
from harness.registry import register_strategy
from strategies.buffer import count, rank_part
from strategies.penalty import Quadratic


@dataclass
class EWCConfig:
    lam: float = field(default=1000.0, metadata={"help": "penalty weight lambda", "min": 0})
    mode: str = field(default="separate", metadata={
        "help": "separate: one penalty per experience; online: one gamma-decayed Fisher",
        "choices": ("separate", "online")})
    gamma: float = field(default=1.0, metadata={"help": "online mode: decay of the old Fisher",
                                                "min": 0, "max": 1})
    fisher_batches: int = field(default=-1, metadata={
        "help": "mini-batches used to estimate the Fisher (-1: the whole experience)",
        "min": 1, "or": (-1,)})
    fisher_batch_size: int = field(default=0, metadata={
        "help": "mini-batch size of the estimate (0: the training batch size; 1: per example)",
        "min": 0})


@register_strategy("ewc", config=EWCConfig)
class EWC(Strategy):
    """Elastic weight consolidation: a diagonal-Fisher quadratic penalty per experience."""

    def __init__(self, cfg: EWCConfig):
        super().__init__(cfg)
        self.importance: dict[str, Tensor] = {}  # A (separate) or the decayed Fisher (online)
        self.anchor: dict[str, Tensor] = {}  # mu (separate) or the last parameters (online)
        self.const = 0.0  # c of the closed form, so the logged value equals the full sum
        self._penalty: Quadratic | None = None  # built from the three above (penalties)

    def penalties(self, ctx: Context) -> dict[str, Quadratic]:
        if not self.importance:
            return {}
        if self._penalty is None:  # one per task: it matches parameters to weights once
            self._penalty = Quadratic(self.cfg.lam, self.importance, self.anchor, self.const)
        return {"ewc": self._penalty}

    def after_task(self, ctx: Context) -> None:
        self._penalty = None  # the importance and anchors change below
        fisher = self.fisher(ctx)
        theta = {n: ctx.dist.all_reduce_(p.detach().float().clone(), "mean")
                 for n, p in ctx.trainable}
        if self.cfg.mode == "online" or not self.importance:
            for n, f in fisher.items():
                old = self.importance.get(n)
                self.importance[n] = f if old is None else self.cfg.gamma * old.to(f) + f
            self.anchor, self.const = theta, 0.0
        else:
            for n, f in fisher.items():
                a, mu = self.importance[n].to(f), self.anchor[n].to(f)
                total = a + f
                safe = total.clamp_min(torch.finfo(total.dtype).tiny)
                # sum of F_k (theta - theta*_k)^2 = A (theta - mu)^2 + c, merged exactly
                self.const += float((a.double() * f.double() * (mu - theta[n]).double().pow(2)
                                     / safe.double()).sum())
                self.anchor[n] = torch.where(total > 0, (a * mu + f * theta[n]) / safe, theta[n])
                self.importance[n] = total

    def fisher(self, ctx: Context) -> dict[str, Tensor]:
        """Mean over mini-batches of the squared mini-batch gradient, the batches and their
        gradients those of one process whatever the number of ranks."""
        net = ctx.system.net
        params = ctx.trainable
        sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
        data = ctx.train_data(ctx.task_id)
        size = self.cfg.fisher_batch_size or ctx.batch_size
        loader = BatchLoader(data, size, shuffle=False, with_index=True)  # one process's batches
        limit = len(loader) if self.cfg.fisher_batches < 0 else self.cfg.fisher_batches
        was_training = net.training
        net.eval()
        net.model.reset_memory()
        n_batches = 0
        for whole in loader:
            if n_batches >= limit:
                break
            grads = self._batch_gradient(ctx, net, params, data, whole)
            for (n, _), g in zip(params, grads):
                if g is not None:
                    sums[n] += g.pow(2)
            n_batches += 1
        net.train(was_training)
        return {n: s / max(n_batches, 1) for n, s in sums.items()}

    @staticmethod
    def _batch_gradient(ctx: Context, net, params, data, whole) -> list[Tensor | None]:
        """The fp32 gradient of one mini-batch's mean loss. Under DDP each rank takes rows
        ``rank::W``, weighs its mean loss by its share of the batch's targets, and the ranks'
        gradients are summed (one all-reduce)."""
        dist = ctx.dist
        part = whole if dist.world_size == 1 else data.batch(rank_part(whole.index, dist))
        n = count(part.y)
        grads: list[Tensor | None] = [None] * len(params)
        if n:
            part = part.to(params[0][1].device)
            # a memory-less network's pass costs what its shapes say: count one of each shape
            key = None if carries_memory(net.model) else tuple(part.x.shape)
            with ctx.flops.alike(key):
                loss = net.loss(part, net(part.x, part.t))
                grads = list(torch.autograd.grad(loss, [p for _, p in params],
                                                 allow_unused=True))
        if dist.world_size == 1:
            return [None if g is None else g.float() for g in grads]
        weight = n / max(count(whole.y), 1)
        flat = torch.cat([(torch.zeros_like(p, dtype=torch.float32) if g is None
                           else g.float() * weight).reshape(-1)
                          for g, (_, p) in zip(grads, params)])
        dist.all_reduce_(flat)
        return [g.view_as(p) for g, (_, p) in zip(flat.split([p.numel() for _, p in params]),
                                                  params)]

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size()
                   for d in (self.importance, self.anchor) for t in d.values())

    def state_dict(self) -> dict:
        return {"importance": dict(self.importance), "anchor": dict(self.anchor),
                "const": self.const}

    def load_state_dict(self, state: dict) -> None:
        self.importance, self.anchor = dict(state["importance"]), dict(state["anchor"])
        self.const, self._penalty = float(state["const"]), None
