"""Run every benchmark in one go and print each table: ``python -m bench``.

Each part also runs alone: ``python -m bench <part> [its options]`` or
``python -m bench.<part>``. Parts: see PARTS. Benchmarks print figures; tests never time.
"""

from __future__ import annotations

import importlib
import sys
import time

PARTS = {
    "startup": "retain --help / list / first training step",
    "overhead": "retain's step versus a hand-written PyTorch loop",
    "strategy_costs": "per-step cost of each strategy relative to naive",
    "avalanche_parity": "retain versus Avalanche's own strategies, same data and model",
    "models": "tokens/s, memory and parameters of every model",
    "knn": "kNN store search: exact top-k against FAISS flat, IVF and HNSW, by store size",
    "gpu": "gpt at ~100M parameters in bf16 on a GPU: tokens/s and MFU",
    "scenarios": "scenario preparation time and cache size",
    "ddp": "throughput with 1 and 2 processes",
    "growth": "time and peak memory per task over a 20-task stream",
    "strategy_forgetting": "forgetting of naive vs EWC, SI and distill where they should help",
    "continual_eval": "cost of evaluation during training, as a share of the training time",
    "pretrained": "SmolLM2 + LoRA step vs transformers + peft; full fine-tuning vs LoRA",
}


def main(argv: list[str]) -> int:
    from bench.common import machine

    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        for name, what in PARTS.items():
            print(f"  {name:<18} {what}")
        return 0
    if argv:
        part, rest = argv[0], argv[1:]
        if part not in PARTS:
            print(f"unknown part '{part}'; parts: {', '.join(PARTS)}", file=sys.stderr)
            return 2
        importlib.import_module(f"bench.{part}").main(rest)
        return 0
    print(f"machine: {machine()}")
    for part in PARTS:
        start = time.perf_counter()
        try:
            importlib.import_module(f"bench.{part}").main([])
        except Exception as err:  # one broken part must not hide the others' figures
            print(f"\n[{part}] failed: {type(err).__name__}: {err}")
        print(f"[{part}] {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
