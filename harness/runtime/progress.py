"""Progress lines: one line on stderr, from rank zero only.

``Ticker`` reports a long loop (an evaluation of a pretrained LM over every test set takes
minutes on a CPU): nothing for the first seconds, so small models stay quiet, then a line every
``every_s`` seconds with the share done and an estimate of the time left, and a closing line.
"""

from __future__ import annotations

import sys
import time

from harness.runtime.distributed import launch_rank


def say(message: str) -> None:
    """A progress line on stderr, from rank zero only."""
    if launch_rank() == 0:
        print(message, file=sys.stderr, flush=True)


class Ticker:
    """Counts the steps of a loop of ``total`` steps and says how far it got, now and then."""

    def __init__(self, label: str, total: int, quiet_s: float = 5.0, every_s: float = 15.0,
                 clock=time.monotonic, out=say):
        self.label, self.total, self.every_s = label, max(total, 1), every_s
        self.clock, self.out = clock, out
        self.start = clock()
        self.next_at = self.start + quiet_s
        self.done, self.spoke = 0, False

    def step(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now >= self.next_at:
            elapsed = now - self.start
            left = elapsed * max(self.total - self.done, 0) / max(self.done, 1)
            self.out(f"{self.label}: {self.done}/{self.total} batches "
                     f"({100 * self.done / self.total:.0f}%), {elapsed:.0f} s, "
                     f"about {left:.0f} s left")
            self.next_at, self.spoke = now + self.every_s, True

    def close(self) -> None:
        """The closing line, only when the loop was long enough to report on."""
        if self.spoke:
            self.out(f"{self.label}: done in {self.clock() - self.start:.0f} s")
