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
    from harness.run import run

    spec = json.loads(Path(spec_path).read_text())
    for overrides in spec["runs"]:
        run(config.load(None, overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
