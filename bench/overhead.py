"""What the harness costs over a hand-written PyTorch loop.

Same process, same GPT, same token batches, same (fused) AdamW: (a) a plain loop — forward,
cross-entropy, backward, step — and retain's fit of the ContinualSystem on the task loop's
loader with the naive strategy, (b) on the lean engine (``harness.loop``, the default for one
process) and (c) on Lightning's Trainer (the DDP engine). They are timed in alternation and
the median is reported, so a busy machine slows all alike. Also reported: the fixed cost of
one experience for each engine (set-up, teardown) and of evaluating one test experience.

    python -m bench.overhead            # or: python -m bench overhead
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench.common import print_table


def build(d_model: int, seq_len: int, n_seq: int, seed: int = 0):
    from harness.config import TrainerConfig
    from harness.data import TaskData
    from harness.models.base import DataSpec
    from harness.models.gpt import GPT, GPTConfig
    from harness.network import Network

    torch.manual_seed(seed)
    spec = DataSpec(kind="tokens", task="lm", vocab_size=258, seq_len=seq_len)
    net = Network(GPT(GPTConfig(d_model=d_model, n_head=4, n_layer=2), spec), spec)
    tokens = torch.randint(0, 256, (n_seq, seq_len + 1))
    data = TaskData(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(),
                    torch.zeros(n_seq, dtype=torch.long))
    return net, data, TrainerConfig(max_epochs=1, progress=False, lr=1e-3)


def plain_epoch(net, data, batch_size: int) -> float:
    """Hand-written loop over one shuffled epoch; returns its ``steady`` seconds. Same
    optimizer as retain's (fused AdamW), so the ratio measures the harness, not the optimizer
    kernel."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
    order = torch.randperm(len(data))
    times = []
    for i in range(0, len(data), batch_size):
        idx = order[i : i + batch_size]
        x, y = data.x[idx], data.y[idx]
        logits = net.model.lm_logits(net.model(x))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter())
    return steady(times)


def steady(step_ends: list[float]) -> float:
    """An epoch's time at the pace of its steps after the first: n-1 intervals between step
    ends, scaled to n steps. The first step (lazy optimizer state, first graph) is left out
    of both the plain loop and retain's, so neither is charged for it."""
    n = len(step_ends)
    return (step_ends[-1] - step_ends[0]) * n / max(n - 1, 1)


def retain_epoch(net, data, cfg, batch_size: int, engine: str) -> tuple[float, float]:
    """One epoch of retain's fit with ``engine`` (lean loop or Lightning's Trainer), as the
    task loop runs it; returns (seconds from the first to the last step, set-up seconds)."""
    from harness.distributed import DIST
    from harness.loop import LeanLoop
    from harness.resume import LightningStepCheckpoint, StepCheckpoint, StopSignals
    from harness.run import DistLoader
    from harness.system import ContinualSystem
    from harness.trainer import make_trainer
    from strategies.base import Context
    from strategies.naive import Naive, NaiveConfig

    class Clock(StepCheckpoint):  # times the steps: from the first one's end to the last's
        def after_step(self, step, *args):
            self.times.append(time.perf_counter())
            return super().after_step(step, *args)

    system = ContinualSystem(net, [Naive(NaiveConfig())], cfg)
    loader = DistLoader(data, batch_size, shuffle=True, seed=0)
    system.ctx = Context(system=system, task_id=0, n_tasks=1, train_data=lambda i: data,
                         make_loader=None, batch_size=batch_size, dist=DIST)
    clock = Clock(lambda position: None, loader, cfg, 0, StopSignals())
    clock.times = []
    start = time.perf_counter()
    if engine == "lean":
        LeanLoop(cfg, torch.device("cpu"), "bench").fit(system, loader, clock)
    else:
        trainer = make_trainer(cfg, "bench", uses_gpu=False)
        trainer.callbacks.append(LightningStepCheckpoint(clock))
        trainer.fit(system, train_dataloaders=loader)
    total = time.perf_counter() - start
    loop_s = steady(clock.times)  # the rest of the wall time is fixed cost
    return loop_s, total - loop_s


def eval_seconds(net, data, batch_size: int) -> float:
    from harness.evaluate import evaluate

    start = time.perf_counter()
    evaluate(net, [data], batch_size)
    return time.perf_counter() - start


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--sequences", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: steady on a shared machine; 0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    net, data, cfg = build(args.d_model, args.seq_len, args.sequences)
    tokens = args.sequences * args.seq_len
    plain_epoch(net, data, args.batch_size)  # warm-up: allocator, kernels
    plain, loops, setups = [], {"lean": [], "lightning": []}, {"lean": [], "lightning": []}
    for _ in range(args.repeats):  # interleaved, so load on the machine hits all alike
        plain.append(plain_epoch(net, data, args.batch_size))
        for engine in loops:
            loop_s, setup_s = retain_epoch(net, data, cfg, args.batch_size, engine)
            loops[engine].append(loop_s)
            setups[engine].append(setup_s)
    p_med = statistics.median(plain)
    lean, trainer = statistics.median(loops["lean"]), statistics.median(loops["lightning"])
    rows = [
        {"figure": "plain PyTorch loop", "value": f"{tokens / p_med:,.0f} tokens/s"},
        {"figure": "retain, lean engine (default, one process)",
         "value": f"{tokens / lean:,.0f} tokens/s"},
        {"figure": "retain, Lightning Trainer engine (DDP)",
         "value": f"{tokens / trainer:,.0f} tokens/s"},
        {"figure": "ratio retain lean / plain (target >= 0.95)", "value": f"{p_med / lean:.3f}"},
        {"figure": "ratio retain Lightning / plain", "value": f"{p_med / trainer:.3f}"},
        {"figure": "fixed cost per experience, lean engine",
         "value": f"{statistics.median(setups['lean']):.3f} s"},
        {"figure": "fixed cost per experience, Lightning Trainer (set-up + teardown)",
         "value": f"{statistics.median(setups['lightning']):.3f} s"},
        {"figure": f"evaluate one test experience ({args.sequences} sequences)",
         "value": f"{eval_seconds(net, data, 128):.3f} s"},
    ]
    print_table(f"Overhead over a plain loop (gpt d={args.d_model}, {args.sequences}x"
                f"{args.seq_len} tokens, batch {args.batch_size}, {torch.get_num_threads()} "
                f"threads, median of {args.repeats})", rows)
    return rows


if __name__ == "__main__":
    main()
