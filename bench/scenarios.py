"""Preparation time and size of every built-in scenario, cold (empty cache) and warm.

    python bench/scenarios.py            # all offline scenarios, default configs
    python bench/scenarios.py text-domains mqar

"cold" builds into an empty temporary cache, "warm" builds again from that cache; both exclude
the one-off ``import avalanche`` (reported separately). "prep" is the scenario's own data
preparation (reading, tokenizing, caching), "build" adds wrapping the tensors into an Avalanche
benchmark, "materialise" is the first ``train_data``/``test_data`` call for every experience.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OFFLINE = ["text-domains", "text-domains/bpe", "text-topics", "mqar", "passkey", "split-digits",
           "permuted-digits", "split-mnist", "files"]
OVERRIDES = {"files": {"path": str(ROOT / "tests" / "data" / "files_folder"),
                       "min_train_examples": 1, "seq_len": 64},
             "text-domains/bpe": {"tokenizer": "bpe"}}


def build(name: str):
    from harness.registry import SCENARIOS

    entry = SCENARIOS.get(name.split("/")[0])  # "name/variant": the scenario with OVERRIDES
    cfg = entry.config(**OVERRIDES.get(name, {}))
    start = time.perf_counter()
    scenario = entry.cls(cfg, 0)
    built = time.perf_counter() - start
    start = time.perf_counter()
    data = [(scenario.train_data(i), scenario.test_data(i)) for i in range(scenario.n_experiences)]
    return scenario, data, built, time.perf_counter() - start


def nbytes(data) -> int:
    return sum(t.element_size() * t.numel() for pair in data for d in pair for t in (d.x, d.y))


def describe(scenario, data) -> str:
    train = data[0][0]
    unit = "target tokens" if scenario.spec.task == "lm" else "examples"
    count = train.y.ne(-100).sum().item() if scenario.spec.task == "lm" else len(train)
    return f"{scenario.n_experiences} x {count:,} train {unit}, x {tuple(train.x.shape[1:])}"


def disk_size(paths) -> int:
    return sum(f.stat().st_size for p in paths for f in Path(p).glob("*"))


def main(names: list[str]) -> None:
    start = time.perf_counter()
    import avalanche.benchmarks  # noqa: F401  (one-off, shared by every scenario)

    print(f"import avalanche: {time.perf_counter() - start:.1f} s   (cpus: {os.cpu_count()})")
    print(f"{'scenario':16} {'cold prep':>9} {'build':>7} {'warm prep':>9} {'build':>7} "
          f"{'materialise':>11} {'tensors':>9} {'on disk':>8}  shape")
    for name in names:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["RETAIN_CACHE"] = cache
            cold, data, cold_build, mat = build(name)
            warm, _, warm_build, _ = build(name)
            disk = disk_size(cold.info.get("cache_entries", []))
        prep = (f"{cold.info['prep_s']:8.2f}s", f"{warm.info['prep_s']:8.2f}s") \
            if "prep_s" in cold.info else ("       -", "       -")
        print(f"{name:16} {prep[0]:>9} {cold_build:6.2f}s {prep[1]:>9} {warm_build:6.2f}s "
              f"{mat:10.3f}s {nbytes(data) / 1e6:7.1f}MB {disk / 1e6:6.2f}MB  "
              f"{describe(cold, data)}")


if __name__ == "__main__":
    main(sys.argv[1:] or OFFLINE)
