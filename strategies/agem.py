"""Averaged gradient episodic memory (A-GEM; Chaudhry et al., ICLR 2019).

After each experience ``patterns_per_experience`` random examples of it are kept (the memory
grows by that much per experience; ``strategies.buffer`` with one fixed-size group per
experience). Before every optimizer step, a reference gradient ``g_ref`` is computed on a
memory sample of ``sample_size`` examples, balanced over experiences; if the step's gradient
``g`` points against it (``g . g_ref < 0``) it is projected onto the half-space where it does
not, which to first order cannot increase the memory loss::

    g <- g - (g . g_ref) / (g_ref . g_ref) * g_ref

as in Avalanche's ``AGEMPlugin``. The reference forward runs on the training network in
train mode and leaves ``.grad`` untouched.

Under DDP every rank keeps the memory one process keeps and draws the same sample; each
computes the gradient of its rows ``rank::W``, weighted by its share of the sample's targets,
and one all-reduce sums them into the single-process ``g_ref``, so all ranks project the
already-averaged gradient onto the same reference and stay in step.

    retain run scenario.name=split-digits model.name=mlp strategy=agem \\
        strategy.agem.patterns_per_experience=40 strategy.agem.sample_size=64
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.api import Context, Strategy
from harness.registry import register_strategy
from strategies.buffer import Buffer, count, rank_part, stream_seed


@dataclass
class AGEMConfig:
    patterns_per_experience: int = field(default=40, metadata={
        "help": "examples kept from each experience (all ranks)", "min": 1})
    sample_size: int = field(default=64, metadata={
        "help": "memory examples per reference gradient (split over ranks)", "min": 1})


def project_(grads: list[torch.Tensor | None], refs: list[torch.Tensor]) -> bool:
    """A-GEM's projection, in place, of the gradient made of ``grads`` (one per parameter;
    None counts as zero and stays None) against the reference gradient ``refs``; whether it
    was needed. Computed tensor by tensor: concatenating both into flat vectors and copying
    the result back read and wrote every gradient four times more."""
    dot = sum(torch.dot(g.reshape(-1).float(), r.reshape(-1))
              for g, r in zip(grads, refs) if g is not None)
    if not dot < 0:
        return False
    ref_sq = sum(torch.dot(r.reshape(-1), r.reshape(-1)) for r in refs)
    scale = -(dot / ref_sq.clamp_min(1e-30)).item()
    for g, r in zip(grads, refs):
        if g is not None:  # a bf16 gradient plus the float32 reference: computed in float32,
            g.add_(r, alpha=scale)  # rounded once
    return True


@register_strategy("agem", config=AGEMConfig)
class AGEM(Strategy):
    """A-GEM: project gradients that would increase the loss on a memory sample."""

    def __init__(self, cfg: AGEMConfig):
        super().__init__(cfg)
        self.buffer = Buffer(0, "task_balanced", per_group=cfg.patterns_per_experience)
        self.filled = 0
        self.projected = 0  # steps whose gradient was projected (for diagnostics)
        self.gen: torch.Generator | None = None
        self.in_task = -1  # the task being trained (a checkpoint may be taken inside it)
        self._gen_state: torch.Tensor | None = None  # from a checkpoint taken inside a task

    def before_task(self, ctx: Context) -> None:
        self.gen = None
        if self.in_task != ctx.task_id:
            self._gen_state = None
        self.in_task = ctx.task_id

    def before_optimizer_step(self, ctx: Context) -> None:
        if self.filled == 0:
            return
        params = [p for _, p in ctx.trainable]
        refs = self.reference_gradient(ctx, params)
        if project_([p.grad for p in params], refs):
            self.projected += 1

    def reference_gradient(self, ctx: Context, params) -> list[torch.Tensor]:
        """Gradient of the mean loss on a balanced memory sample (the same sample on every
        rank, each computing its rows' part): one float32 tensor per parameter."""
        if self.gen is None:
            self.gen = torch.Generator().manual_seed(stream_seed(ctx.seed, ctx.task_id))
            if self._gen_state is not None:
                self.gen.set_state(self._gen_state)
                self._gen_state = None
        whole = self.buffer.sample_balanced(self.cfg.sample_size, self.gen)  # empty if no memory
        index = rank_part(whole, ctx.dist)
        n = total = 0
        if len(index):
            batch = self.buffer.batch(index).to(params[0].device)
            n, total = count(batch.y), count(self.buffer.fields["y"][whole])
        if n:
            net = ctx.system.net
            with torch.enable_grad():
                loss = net.loss(batch, net(batch.x, batch.t))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            refs = [g.float() if g is not None else torch.zeros_like(p, dtype=torch.float32)
                    for g, p in zip(grads, params)]
        else:
            refs = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        if ctx.dist.world_size == 1:
            return refs
        # each rank's mean gradient weighted by its share of the sample's targets, summed
        flat = torch.cat([r.reshape(-1) for r in refs]) * (n / max(total, 1))
        ctx.dist.all_reduce_(flat)
        return [m.view_as(p) for m, p in zip(flat.split([p.numel() for p in params]), params)]

    def after_task(self, ctx: Context) -> None:
        self.buffer.add(ctx.train_data(ctx.task_id), ctx.task_id, ctx.seed)
        self.filled += 1
        self.gen, self.in_task = None, -1

    def memory_bytes(self) -> int:
        return self.buffer.nbytes()

    def state_dict(self) -> dict:
        gen = self.gen.get_state() if self.gen is not None else self._gen_state
        return {"filled": self.filled, "buffer": self.buffer.state_dict(),
                "projected": self.projected, "in_task": self.in_task, "gen": gen}

    def load_state_dict(self, state: dict) -> None:
        self.filled, self.projected = int(state["filled"]), int(state["projected"])
        self.in_task, self._gen_state, self.gen = int(state["in_task"]), state["gen"], None
        self.buffer.load_state_dict(state["buffer"])
