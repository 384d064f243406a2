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

Under DDP each rank estimates on its shard; squared-gradient sums, batch counts and anchors
are all-reduced, so every rank holds the same Fisher and penalty.

    retain run scenario.name=split-digits model.name=mlp strategy=ewc \\
        strategy.ewc.lam=1000 strategy.ewc.mode=separate
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.api import BatchLoader, Context, Strategy
from harness.registry import register_strategy
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
        """Mean squared mini-batch gradient over this rank's shard, all-reduced over ranks."""
        net = ctx.system.net
        params = ctx.trainable
        device = params[0][1].device
        sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
        loader = BatchLoader(ctx.train_data(ctx.task_id),
                             self.cfg.fisher_batch_size or ctx.batch_size, shuffle=False,
                             rank=ctx.dist.rank, world_size=ctx.dist.world_size)
        limit = len(loader) if self.cfg.fisher_batches < 0 else -(
            -self.cfg.fisher_batches // ctx.dist.world_size)
        was_training = net.training
        net.eval()
        net.model.reset_memory()
        count = 0
        for batch in loader:
            if count >= limit:
                break
            batch = batch.to(device)
            loss = net.loss(batch, net(batch.x, batch.t))
            grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
            for (n, _), g in zip(params, grads):
                if g is not None:
                    sums[n] += g.float().pow(2)
            count += 1
        net.train(was_training)
        n_batches = ctx.dist.all_reduce_(torch.tensor([float(count)], device=device))
        return {n: ctx.dist.all_reduce_(s) / n_batches.clamp_min(1) for n, s in sums.items()}

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size()
                   for d in (self.importance, self.anchor) for t in d.values())

    def state_dict(self) -> dict:
        return {"importance": dict(self.importance), "anchor": dict(self.anchor),
                "const": self.const}

    def load_state_dict(self, state: dict) -> None:
        self.importance, self.anchor = dict(state["importance"]), dict(state["anchor"])
        self.const, self._penalty = float(state["const"]), None
