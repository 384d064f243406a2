"""Throughput, memory and size of every language model, at two sizes.

For each model and size: parameters, training tokens/s (forward, LM head, cross-entropy,
backward, AdamW step), evaluation tokens/s (forward and LM head without gradients), each the
best of three timing windows, and peak memory. On CPU peak memory is the peak RSS of a fresh
process that only builds and runs that model (so it includes PyTorch itself, ~300 MB); on
CUDA it is ``max_memory_allocated``.
With CUDA the models also run in bf16 autocast, and ``gpt`` reports model FLOPs utilisation
as ``bench.gpu`` counts it (which times gpt at ~100M parameters, where MFU means something).

Sizes: ``small`` d_model 128, 2 layers, 256-token sequences of 64-token segments, batch 16;
``medium`` d_model 256, 4 layers, 512-token sequences of 128-token segments, batch 8. The
memory models attend within a segment (plus their memory); ``gpt`` attends over the whole
sequence; ``knn`` writes its store while training (capacity 16,384); ``titans`` is the MAC
variant with its defaults (memory chunks of 16 tokens); ``memory_layer`` has one product-key
layer (1,024 slots, top-8) in block 1. ``step_vs_gpt`` is the training step time over gpt's
at the same size, device and precision.

    python -m bench models
    python -m bench.models --models xl knn --sizes small --steps 5
    python -m bench.models --clock cpu --threads 1 --cpu-only   # on a busy machine
    python -m bench.models --models gpt titans titans:variant=mag   # name:option=value,...
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, print_table  # noqa: E402

MODELS = ["gpt", "xl", "rmt", "knn", "titans", "memory_layer", "lstm"]
SIZES = {
    "small": dict(d_model=128, n_layer=2, n_head=4, seq_len=256, seg_len=64, batch=16),
    "medium": dict(d_model=256, n_layer=4, n_head=8, seq_len=512, seg_len=128, batch=8),
}
VOCAB = 258  # byte-level, like the built-in text scenarios


def build(name: str, size: dict, device: str):
    import torch

    from harness.api import DataSpec
    from harness.registry import MODELS as REGISTRY

    name, _, options = name.partition(":")  # e.g. titans:variant=mag,chunk_size=32
    entry = REGISTRY.get(name)
    fields = {f.name for f in dataclasses.fields(entry.config)}
    extra = dict(mem_len=size["seg_len"], n_mem_tokens=8)
    chosen = dict(item.split("=", 1) for item in options.split(",") if item)
    types = {f.name: f.type for f in dataclasses.fields(entry.config)}
    chosen = {k: int(v) if types[k] in (int, "int") else v for k, v in chosen.items()}
    cfg = entry.config(**{k: v for k, v in {**size, **extra, **chosen}.items() if k in fields})
    spec = DataSpec("tokens", "lm", vocab_size=VOCAB, seq_len=size["seq_len"])
    torch.manual_seed(0)
    return entry.cls(cfg, spec).to(device)


def measure(name: str, size_name: str, steps: int, device: str, bf16: bool,
            clock: str = "wall", threads: int = 0) -> dict:
    """One model at one size; run in a fresh process so that peak RSS is its own."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads or torch.get_num_threads())
    size = SIZES[size_name]
    model = build(name, size, device)
    B, T = size["batch"], size["seq_len"]
    x = torch.randint(VOCAB, (B, T + 1), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctx = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if bf16 else _no_context

    def train_step():
        with ctx():
            logits = model.lm_logits(model(x[:, :-1]))
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def eval_step():
        with ctx():
            model.lm_logits(model(x[:, :-1]))

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    timer = time.process_time if clock == "cpu" else time.perf_counter
    train_s = _timed(train_step, steps, device, timer)
    model.eval()
    eval_s = _timed(eval_step, steps, device, timer)
    params = sum(p.numel() for p in model.parameters())
    row = {"model": name, "size": size_name, "precision": "bf16" if bf16 else "fp32",
           "params": f"{params / 1e6:.2f}M",
           "train_tok/s": f"{B * T / train_s:,.0f}", "eval_tok/s": f"{B * T / eval_s:,.0f}"}
    if device == "cuda":
        row["peak_mem_MB"] = f"{torch.cuda.max_memory_allocated() / 2**20:,.0f}"
    else:
        row["peak_rss_MB"] = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f}"
    if hasattr(model, "memory_stats"):
        stats = model.memory_stats()
        search_ms = 1000 * stats["retrieval_s"] / max(1, stats["searches"])
        row["memory"] = (f"{stats['entries']} entries, {stats['bytes'] / 2**20:.1f} MB, "
                         f"{search_ms:.1f} ms/search")
    if name == "gpt" and device == "cuda" and bf16:
        row["MFU"] = _mfu(model, size, B * T / train_s)
    return row


def _mfu(model, size: dict, tokens_per_s: float) -> str:
    import torch

    from bench.gpu import flops_per_token, peak_flops

    peak = peak_flops(torch.device("cuda"))
    if peak is None:
        return "unknown peak"
    return f"{100 * flops_per_token(model, size) * tokens_per_s / peak:.1f}%"


def _timed(step, steps: int, device: str, timer=time.perf_counter, repeats: int = 3) -> float:
    """Seconds per step: the best of ``repeats`` windows of ``steps`` steps, after two warm-up
    steps. The minimum is the figure least disturbed by other work on a shared machine;
    ``timer=time.process_time`` (``--clock cpu``) counts this process's CPU time only."""
    import torch

    for _ in range(2):
        step()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = timer()
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (timer() - start) / steps)
    return best


class _no_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _run(args) -> dict:
    name, size, steps, device, bf16, clock, threads = args
    try:
        return measure(name, size, steps, device, bf16, clock if device == "cpu" else "wall",
                       threads)
    except Exception as err:  # e.g. gpt not there yet: report it, keep the other rows
        return {"model": name, "size": size, "precision": "bf16" if bf16 else "fp32",
                "params": f"unavailable: {type(err).__name__}: {err}"[:80]}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per window")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help=(
        "cpu: time CPU runs by this process's CPU time (steadier on a shared machine)"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA runs")
    args = parser.parse_args(argv)
    import torch

    extra = (args.clock, args.threads)
    runs = [(m, s, args.steps, "cpu", False, *extra) for s in args.sizes for m in args.models]
    if torch.cuda.is_available() and not args.cpu_only:
        runs += [(m, s, 4 * args.steps, "cuda", bf16, *extra) for bf16 in (False, True)
                 for s in args.sizes for m in args.models]
    rows = []
    spawn = mp.get_context("spawn")
    for run in runs:
        with spawn.Pool(1) as pool:  # a fresh process per measurement: its own peak memory
            rows.append(pool.apply(_run, (run,)))
    _relative_to_gpt(runs, rows)
    columns = list(dict.fromkeys(k for row in rows for k in row))  # every row, every column
    rows = [{c: row.get(c, "") for c in columns} for row in rows]
    load = os.getloadavg()[0]
    print_table(f"Models: throughput and memory ({machine()}, load {load:.1f})", rows)


def _relative_to_gpt(runs: list, rows: list[dict]) -> None:
    """Each row's training step time over gpt's at the same size, device and precision (the
    issue's target for the memory models: at most 2x)."""
    def tokens_per_s(row):
        try:
            return float(row["train_tok/s"].replace(",", ""))
        except (KeyError, ValueError):
            return None

    gpt = {run[1:5]: tokens_per_s(row) for run, row in zip(runs, rows) if run[0] == "gpt"}
    for run, row in zip(runs, rows):
        base, own = gpt.get(run[1:5]), tokens_per_s(row)
        if base and own:
            row["step_vs_gpt"] = f"{base / own:.2f}x"


if __name__ == "__main__":
    main(sys.argv[1:])
