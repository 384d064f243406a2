"""Runs several experiments one after another in one set of DDP processes (for test_ddp.py).

    python tests/test_ddp_driver.py SPEC.json      # SPEC.json: {"runs": [[key=value, ...], ...]}

Starting processes (imports, the process group) costs far more than training a tiny
experiment, so the DDP tests pay for it once: Lightning's launcher re-runs this script for the
other ranks, which run the same experiments in step, in one process group. Only the first run
starts with no process group (as ``retain run`` always does); the later ones start inside it.
Not a test module: it defines no tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(spec_path: str) -> int:
    from harness import config
    from harness.experiment.run import run

    spec = json.loads(Path(spec_path).read_text())
    for overrides in spec["runs"]:
        run(config.load(None, overrides))
    if spec.get("eval_ids"):
        eval_ids(spec["eval_ids"], spec["eval_ids_out"])
    return 0


def eval_ids(sizes: list[int], out: str) -> None:
    """Which examples each rank scores, gathered over the live process group.

    The test set is sharded exactly as ``harness.core.evaluate`` shards it; rank 0 writes, per
    size, every example id scored by any rank (duplicates included) and the count per rank.
    """
    import torch

    from harness.api import BatchLoader, TaskData
    from harness.runtime.distributed import DIST

    seen = {}
    for n in sizes:
        data = TaskData(torch.arange(n, dtype=torch.float32)[:, None],
                        torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long))
        loader = BatchLoader(data, 16, shuffle=False, rank=DIST.rank, world_size=DIST.world_size)
        mine = torch.cat([b.x[:, 0].long() for b in loader] or [torch.empty(0, dtype=torch.long)])
        counts = DIST.all_gather_object(len(mine))
        seen[n] = {"ids": DIST.all_gather_cat(mine).tolist(), "per_rank": counts,
                   "world_size": DIST.world_size}
    if DIST.rank == 0:
        Path(out).write_text(json.dumps(seen))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
