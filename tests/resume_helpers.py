"""The one "crash inside a task, resume, compare" check (imported, not a pytest conftest).

``resumes_bit_identically`` runs a configuration to the end, runs it again crashed at a fault
point (``harness.runtime.faults``) and resumed from its last checkpoint, and checks that the
resume started inside the task the crash was in and ended with the uninterrupted run's score
matrices and steps: what holds only if every piece of state (model, optimizer, strategies,
generators, loader position) is checkpointed and restored exactly.
"""

from __future__ import annotations

import pytest

from harness import config
from harness.experiment.run import run
from harness.runtime import faults


def resumes_bit_identically(overrides: list[str], monkeypatch, crash_at: str = "step:5",
                            task: int = 1, reference: dict | None = None) -> dict:
    """Run ``overrides`` as ``name=reference`` (unless its ``reference`` results are given);
    run them as ``name=crashed`` with a crash at ``crash_at``, resumed: inside task ``task``
    (0-based), the same results. The overrides must checkpoint often enough for the resume to
    start inside that task. Returns the reference's results."""
    from harness.cli import _resumable

    if reference is None:
        reference = run(config.load(None, [*overrides, "name=reference"]))
    monkeypatch.setenv("RETAIN_FAULT", crash_at)
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    faults.reset()
    crashed = config.load(None, [*overrides, "name=crashed"])
    with pytest.raises(faults.SimulatedCrash):
        run(crashed)
    monkeypatch.delenv("RETAIN_FAULT")
    resumed = run(crashed, _resumable(crashed, None))
    where = resumed["resumes"][-1]
    assert where["task"] == task and (where["epoch"], where["batch"]) != (0, 0)  # inside it
    assert resumed["matrices"] == reference["matrices"]
    assert [t["steps"] for t in resumed["per_task"]] == [t["steps"] for t in reference["per_task"]]
    return reference
