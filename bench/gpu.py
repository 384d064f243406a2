"""GPU: tokens/s and model FLOPs utilisation of ``gpt`` at ~100M parameters in bf16.

retain's step (the lean engine, naive strategy, ``trainer.precision=bf16-mixed``, fused AdamW)
and a hand-written loop on the same model, data and optimizer under the same bf16 autocast,
in one process and in alternation (``bench.overhead``'s two loops), then, with ``--compile``,
both again with the model compiled in place (``nn.Module.compile``: the state dict keeps its
keys). Data and model live on the GPU; an epoch is timed from its first step's end to its
last's, each waited for on the device. ``trainer.deterministic`` is off (retain's default
is on: deterministic kernels can be slower; a run gets this with trainer.deterministic=false).

Peak memory is each loop's own (``max_memory_allocated``, reset before each of its epochs).
MFU is the achieved model FLOP/s over the card's dense bf16 peak (H100 SXM and H200: 989
TFLOP/s; H100 PCIe: 756). A token costs ``6 N + 12 L d T`` FLOPs for training (PaLM,
appendix B): N the parameters (the tied embedding counted once: its matmul is the LM head),
L layers, d the width, T the context. Target: >= 40%.

Sizes: ``100m`` (default) d_model 768, 12 heads, 14 layers (99.4M parameters), 1024-token
sequences, batch 16; ``tiny`` (d_model 64, 2 layers, 64 tokens) only checks the code path,
on any device.

    python -m bench gpu                              # needs CUDA
    python -m bench gpu --compile --batch-size 32
    python -m bench gpu --size tiny --device cpu     # the code path, without a GPU
"""

from __future__ import annotations

import argparse
import re
import statistics

import torch

from bench.common import print_table

SIZES = {
    "100m": dict(d_model=768, n_head=12, n_layer=14, seq_len=1024, batch=16),
    "tiny": dict(d_model=64, n_head=4, n_layer=2, seq_len=64, batch=8),
}
# Dense bf16 FLOP/s by the device name's words, the first match wins; a card not listed
# gets no MFU rather than another card's peak (an L40S is not an L4).
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
             ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16
                 if re.search(rf"\b{re.escape(key)}\b", name)), None)


def flops_per_token(net, size: dict) -> float:
    n = sum(p.numel() for p in net.parameters())  # parameters() yields a tied weight once
    return 6 * n + 12 * size["n_layer"] * size["d_model"] * size["seq_len"]


def measure(work, size: dict, steps: int, repeats: int, label: str) -> list[dict]:
    from bench.overhead import plain_epoch, retain_epoch

    device = work.data.x.device
    batch = size["batch"]
    plain_epoch(work, batch)  # warm-up: allocator, kernels, compilation
    retain_epoch(work, batch, "lean")
    epochs = {"plain": lambda: plain_epoch(work, batch)[0],
              "retain": lambda: retain_epoch(work, batch, "lean")[0]}
    times = {loop: [] for loop in epochs}
    peak_bytes = dict.fromkeys(epochs, 0)
    for _ in range(repeats):  # interleaved: a slow spell hits both alike
        for loop, epoch in epochs.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[loop].append(epoch())
            if device.type == "cuda":
                peak_bytes[loop] = max(peak_bytes[loop], torch.cuda.max_memory_allocated(device))
    tokens = len(work.data) * size["seq_len"]
    per_token, peak = flops_per_token(work.net, size), peak_flops(device)
    rows = []
    for loop, name in (("plain", "hand-written loop"), ("retain", "retain, lean engine")):
        seconds = statistics.median(times[loop])
        rate = tokens / seconds
        rows.append({
            "figure": f"{name}, {label}",
            "tokens/s": f"{rate:,.0f}",
            "ms/step": f"{seconds / steps * 1e3:.1f}",
            "MFU": f"{100 * rate * per_token / peak:.1f}%" if peak else "n/a",
            "peak GiB": f"{peak_bytes[loop] / 2**30:.1f}" if device.type == "cuda" else "n/a",
        })
    ratio = statistics.median(times["plain"]) / statistics.median(times["retain"])
    rows.append({"figure": f"ratio retain / hand-written, {label}", "tokens/s": f"{ratio:.3f}",
                 "ms/step": "", "MFU": "", "peak GiB": ""})
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=list(SIZES), default="100m")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu, with --size tiny")
    p.add_argument("--batch-size", type=int, default=0, help="sequences a step (default: the "
                   "size's)")
    p.add_argument("--steps", type=int, default=30, help="steps an epoch (one timing)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time the compiled model")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu: no CUDA device here, nothing measured (--size tiny --device cpu checks "
              "the code path)")
        return []
    from bench.overhead import gpt_workload

    size = {**SIZES[args.size], **({"batch": args.batch_size} if args.batch_size else {})}
    device = torch.device(args.device)
    work = gpt_workload(size["d_model"], size["seq_len"], size["batch"] * args.steps,
                        n_layer=size["n_layer"], n_head=size["n_head"], device=args.device,
                        precision="bf16-mixed", deterministic=False)
    params = sum(p.numel() for p in work.net.parameters())
    rows = measure(work, size, args.steps, args.repeats, "eager")
    if args.compile:
        work.net.model.compile()
        rows += measure(work, size, args.steps, args.repeats, "torch.compile")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print_table(f"GPU throughput: gpt {params / 1e6:.1f}M parameters, bf16-mixed, batch "
                f"{size['batch']} x {size['seq_len']} tokens, fused AdamW, median of "
                f"{args.repeats} ({gpu})", rows)
    return rows


if __name__ == "__main__":
    main()
