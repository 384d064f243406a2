"""Fault injection for the reliability tests: a tiny, documented hook.

``RETAIN_FAULT=<point>:<n>[,<point>:<n>...]`` kills this process with SIGKILL the n-th time
(1-based) it reaches ``<point>``, exactly as a power cut or the OOM killer would:

* ``step``        after an optimizer step, inside a task (before any checkpoint of that step)
* ``checkpoint``  halfway through writing a checkpoint's bytes (in the background writer
                  thread: in ``raise`` mode the training thread raises it after its next step)
* ``eval``        before scoring each test experience (a memory-less classifier is scored on
                  all of them in one pass: its points all come before that pass)
* ``task``        between tasks, once the task's checkpoint has been handed to the writer
                  (a kill here may land before or after that write completes)

``RETAIN_FAULT_MODE`` changes what happens there: ``raise`` raises ``SimulatedCrash`` (for
in-process tests); ``int`` / ``term`` send SIGINT / SIGTERM (a Ctrl-C, a scheduler's stop);
``stop`` sends SIGSTOP (a paused run, still holding its run directory, until SIGCONT).
Without ``RETAIN_FAULT`` a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("step", "checkpoint", "eval", "task")
_counts: dict[str, int] = {}


class SimulatedCrash(BaseException):
    """Raised at a fault point in ``raise`` mode; like a kill, nothing should catch it."""


def point(name: str) -> None:
    spec = os.environ.get("RETAIN_FAULT")
    if not spec:
        return
    _counts[name] = _counts.get(name, 0) + 1
    for item in spec.split(","):
        where, _, n = item.partition(":")
        if where == name and _counts[name] == int(n or 1):
            mode = os.environ.get("RETAIN_FAULT_MODE", "kill")
            if mode == "raise":
                raise SimulatedCrash(f"{name}:{n}")
            sig = {"int": signal.SIGINT, "term": signal.SIGTERM,
                   "stop": signal.SIGSTOP}.get(mode, signal.SIGKILL)
            os.kill(os.getpid(), sig)


def reset() -> None:
    """Forget the counts (in-process tests run several runs in one process)."""
    _counts.clear()
