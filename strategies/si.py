"""Synaptic intelligence (Zenke, Poole and Ganguli, ICML 2017).

Each parameter's contribution to the decrease of the loss is integrated along the training
trajectory: every optimizer step adds ``-g * delta_theta`` (the gradient the step used times
the change it made) to ``omega``. At the end of an experience the importance grows by
``omega / (Delta^2 + xi)``, ``Delta`` being how far the parameter moved during the experience
and ``xi`` a damping term, and the parameters become the new anchor::

    loss/si = c * sum_i Omega_i (theta_i - theta*_i)^2

The step's change is only known after the optimizer has run, so ``before_optimizer_step``
settles the previous step (its stored gradient times the parameters' change since) and
stores the current gradient; ``after_task`` settles the last one. A checkpoint taken inside
an experience carries the running integral, so a resumed experience continues it. As in
Avalanche's ``SynapticIntelligencePlugin`` the gradient is that of the total loss, the
penalty's included (``strategies.penalty`` adds it before this hook runs), and ``Omega`` can
be capped (``max_importance``; Avalanche caps it at 0.001). Unlike Avalanche, ``Omega`` is also
clamped at zero: a negative importance would reward moving away from the anchor. Avalanche
writes the penalty as ``lambda / 2 * sum ...``, so its ``si_lambda`` is ``2 c`` here. (Avalanche
0.6's plugin is inactive on CPU: it keeps ``param.cpu().flatten()``, a view of the parameter,
as the "old" weights, so every step's change reads as zero; bench/avalanche_parity.py.)

Under DDP the gradients are already averaged over ranks when the hook runs, so every rank
accumulates the same importance.

    retain run scenario.name=split-digits model.name=mlp strategy=si strategy.si.c=1 \\
        strategy.si.xi=0.1
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.api import Context, Strategy
from harness.registry import register_strategy
from strategies.penalty import Quadratic


@dataclass
class SIConfig:
    c: float = field(default=1.0, metadata={"help": "penalty weight c", "min": 0})
    xi: float = field(default=0.1, metadata={"help": "damping xi of the importance", "above": 0})
    max_importance: float = field(default=0.0, metadata={
        "help": "cap on each parameter's importance (0: none; Avalanche uses 0.001)", "min": 0})


@register_strategy("si", config=SIConfig)
class SI(Strategy):
    """Synaptic intelligence: path-integral importance, quadratic penalty."""

    def __init__(self, cfg: SIConfig):
        super().__init__(cfg)
        self.raw: dict[str, Tensor] = {}  # sum over experiences of omega / (Delta^2 + xi)
        self.importance: dict[str, Tensor] = {}  # Omega: raw, clamped
        self.anchor: dict[str, Tensor] = {}  # parameters at the end of the last experience
        self.omega: dict[str, Tensor] = {}  # this experience's path integral
        self.start: dict[str, Tensor] = {}  # parameters at the start of this experience
        self._last: tuple[dict, dict] | None = None  # (parameters, gradients) of the last step
        self.in_task = -1  # the task being trained (a checkpoint may be taken inside it)
        self._penalty: Quadratic | None = None  # built from importance and anchor (penalties)

    def before_task(self, ctx: Context) -> None:
        if self.in_task == ctx.task_id and self.start:  # resumed from inside this task
            device = next(ctx.system.net.parameters()).device
            self.omega, self.start = _to(self.omega, device), _to(self.start, device)
            if self._last is not None:
                self._last = (_to(self._last[0], device), _to(self._last[1], device))
            return
        self.in_task = ctx.task_id
        params = ctx.trainable
        self.start = {n: p.detach().float().clone() for n, p in params}
        self.omega = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
        self._last = None

    def penalties(self, ctx: Context) -> dict[str, Quadratic]:
        if not self.importance:
            return {}
        if self._penalty is None:  # one per task: it matches parameters to weights once
            self._penalty = Quadratic(self.cfg.c, self.importance, self.anchor)
        return {"si": self._penalty}

    @torch.no_grad()
    def before_optimizer_step(self, ctx: Context) -> None:
        params = ctx.trainable
        self._settle(params)
        self._last = ({n: p.detach().float().clone() for n, p in params},
                      {n: p.grad.detach().float().clone() for n, p in params
                       if p.grad is not None})

    def _settle(self, params) -> None:
        """Add the last step's ``-g * delta_theta`` to omega."""
        if self._last is None:
            return
        before, grads = self._last
        for n, p in params:
            if n in grads:
                self.omega[n].sub_(grads[n] * (p.detach().float() - before[n]))
        self._last = None

    @torch.no_grad()
    def after_task(self, ctx: Context) -> None:
        self._penalty = None  # the importance and anchors change below
        params = ctx.trainable
        self._settle(params)
        cap = self.cfg.max_importance or None
        for n, p in params:
            theta = p.detach().float()
            delta = theta - self.start[n].to(theta.device)
            gain = self.omega[n].to(theta.device) / (delta.pow(2) + self.cfg.xi)
            self.raw[n] = gain if n not in self.raw else self.raw[n].to(gain) + gain
            self.importance[n] = self.raw[n].clamp(min=0.0, max=cap)
            self.anchor[n] = theta.clone()
        self.omega, self.start, self.in_task = {}, {}, -1

    def memory_bytes(self) -> int:
        stores = (self.raw, self.importance, self.anchor, self.omega, self.start)
        return sum(t.numel() * t.element_size() for d in stores for t in d.values())

    def state_dict(self) -> dict:
        last = None if self._last is None else {"theta": self._last[0], "grad": self._last[1]}
        return {"raw": dict(self.raw), "anchor": dict(self.anchor), "in_task": self.in_task,
                "omega": dict(self.omega), "start": dict(self.start), "last": last}

    def load_state_dict(self, state: dict) -> None:
        self.raw, self.anchor = dict(state["raw"]), dict(state["anchor"])
        self.in_task = int(state["in_task"])
        self.omega, self.start = dict(state["omega"]), dict(state["start"])
        last = state["last"]
        self._last = None if last is None else (dict(last["theta"]), dict(last["grad"]))
        cap = self.cfg.max_importance or None
        self.importance = {n: r.clamp(min=0.0, max=cap) for n, r in self.raw.items()}
        self._penalty = None


def _to(tensors: dict[str, Tensor], device) -> dict[str, Tensor]:
    return {n: t.to(device) for n, t in tensors.items()}
