"""Quadratic penalties with a closed-form gradient: ``scale * (sum_i w_i (theta_i - a_i)^2 + c)``.

EWC and SI pull each parameter towards an anchor ``a`` with an importance ``w >= 0``. Written
as a loss term, the penalty's forward and backward cost more than a small network's own step
(``bench strategy_costs``). Its gradient, ``2 * scale * w * (theta -
a)``, is known, so strategies return it from ``Strategy.penalties`` instead, and the system:

* adds the gradient to the parameters' gradients after the backward pass, before any
  strategy's ``before_optimizer_step`` reads or changes them (SI integrates the total
  gradient; A-GEM projects it), and before gradient clipping;
* values the penalty only on the steps it logs (``loss/<name>``, included in ``loss/total``).

This is the gradient autograd gives, once per optimizer step: with gradient accumulation over
k batches, each adds ``1/k`` of it while the parameters stand still. (On an epoch's last,
shorter window of n < k batches autograd gave n/k of it; this adds all of it.) Under DDP it is
added after the gradients' all-reduce: every rank holds the same penalty, so averaging it
would change nothing. Mixed precision: Lightning unscales the gradients before the hook, and
the penalty is computed in fp32. Unlike loss terms, a penalty is not checked for NaN on every
step: a non-finite one shows in the next step's loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.api import trainable


@dataclass
class Quadratic:
    """``scale * (sum_i importance_i * (theta_i - anchor_i)^2 + const)`` over named parameters.

    ``importance`` and ``anchor`` are the strategy's own dicts (name -> fp32 tensor); tensors
    restored on the CPU are moved to the parameters' device in place, once. A strategy keeps
    one Quadratic while its importance stands (a task), so the parameters are matched to their
    weights once, not on every step.
    """

    scale: float
    importance: dict[str, Tensor]
    anchor: dict[str, Tensor]
    const: float = 0.0
    _matched: tuple | None = field(default=None, repr=False, compare=False)

    def _aligned(self, net) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        if self._matched is not None and self._matched[0] is net and (
                not self._matched[1] or self._matched[1][0].device == self._matched[2][0].device):
            return self._matched[1:]
        params, weights, anchors = [], [], []
        for name, p in trainable(net):
            weight = self.importance.get(name)
            if weight is None:  # e.g. a layer frozen when the importance was taken
                continue
            if weight.device != p.device:  # restored from a checkpoint on the CPU
                weight = self.importance[name] = weight.to(p.device)
                self.anchor[name] = self.anchor[name].to(p.device)
            params.append(p)
            weights.append(weight)
            anchors.append(self.anchor[name])
        self._matched = (net, params, weights, anchors)
        return params, weights, anchors

    @torch.no_grad()
    def value(self, net) -> Tensor:
        """The penalty now, an fp32 scalar without a graph."""
        params, weights, anchors = self._aligned(net)
        total = torch.zeros((), device=params[0].device if params else None)
        with torch.autocast(total.device.type, enabled=False):
            for p, w, a in zip(params, weights, anchors):
                diff = p.float() - a
                total += torch.dot((w * diff).reshape(-1), diff.reshape(-1))
        return self.scale * (total + self.const)

    @torch.no_grad()
    def add_gradient_(self, net) -> None:
        """``p.grad += 2 * scale * w * (p - a)`` for every penalised parameter, in fp32."""
        params, weights, anchors = self._aligned(net)
        if not params:
            return
        with torch.autocast(params[0].device.type, enabled=False):
            # One multi-tensor kernel per operation instead of three kernels per tensor.
            diffs = torch._foreach_sub([p.float() for p in params], anchors)
            torch._foreach_mul_(diffs, weights)
            grads = [p.grad for p in params]
            if all(g is not None and g.dtype == torch.float32 for g in grads):
                torch._foreach_add_(grads, diffs, alpha=2 * self.scale)
                return
            for p, d in zip(params, diffs):  # bf16 parameters, or no gradient from the loss
                d.mul_(2 * self.scale)
                p.grad = d.to(p.dtype) if p.grad is None else p.grad.add_(d.to(p.grad.dtype))
