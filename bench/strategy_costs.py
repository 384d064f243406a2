"""What each strategy costs per training step, relative to naive, on the same model.

A step is ``harness.core.system.ContinualSystem``'s own: its ``training_step`` (forward, task loss
plus the strategies' loss terms), backward, its ``on_before_optimizer_step`` (penalty
gradients, strategies' hooks), its fused SGD step (called as the lean engine calls it), and
reading the batch from the strategy's loader (replay mixes memory in there); run in a plain
loop (no engine) so that only the strategy's own work is timed. Batches of the experience's
own data carry ``Batch.index``, and the context says 5 epochs, as in the parity runs (LwF
caches its teacher's outputs). Each strategy first goes through one experience and its
``after_task`` (so memories, Fishers, teachers are in place), then the second experience's
steps are timed. Also reported: the time of ``after_task`` (the Fisher estimate for EWC,
memory insertion for the replay family) and the bytes the strategy keeps, per stored example
for the memories.

Two models: the Split-Digits reference MLP (64-256-10, batch 32) and a small GPT language
model on random byte tokens (2 layers, d_model 128, 128-token sequences, batch 16).

    python bench/strategy_costs.py
    python bench/strategy_costs.py --steps 100 --models mlp
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.api import (  # noqa: E402
    BatchLoader,
    Context,  # noqa: E402
    DataSpec,  # noqa: E402
    TaskData,
)
from harness.config import TrainerConfig  # noqa: E402
from harness.core.loop import bare_step  # noqa: E402
from harness.core.network import Network  # noqa: E402
from harness.core.system import ContinualSystem  # noqa: E402
from harness.registry import MODELS, STRATEGIES  # noqa: E402
from harness.runtime.distributed import DIST  # noqa: E402

STRATEGY_SETTINGS = {  # memories of 200 examples; SI and A-GEM differ from the parity bench
    "naive": {}, "replay": {"mem_size": 200}, "ewc": {"lam": 1000.0},
    "distill": {"alpha": 1.0, "temperature": 2.0}, "der": {"mem_size": 200},
    "si": {"c": 1.0}, "agem": {"patterns_per_experience": 100, "sample_size": 64},
}


def mlp_setup():
    from scenarios.split_digits import class_groups, digits_split, split_by_class

    x_tr, y_tr, _, _ = digits_split()
    tasks = split_by_class(x_tr, y_tr, class_groups(list(range(10)), 5, 10, 0, False))
    spec = DataSpec(kind="vectors", task="classification", input_dim=64, n_classes=10)
    return "mlp", {"hidden": [256]}, spec, tasks, 32


def gpt_setup():
    spec = DataSpec(kind="tokens", task="lm", vocab_size=256, seq_len=128)
    g = torch.Generator().manual_seed(0)
    tasks = []
    for k in range(2):
        w = torch.randint(0, 256, (512, 129), generator=g)
        tasks.append(TaskData(w[:, :-1].contiguous(), w[:, 1:].contiguous(),
                              torch.full((512,), k)))
    return "gpt", {"n_layer": 2, "d_model": 128}, spec, tasks, 16


def build(model_name: str, model_kw: dict, spec: DataSpec, strategy: str):
    torch.manual_seed(0)
    entry = MODELS.get(model_name)
    net = Network(entry.cls(entry.config(**model_kw), spec), spec)
    s_entry = STRATEGIES.get(strategy)
    return net, s_entry.cls(s_entry.config(**STRATEGY_SETTINGS[strategy]))


# SGD with momentum as in the parity runs (their lr is 0.05; the rate does not change a step's
# cost), fused as in a run
TRAINER = TrainerConfig(optimizer="sgd", lr=0.01, momentum=0.9, max_epochs=5,
                        log_every_n_steps=10**9)


def context(net, strategy, tasks, task_id: int, batch_size: int) -> Context:
    system = ContinualSystem(net, [strategy], TRAINER)

    def make_loader(data, shuffle=True, with_index=False):
        return BatchLoader(data, batch_size, shuffle=shuffle, with_index=with_index)

    system.ctx = Context(system=system, task_id=task_id, n_tasks=len(tasks),
                         train_data=lambda i: tasks[i], make_loader=make_loader,
                         batch_size=batch_size, dist=DIST, seed=0, max_epochs=TRAINER.max_epochs)
    return system.ctx


class Stepper:
    """Takes timed training steps of one strategy on one experience, a few at a time, so the
    strategies' steps can be interleaved (a slow spell on a shared machine hits them alike)."""

    def __init__(self, ctx: Context):
        self.system = ctx.system
        self.opt = self.system.configure_optimizers()
        self.step = bare_step(self.opt)  # the lean engine's optimizer step
        strategy = self.system.strategies[0]
        own = ctx.make_loader(ctx.train_data(ctx.task_id), with_index=True)  # as the task loop
        self.loader = strategy.train_loader(ctx, own)
        self.batches, self.i, self.times = iter(()), 0, []
        self.run(5, keep=False)  # warm-up; the first step also logs (values penalties)

    def run(self, n: int, keep: bool = True) -> None:
        for _ in range(n):
            t0 = time.perf_counter()  # the loader's work is the strategy's too (replay mixes)
            batch = next(self.batches, None)
            if batch is None:
                self.batches = iter(self.loader)
                batch = next(self.batches)
            self.opt.zero_grad(set_to_none=True)
            self.system.training_step(batch, self.i).backward()
            self.system.on_before_optimizer_step(self.opt)
            self.step()
            self.system.on_train_batch_end(None, batch, self.i)  # counts steps for logging
            if keep:
                self.times.append(time.perf_counter() - t0)
            self.i += 1


def prepare(setup, name: str) -> dict:
    """A strategy after one experience (memories, Fishers, teachers in place), ready to step
    through the second."""
    model_name, model_kw, spec, tasks, bs = setup
    net, strategy = build(model_name, model_kw, spec, name)
    ctx0 = context(net, strategy, tasks, 0, bs)
    strategy.before_task(ctx0)
    Stepper(ctx0).run(10)
    t0 = time.perf_counter()
    strategy.after_task(ctx0)
    after = time.perf_counter() - t0
    ctx1 = context(net, strategy, tasks, 1, bs)
    strategy.before_task(ctx1)
    stored = len(strategy.buffer) if hasattr(strategy, "buffer") else 0
    return {"stepper": Stepper(ctx1), "after_task": after, "bytes": strategy.memory_bytes(),
            "stored": stored, "examples": len(tasks[0])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200,
                        help="timed steps per strategy, in 10 interleaved rounds")
    parser.add_argument("--models", nargs="+", default=["mlp", "gpt"], choices=["mlp", "gpt"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_SETTINGS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # steady timings on a shared machine
    for model in args.models:
        setup = mlp_setup() if model == "mlp" else gpt_setup()
        n = args.steps if model == "mlp" else max(args.steps // 10, 10)
        print(f"\n{model}: {sum(len(t) for t in setup[3][:1])} examples in experience 1, "
              f"batch {setup[4]}, {n} timed steps, 1 thread")
        print(f"{'strategy':<9} {'ms/step':>8} {'x naive':>8} {'after_task ms':>14} "
              f"{'kept bytes':>11} {'bytes/example':>14}")
        names = ["naive"] + [s for s in args.strategies if s != "naive"]
        prepared = {name: prepare(setup, name) for name in names}
        for _ in range(10):  # interleaved: 10 rounds of n/10 steps each
            for r in prepared.values():
                r["stepper"].run(max(n // 10, 1))
        base = statistics.median(prepared["naive"]["stepper"].times)
        for name, r in prepared.items():
            step = statistics.median(r["stepper"].times)
            per_ex = f"{r['bytes'] / r['stored']:.0f}" if r["stored"] else "-"
            print(f"{name:<9} {step * 1e3:>8.2f} {step / base:>8.2f} "
                  f"{r['after_task'] * 1e3:>14.1f} {r['bytes']:>11,} {per_ex:>14}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
