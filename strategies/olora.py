"""O-LoRA: orthogonal subspace learning (Wang et al., Findings of EMNLP 2023).

Every task trains a fresh LoRA adapter; the earlier tasks' adapters are frozen and still
apply. The new adapter is pushed to read its input through a subspace orthogonal to theirs,
so its update disturbs the inputs the earlier adapters respond to as little as possible::

    loss/olora    = lambda_orth * sum over layers, earlier tasks i of sum |A_i A_t^T|
    loss/olora_l2 = lambda_l2 * sum over the new adapter's tensors of ||theta||_2

``A`` is a layer's LoRA down-projection (rank x input). The absolute values and the L2 term
follow the authors' code (the paper writes the square of each entry); their defaults are
lambda 0.5 and no L2. Frozen adapters that still apply are, in the forward pass, their sum
added to the base weight: after each task its adapter is merged into the base (peft's delta)
and only its ``A`` is kept for the loss, so the network keeps one adapter slot
(``strategies.lora_slot``) and the state is the merged weights and the earlier ``A``s.

    retain run model.name=hf model.source=/path/to/model model.adapter=lora \\
        strategy=olora strategy.olora.lambda_orth=0.5
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.api import Context, Strategy
from harness.registry import register_strategy
from strategies import lora_slot


@dataclass
class OLoRAConfig:
    lambda_orth: float = field(default=0.5, metadata={
        "help": "weight of the orthogonality loss between the new adapter's A and earlier ones",
        "min": 0, "max": 1e6})
    lambda_l2: float = field(default=0.0, metadata={
        "help": "weight of the L2 norm of the new adapter's tensors", "min": 0, "max": 1e6})


@register_strategy("olora", config=OLoRAConfig)
class OLoRA(Strategy):
    def __init__(self, cfg: OLoRAConfig):
        super().__init__(cfg)
        self.previous: list[Tensor] = []  # per LoRA layer: earlier tasks' A, stacked by rows
        self.base: dict = {}  # the base weights with the earlier adapters merged
        self._unwritten = False  # merged base weights from a checkpoint, not yet in the net
        self._layers: list = []

    def check(self, net: nn.Module) -> None:
        lora_slot.require_lora(net, "olora")

    def before_task(self, ctx: Context) -> None:
        net = ctx.system.net
        self._layers = lora_slot.require_lora(net, "olora")
        if self._unwritten:
            lora_slot.write_base(net, self.base)
            self._unwritten = False
        current = lora_slot.down_projections(self._layers)
        self.previous = [p.to(a.device) for p, a in zip(self.previous, current)]

    def loss_terms(self, ctx: Context, batch, outputs) -> dict[str, Tensor]:
        terms = {}
        if self.previous and self.cfg.lambda_orth:
            current = lora_slot.down_projections(self._layers)
            orth = sum((old @ a.float().T).abs().sum()
                       for old, a in zip(self.previous, current))
            terms["olora"] = self.cfg.lambda_orth * orth
        if self.cfg.lambda_l2:
            params = lora_slot.adapter_params(ctx.system.net).values()
            terms["olora_l2"] = self.cfg.lambda_l2 * sum(p.float().norm() for p in params)
        return terms

    def after_task(self, ctx: Context) -> None:
        finished = [a.detach().float().clone()
                    for a in lora_slot.down_projections(self._layers)]
        self.previous = (finished if not self.previous else
                         [torch.cat([old, new]) for old, new in zip(self.previous, finished)])
        self.base = lora_slot.merge(self._layers)
        lora_slot.restart(self._layers)  # the next task's adapter, fresh

    def memory_bytes(self) -> int:
        tensors = [*self.previous, *self.base.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict:
        return {"previous": self.previous, "base": self.base}

    def load_state_dict(self, state: dict) -> None:
        self.previous, self.base = list(state["previous"]), dict(state["base"])
        self._unwritten = bool(self.base)
