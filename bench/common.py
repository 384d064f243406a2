"""Small helpers shared by the benchmarks: a plain-text table and the machine's description."""

from __future__ import annotations

import os
import platform
import time


def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        print(f"\n{title}\n  (no rows)")
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print(f"\n{title}")
    print("  " + "  ".join(f"{c:<{widths[c]}}" for c in cols))
    print("  " + "  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  " + "  ".join(f"{str(r.get(c, '')):<{widths[c]}}" for c in cols))


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, "
            f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
