"""What the harness costs over a hand-written PyTorch loop.

Same process, same network, same batches, same fused optimizer: (a) a plain loop — forward,
cross-entropy, backward, step — and retain's fit of the ContinualSystem on the task loop's
loader with the naive strategy, (b) on the lean engine (``harness.core.loop``, the default for one
process) and (c) on Lightning's Trainer (the DDP engine). They are timed in alternation and
the median is reported, so a busy machine slows all alike. Also reported: the fixed cost of
one experience for each engine (set-up, teardown) and of evaluating one test experience.

Two workloads: ``gpt`` (2 layers, d_model 128, 128-token sequences, batch 32, AdamW), where a
step is ~160 ms of arithmetic, and ``mlp``, the Split-Digits reference (64-256-10 on the
1,400 training digits, batch 32, SGD with momentum), where a step is a few hundred
microseconds and the harness's per-step Python is what shows. ``bench.gpu`` runs the same
loops on a GPU, in bf16, at ~100M parameters.

    python -m bench.overhead            # or: python -m bench overhead
    python -m bench.overhead --workloads mlp
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.common import print_table


@dataclass
class Workload:
    name: str
    net: torch.nn.Module  # a harness.core.network.Network
    data: object  # harness.api.data.TaskData
    cfg: object  # harness.config.TrainerConfig: retain's optimizer settings
    unit: str  # what the throughput counts: tokens or examples
    per_example: int  # units in one example
    describe: str

    def optimizer(self) -> torch.optim.Optimizer:
        """The plain loop's optimizer: the one retain's system builds for the same config."""
        from harness.core.system import ContinualSystem

        return ContinualSystem(self.net, [], self.cfg).configure_optimizers()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The hand-written forward and loss, without ``Network``'s dispatch."""
        model = self.net.model
        if self.net.classifier is not None:
            return F.cross_entropy(self.net.classifier(model(x)), y)
        logits = model.lm_logits(model(x))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def gpt_workload(d_model: int, seq_len: int, n_seq: int, seed: int = 0, n_layer: int = 2,
                 n_head: int = 4, device: str = "cpu", precision: str = "32-true",
                 deterministic: bool = True) -> Workload:
    """Random byte sequences for ``gpt``; network and data on ``device`` (bench.gpu)."""
    from harness.api import DataSpec, TaskData
    from harness.config import TrainerConfig
    from harness.core.network import Network
    from harness.models.gpt import GPT, GPTConfig

    torch.manual_seed(seed)
    spec = DataSpec(kind="tokens", task="lm", vocab_size=258, seq_len=seq_len)
    model = GPT(GPTConfig(d_model=d_model, n_head=n_head, n_layer=n_layer), spec)
    net = Network(model, spec).to(device)
    tokens = torch.randint(0, 256, (n_seq, seq_len + 1), device=device)
    data = TaskData(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(),
                    torch.zeros(n_seq, dtype=torch.long, device=device))
    cfg = TrainerConfig(max_epochs=1, progress=False, lr=1e-3, precision=precision,
                        deterministic=deterministic)
    return Workload("gpt", net, data, cfg, "tokens", seq_len,
                    f"gpt d={d_model} x {n_layer} layers, {n_seq}x{seq_len} tokens")


def mlp_workload(seed: int = 0) -> Workload:
    from harness.api import DataSpec, TaskData
    from harness.config import TrainerConfig
    from harness.core.network import Network
    from harness.models.mlp import MLP, MLPConfig
    from scenarios.split_digits import digits_split

    torch.manual_seed(seed)
    x, y = (torch.tensor(a) for a in digits_split()[:2])
    spec = DataSpec(kind="vectors", task="classification", input_dim=64, n_classes=10)
    net = Network(MLP(MLPConfig(hidden=[256]), spec), spec)
    cfg = TrainerConfig(max_epochs=1, progress=False, optimizer="sgd", lr=0.05, momentum=0.9)
    return Workload("mlp", net, TaskData(x, y, torch.zeros(len(x), dtype=torch.long)), cfg,
                    "examples", 1, f"mlp 64-256-10, {len(x)} digits")


def plain_epoch(work: Workload, batch_size: int) -> tuple[float, int]:
    """Hand-written loop over one shuffled epoch; returns its ``steady`` seconds and steps.
    Same optimizer as retain's (fused), so the ratio measures the harness, not the optimizer
    kernel; bf16 autocast when the workload's precision is bf16-mixed, as retain's."""
    opt, data = work.optimizer(), work.data
    device = data.x.device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if work.cfg.precision == "bf16-mixed" else contextlib.nullcontext())
    order = torch.randperm(len(data), device=device)
    times = []
    for i in range(0, len(data), batch_size):
        idx = order[i : i + batch_size]
        with autocast:
            loss = work.loss(data.x[idx], data.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(step_end(device, first=not times))
    settle(times, device)
    return steady(times), len(times)


def step_end(device: torch.device, first: bool) -> float:
    """When a step ended. On a GPU a step ends on the host once its kernels are queued: the
    first step's end (where ``steady`` starts counting) waits for the device to run them."""
    if first and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def settle(step_ends: list[float], device: torch.device) -> None:
    """On a GPU, wait for the device to run the queued steps and move the last one's end to
    then."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        step_ends[-1] = time.perf_counter()


def steady(step_ends: list[float]) -> float:
    """An epoch's time at the pace of its steps after the first: n-1 intervals between step
    ends, scaled to n steps. The first step (lazy optimizer state, first graph) is left out
    of both the plain loop and retain's, so neither is charged for it."""
    n = len(step_ends)
    return (step_ends[-1] - step_ends[0]) * n / max(n - 1, 1)


def retain_epoch(work: Workload, batch_size: int, engine: str) -> tuple[float, float]:
    """One epoch of retain's fit with ``engine`` (lean loop or Lightning's Trainer), as the
    task loop runs it; returns (its ``steady`` seconds, the rest of its wall time: set-up)."""
    from harness.api import Context
    from harness.core.loop import LeanLoop
    from harness.core.resume import StepCheckpoint, StopSignals
    from harness.core.system import ContinualSystem
    from harness.core.task import DistLoader
    from harness.runtime.distributed import DIST
    from strategies.naive import Naive, NaiveConfig

    class Clock(StepCheckpoint):  # times the steps: from the first one's end to the last's
        def after_step(self, step, *args):
            self.times.append(step_end(device, first=not self.times))
            return super().after_step(step, *args)

    net, data, cfg = work.net, work.data, work.cfg
    device = data.x.device
    system = ContinualSystem(net, [Naive(NaiveConfig())], cfg)
    loader = DistLoader(data, batch_size, shuffle=True, seed=0)
    system.ctx = Context(system=system, task_id=0, n_tasks=1, train_data=lambda i: data,
                         make_loader=None, batch_size=batch_size, dist=DIST)
    clock = Clock(lambda position: None, loader, cfg, 0, StopSignals())
    clock.times = []
    if engine != "lean":  # Lightning imported only for its engine, and outside the timing
        from harness.core.trainer import LightningStepCheckpoint, LightningSystem, make_trainer
    start = time.perf_counter()
    if engine == "lean":
        LeanLoop(cfg, device, "bench").fit(system, loader, clock)
        settle(clock.times, device)
    else:
        trainer = make_trainer(cfg, "bench", uses_gpu=device.type == "cuda")
        trainer.callbacks.append(LightningStepCheckpoint(clock))
        trainer.fit(LightningSystem(system), train_dataloaders=loader)
        settle(clock.times, device)
    total = time.perf_counter() - start
    loop_s = steady(clock.times)  # the rest of the wall time is fixed cost
    return loop_s, total - loop_s


def eval_seconds(net, data, batch_size: int) -> float:
    from harness.core.evaluate import evaluate

    start = time.perf_counter()
    evaluate(net, [data], batch_size)
    return time.perf_counter() - start


def measure(work: Workload, batch_size: int, repeats: int) -> list[dict]:
    plain_epoch(work, batch_size)  # warm-up: allocator, kernels
    plain, loops, setups = [], {"lean": [], "lightning": []}, {"lean": [], "lightning": []}
    for _ in range(repeats):  # interleaved, so load on the machine hits all alike
        plain_s, steps = plain_epoch(work, batch_size)
        plain.append(plain_s)
        for engine in loops:
            loop_s, setup_s = retain_epoch(work, batch_size, engine)
            loops[engine].append(loop_s)
            setups[engine].append(setup_s)
    units = len(work.data) * work.per_example
    medians = {"plain PyTorch loop": statistics.median(plain),
               "retain, lean engine (default, one process)": statistics.median(loops["lean"]),
               "retain, Lightning Trainer engine (DDP)": statistics.median(loops["lightning"])}
    rows = [{"figure": name, "value": f"{units / sec:,.0f} {work.unit}/s, "
                                      f"{sec / steps * 1e3:.3f} ms/step"}
            for name, sec in medians.items()]
    p_med = medians["plain PyTorch loop"]
    lean, trainer = statistics.median(loops["lean"]), statistics.median(loops["lightning"])
    target = " (target >= 0.95)" if work.name == "gpt" else ""
    rows += [
        {"figure": f"ratio retain lean / plain{target}", "value": f"{p_med / lean:.3f}"},
        {"figure": "ratio retain Lightning / plain", "value": f"{p_med / trainer:.3f}"},
        {"figure": "fixed cost per experience, lean engine",
         "value": f"{statistics.median(setups['lean']) * 1e3:.1f} ms"},
        {"figure": "fixed cost per experience, Lightning Trainer (set-up + teardown)",
         "value": f"{statistics.median(setups['lightning']) * 1e3:.1f} ms"},
        {"figure": f"evaluate one test experience ({len(work.data)} examples)",
         "value": f"{eval_seconds(work.net, work.data, 128) * 1e3:.1f} ms"},
    ]
    print_table(f"Overhead over a plain loop ({work.describe}, batch {batch_size}, "
                f"{torch.get_num_threads()} threads, median of {repeats})", rows)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", choices=["gpt", "mlp"], default=["gpt", "mlp"])
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
    rows = []
    for name in args.workloads:
        work = (gpt_workload(args.d_model, args.seq_len, args.sequences) if name == "gpt"
                else mlp_workload())
        # the MLP's epoch is ~15 ms: more repeats for a steady median
        rows += measure(work, args.batch_size, args.repeats * (1 if name == "gpt" else 8))
    return rows


if __name__ == "__main__":
    main()
