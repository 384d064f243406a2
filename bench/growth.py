"""Long runs: memory per task over a 20-task stream, with replay, EWC and a kNN memory.

Two streams go through the real task loop (``harness.experiment.run.run``, checkpoints included):

* ``permuted-digits`` x 20 (domain-IL), the MLP, ``strategy=[replay,ewc]``;
* ``mqar`` x 20 (each task its own vocabulary), the ``knn`` model (a long-term key-value store
  of fixed capacity written during training), ``strategy=[replay,ewc]``.

Per task it prints the resident set now and its peak so far (``ru_maxrss``), the strategies'
stored state against its configured bound (replay: examples held against ``mem_size``; EWC:
bytes against two fp32 copies of the parameters, importance and anchor), the kNN store's
entries against its capacity, the checkpoint's size, and the task's training and evaluation
time (training should stay flat; evaluation grows with the tasks seen). It then checks the
bounds and that the RSS of the last ten tasks stays within ``--rss-slack`` MB of the tenth
task's (the state is bounded, so memory must stop growing once the memories are full).
Last, the kNN store's search time against its size, exact and with FAISS.

    python -m bench growth                  # 20 tasks each
    python -m bench growth --tasks 8 --streams digits
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEM_SIZE = 200
STREAMS = {
    "digits": ["scenario.name=permuted-digits", "model.name=mlp", "trainer.batch_size=64"],
    "knn": ["scenario.name=mqar", "scenario.seq_len=32", "scenario.n_pairs=4",
            "scenario.n_keys=16", "scenario.n_values=16", "scenario.n_train=128",
            "scenario.n_val=0", "scenario.n_test=32", "model.name=knn", "model.d_model=32",
            "model.n_head=2", "model.seg_len=16", "model.capacity=4096", "model.top_k=8"],
}


def run_stream(name: str, tasks: int, epochs: int, out: Path) -> tuple[list[dict], dict]:
    from harness import config
    from harness.experiment.run import TaskLoop, run

    rows: list[dict] = []
    original = TaskLoop.train_task

    def measured(loop, i, tests):  # the loop's own per-task record, plus memory bounds
        original(loop, i, tests)
        rows.append(task_row(loop, i))

    overrides = [*STREAMS[name], f"scenario.n_experiences={tasks}", "strategy=[replay,ewc]",
                 f"strategy.replay.mem_size={MEM_SIZE}", f"trainer.max_epochs={epochs}",
                 "logger=none", "trainer.progress=false", "eval_init=false",
                 f"out_dir={out}", f"name={name}"]
    TaskLoop.train_task = measured
    try:
        results = run(config.load(None, overrides))
    finally:
        TaskLoop.train_task = original
    return rows, results


def task_row(loop, i: int) -> dict:
    record = loop.per_task[-1]
    replay, ewc = loop.system.strategies
    n_params = sum(p.numel() for p in loop.system.net.parameters() if p.requires_grad)
    stored = len(replay.buffer)
    row = {
        "task": i + 1, "steps": record["steps"], "train_s": f"{record['train_time_s']:.2f}",
        "eval_s": f"{record['eval_time_s']:.3f}",  # grows: every task seen is scored
        "rss_mb": f"{record['rss_mb']:.0f}", "peak_rss_mb": f"{record['peak_rss_mb']:.0f}",
        "replay_n": stored, "mem_size": MEM_SIZE,
        "replay_kb": f"{replay.memory_bytes() / 1024:.0f}",
        "ewc_kb": f"{ewc.memory_bytes() / 1024:.0f}",
        "ewc_bound_kb": f"{2 * 4 * n_params / 1024:.0f}",
        "ckpt_kb": f"{(loop.run_dir.checkpoint_dir / 'last.ckpt').stat().st_size / 1024:.0f}",
    }
    stats = getattr(loop.system.net.model, "memory_stats", None)
    if stats is not None:
        s = stats()
        row["knn_entries"] = s["entries"]
        row["knn_capacity"] = sum(st.capacity for st in loop.system.net.model.stores())
        row["knn_mb"] = f"{s['bytes'] / 2**20:.1f}"
    return row


def retrieval_rows(sizes: list[int], key_dim: int = 64, queries: int = 256,
                   k: int = 8, repeats: int = 5) -> list[dict]:
    """The kNN store's search time against its size, exact top-k and FAISS (when installed),
    timed in alternation; median of ``repeats`` searches of ``queries`` queries each."""
    import statistics

    import torch

    from harness.models.knn_memory import KVStore

    try:
        import faiss  # noqa: F401
        indexes = ["exact", "faiss"]
    except ImportError:
        indexes = ["exact"]
    g = torch.Generator().manual_seed(0)
    rows = []
    for size in sizes:
        keys = torch.randn(size, key_dim, generator=g)
        q = torch.randn(queries, key_dim, generator=g)
        stores = {}
        for index in indexes:
            store = KVStore(size, key_dim, index=index)
            store.write(keys, torch.zeros(size))
            store.commit()
            store.search(q, k)  # builds the FAISS index once, as after a write
            stores[index] = store
        times = {index: [] for index in indexes}
        for _ in range(repeats):
            for index, store in stores.items():
                start = time.perf_counter()
                store.search(q, k)
                times[index].append(time.perf_counter() - start)
        row = {"entries": size}
        row.update({f"{index}_ms": f"{statistics.median(t) * 1e3:.2f}"
                    for index, t in times.items()})
        rows.append(row)
    return rows


def check(rows: list[dict], rss_slack: float) -> list[str]:
    problems = []
    for r in rows:
        if r["replay_n"] > r["mem_size"]:
            problems.append(f"task {r['task']}: replay holds {r['replay_n']} examples")
        if float(r["ewc_kb"]) > float(r["ewc_bound_kb"]) + 1:
            problems.append(f"task {r['task']}: ewc holds {r['ewc_kb']} KB "
                            f"> bound {r['ewc_bound_kb']} KB")
        if "knn_entries" in r and r["knn_entries"] > r["knn_capacity"]:
            problems.append(f"task {r['task']}: knn store over capacity")
    if len(rows) >= 12:
        base = float(rows[9]["rss_mb"])
        worst = max(float(r["rss_mb"]) for r in rows[10:])
        if worst - base > rss_slack:
            problems.append(f"RSS grew {worst - base:.0f} MB after task 10 (> {rss_slack} MB)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench growth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    parser.add_argument("--store-sizes", nargs="+", type=int,
                        default=[1024, 4096, 16384, 65536], help="kNN store sizes to search")
    parser.add_argument("--rss-slack", type=float, default=64.0,
                        help="allowed RSS growth (MB) over the last ten tasks")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    from bench.common import machine, print_table

    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine
    print(f"machine: {machine()}")
    failed = False
    with tempfile.TemporaryDirectory() as out:
        for name in args.streams:
            start = time.perf_counter()
            rows, results = run_stream(name, args.tasks, args.epochs, Path(out))
            took = time.perf_counter() - start
            metric = results["metric"]
            print_table(f"growth: {name}, {args.tasks} tasks, replay(mem_size={MEM_SIZE})+ewc, "
                        f"{took:.0f} s; final {metric}/avg "
                        f"{results['summary'].get(metric + '/avg', float('nan')):.3f}", rows)
            for problem in check(rows, args.rss_slack):
                print(f"  PROBLEM: {problem}")
                failed = True
    print_table("kNN store search, 256 queries of dim 64, top-8, one thread",
                retrieval_rows(args.store_sizes))
    print("\nbounds held" if not failed else "\nbounds violated (see PROBLEM lines)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
