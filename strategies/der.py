"""Dark experience replay (DER, and DER++ when ``beta > 0``), Buzzega et al., NeurIPS 2020.

Replay plus distillation, composed from their pieces: the memory is ``strategies.buffer``
(any of its policies) and also stores the network's logits of each kept example; each step a
memory mini-batch is forwarded and two terms are added::

    loss/der_logits = alpha * MSE(logits(memory x), stored logits)     (DER)
    loss/der_labels = beta  * CE(logits(memory x), memory y)           (the "++" of DER++)

As in Avalanche's ``DER`` strategy, the logits are those of the network at the end of the
experience the example came from (computed in ``after_task``, in eval mode, for the new
examples kept), the memory batch is only used once the memory holds ``batch_size_mem``
examples, and it is drawn in shuffled passes. Avalanche forwards memory and current examples
in one batch; here the memory batch has its own forward, which gives the same gradients for
networks without batch statistics, and the current examples' loss stays the task loss.
Logits are matched over all classes (unmasked in task-IL) or, for language models, over the
vocabulary at non-ignored positions; ``logits_dtype=float16`` halves what they cost to keep.
Under DDP every rank keeps the memory one process keeps (``strategies.buffer``), draws the
same global memory batch and forwards its rows ``rank::W``; each term, a mean over those rows,
is weighed by the rank's share of the memory batch, so the ranks' gradients average to the
single-process gradient.

    retain run scenario.name=split-digits model.name=mlp strategy=der \\
        strategy.der.mem_size=200 strategy.der.alpha=0.1 strategy.der.beta=0.5
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import Batch, Context, Strategy, carries_memory
from harness.registry import register_strategy
from strategies.buffer import (
    POLICIES,
    Buffer,
    MemoryStream,
    check_policy,
    count,
    rank_part,
    share,
    stream_seed,
)
from strategies.distill import at_targets, full_logits

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class DERConfig:
    mem_size: int = field(default=200, metadata={"help": "examples kept in memory (all ranks)",
                                                 "min": 0})
    alpha: float = field(default=0.1, metadata={"help": "weight of the logit-matching MSE",
                                                "min": 0})
    beta: float = field(default=0.5, metadata={
        "help": "weight of the memory label CE (0: plain DER, > 0: DER++)", "min": 0})
    policy: str = field(default="reservoir", metadata={
        "help": "memory policy (class_balanced: Avalanche's DER)", "choices": POLICIES})
    batch_size_mem: int = field(default=0, metadata={
        "help": "memory examples per (global) step (0: the training batch size)", "min": 0})
    logits_dtype: str = field(default="float32", metadata={
        "help": "storage type of the logits", "choices": tuple(DTYPES)})


@register_strategy("der", config=DERConfig)
class DER(Strategy):
    """Dark experience replay: match stored logits (and labels, DER++) of memory examples."""

    def __init__(self, cfg: DERConfig):
        super().__init__(cfg)
        check_policy(cfg.policy)
        self.buffer = Buffer(cfg.mem_size, cfg.policy)
        self.filled = 0
        self.stream: MemoryStream | None = None
        self.in_task = -1  # the task being trained (a checkpoint may be taken inside it)
        self._stream_state: dict | None = None  # from a checkpoint taken inside a task

    def before_task(self, ctx: Context) -> None:
        self.stream = None
        if self.in_task != ctx.task_id:  # a new task, not one resumed from inside
            self._stream_state = None
        self.in_task = ctx.task_id

    def loss_terms(self, ctx: Context, batch, outputs) -> dict[str, Tensor]:
        if self.filled == 0:
            return {}
        if self.stream is None:  # first step of the task
            size = self.cfg.batch_size_mem or ctx.batch_size
            self.stream = MemoryStream(self.buffer, size, stream_seed(ctx.seed, ctx.task_id),
                                       drop_last=True)
            if self._stream_state is not None:
                self.stream.load_state_dict(self._stream_state)
                self._stream_state = None
        whole = self.stream.next()  # the global memory batch, the same on every rank
        if whole is None:
            return {}
        index = rank_part(whole, ctx.dist)
        net = ctx.system.net
        memory = self.buffer.batch(index).to(batch.x.device)
        if count(memory.y) == 0:  # fewer memory targets than ranks: none on this rank
            zero = torch.zeros((), device=batch.x.device)
            return {"der_logits": zero, **({"der_labels": zero} if self.cfg.beta > 0 else {})}
        stored = self.buffer.fields["logits"][index].to(batch.x.device).float()
        out = net(memory.x, memory.t)
        student = at_targets(full_logits(net, memory.x, out), memory.y).float()
        terms = {"der_logits": self.cfg.alpha * F.mse_loss(student, at_targets(stored, memory.y))}
        if self.cfg.beta > 0:
            terms["der_labels"] = self.cfg.beta * net.loss(memory, out)
        if ctx.dist.world_size > 1:  # the system weighs every term by the current batch's
            # share: these are means over the memory batch, whose share may differ
            weight = share(memory.y, self.buffer.fields["y"][whole], ctx.dist)
            current = ctx.system.batch_share
            terms = {k: v * (weight / current if current is not None else weight)
                     for k, v in terms.items()}
        return terms

    def after_task(self, ctx: Context) -> None:
        net = ctx.system.net

        @torch.no_grad()
        def logits(batch: Batch) -> dict[str, Tensor]:
            # Under DDP each rank computes rows rank::W and the ranks exchange them; a model
            # that carries memory from batch to batch computes them all on every rank.
            dist = ctx.dist
            split = dist.world_size > 1 and not carries_memory(net.model)
            mine = batch if not split else Batch(
                *(None if v is None else v[dist.rank::dist.world_size] for v in batch))
            was_training = net.training
            net.eval()
            net.model.reset_memory()
            device = next(net.parameters()).device
            memory = carries_memory(net.model)  # else a chunk costs what its shape says
            parts = []
            for part in _chunks(mine, ctx.eval_batch_size):
                with ctx.flops.alike(None if memory else tuple(part.x.shape)):
                    logits = net(part.x.to(device), None).logits
                parts.append(logits.to(DTYPES[self.cfg.logits_dtype]).cpu())
            net.train(was_training)
            out = torch.cat(parts) if parts else torch.empty(0)
            if not split:
                return {"logits": out}
            gathered = dist.all_gather_object(out)
            full = gathered[0].new_empty((len(batch), *gathered[0].shape[1:]))
            for r, part in enumerate(gathered):
                if len(part):  # (a rank may have had no rows)
                    full[r::dist.world_size] = part
            return {"logits": full}

        self.buffer.add(ctx.train_data(ctx.task_id), ctx.task_id, ctx.seed, extra=logits)
        self.filled += 1
        self.stream, self.in_task = None, -1

    def memory_bytes(self) -> int:
        return self.buffer.nbytes()

    def state_dict(self) -> dict:
        stream = self.stream.state_dict() if self.stream is not None else self._stream_state
        return {"filled": self.filled, "buffer": self.buffer.state_dict(),
                "in_task": self.in_task, "stream": stream}

    def load_state_dict(self, state: dict) -> None:
        self.filled, self.in_task = int(state["filled"]), int(state["in_task"])
        self.buffer.load_state_dict(state["buffer"])
        self._stream_state, self.stream = state["stream"], None


def _chunks(batch: Batch, size: int):
    for start in range(0, len(batch), size):
        yield batch.rows(start, start + size)
