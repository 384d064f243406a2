"""Progress lines: one line on stderr, from rank zero only."""

from __future__ import annotations

import sys

from harness.runtime.distributed import launch_rank


def say(message: str) -> None:
    """A progress line on stderr, from rank zero only."""
    if launch_rank() == 0:
        print(message, file=sys.stderr, flush=True)
