"""What each strategy costs per training step, relative to naive, on the same model.

A step here is what ``harness.system.ContinualSystem`` does: forward, task loss plus the
strategies' loss terms, backward, ``before_optimizer_step`` hooks, SGD step; run in a plain
loop (no Trainer) so that only the strategy's own work is timed. Each strategy first goes
through one experience and its ``after_task`` (so memories, Fishers, teachers are in place),
then the second experience's steps are timed. Also reported: the time of ``after_task`` (the
Fisher estimate for EWC, memory insertion for the replay family) and the bytes the strategy
keeps, per stored example for the memories.

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
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.data import BatchLoader, TaskData  # noqa: E402
from harness.distributed import DIST  # noqa: E402
from harness.models.base import DataSpec  # noqa: E402
from harness.network import Network  # noqa: E402
from harness.registry import MODELS, STRATEGIES  # noqa: E402
from strategies.base import Context  # noqa: E402

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


def context(net, tasks, task_id: int, batch_size: int) -> Context:
    return Context(system=SimpleNamespace(net=net), task_id=task_id, n_tasks=len(tasks),
                   train_data=lambda i: tasks[i],
                   make_loader=lambda d, shuffle=True: BatchLoader(d, batch_size, shuffle=shuffle),
                   batch_size=batch_size, dist=DIST, seed=0)


def steps(net, strategy, ctx, n: int) -> float:
    """Seconds per step, median over ``n`` steps after a few warm-up ones."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loader = strategy.train_loader(ctx, ctx.make_loader(ctx.train_data(ctx.task_id)))
    times, batches = [], iter(())
    for i in range(n + 5):
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            batch = next(batches)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = net(batch.x, batch.t)
        terms = {"task": net.loss(batch, out), **strategy.loss_terms(ctx, batch, out)}
        torch.stack([v.float() for v in terms.values()]).sum().backward()
        strategy.before_optimizer_step(ctx)
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(setup, name: str, n_steps: int) -> dict:
    model_name, model_kw, spec, tasks, bs = setup
    net, strategy = build(model_name, model_kw, spec, name)
    ctx0 = context(net, tasks, 0, bs)
    strategy.before_task(ctx0)
    steps(net, strategy, ctx0, 10)
    t0 = time.perf_counter()
    strategy.after_task(ctx0)
    after = time.perf_counter() - t0
    ctx1 = context(net, tasks, 1, bs)
    strategy.before_task(ctx1)
    per_step = steps(net, strategy, ctx1, n_steps)
    stored = len(strategy.buffer) if hasattr(strategy, "buffer") else 0
    return {"step": per_step, "after_task": after, "bytes": strategy.memory_bytes(),
            "stored": stored, "examples": len(tasks[0])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per strategy")
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
        base = None
        for name in ["naive"] + [s for s in args.strategies if s != "naive"]:
            r = measure(setup, name, n)
            base = base or r["step"]
            per_ex = f"{r['bytes'] / r['stored']:.0f}" if r["stored"] else "-"
            print(f"{name:<9} {r['step'] * 1e3:>8.2f} {r['step'] / base:>8.2f} "
                  f"{r['after_task'] * 1e3:>14.1f} {r['bytes']:>11,} {per_ex:>14}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
