"""Stability-gap metrics (min-ACC, WC-ACC, dips and their recovery) on curves worked by hand."""

import math

import pytest

from harness.core import stability

# Three tasks of 4 steps, evaluated every 2 steps; a task's last point is its boundary.
#            step task  accuracy on tasks 0, 1, 2
POINTS = [(2, 0, [0.5, 0.0, 0.0]),
          (4, 0, [0.9, 0.0, 0.0]),   # boundary of task 0
          (6, 1, [0.3, 0.6, 0.0]),   # task 0 dips right after task 1 starts ...
          (8, 1, [0.8, 0.9, 0.0]),   # ... and recovers; boundary of task 1
          (10, 2, [0.2, 0.5, 0.7]),
          (12, 2, [0.4, 0.9, 0.95])]  # task 0 stays down; task 1 recovers


def curves(values=lambda row: row, metric="accuracy"):
    return {"step": [p[0] for p in POINTS], "task": [p[1] for p in POINTS],
            "scores": {metric: [values(p[2]) for p in POINTS]}}


def test_min_acc_and_wc_acc_by_hand():
    out = stability.worst_case(curves(), "accuracy", higher_is_better=True)
    # worst of task 0 after its boundary: min(0.3, 0.8, 0.2, 0.4); of task 1: min(0.5, 0.9)
    assert out["worst"] == pytest.approx((0.2 + 0.5) / 2)
    # WC-ACC = final task at its end / T + (1 - 1/T) * min-ACC
    assert out["wc"] == pytest.approx(0.95 / 3 + 2 / 3 * 0.35)


def test_each_dip_its_depth_and_recovery_by_hand():
    pairs = stability.transitions(curves(), "accuracy", higher_is_better=True)
    got = [(p["task"], p["old_task"], p["boundary"], p["worst"], p["worst_steps"],
            p["recovery_steps"]) for p in pairs]
    assert got == [(1, 0, 0.9, 0.3, 2, 4),      # 0.3 -> 0.8 regains half of 0.6 by step 4
                   (2, 0, 0.8, 0.2, 2, None),   # 0.2 -> 0.4 regains a third: not recovered
                   (2, 1, 0.9, 0.5, 2, 4)]
    assert [p["depth"] for p in pairs] == pytest.approx([0.6, 0.6, 0.4])
    assert [p["recovered"] for p in pairs] == pytest.approx([5 / 6, 1 / 3, 1.0])


def test_summary_averages_dips_and_counts_the_recovered_ones():
    summary, detail = stability.gap_summary(curves(), {"loss"})
    assert summary["accuracy/gap_depth"] == pytest.approx(1.6 / 3)
    assert summary["accuracy/gap_depth_max"] == pytest.approx(0.6)
    assert summary["accuracy/gap_recovery_steps"] == pytest.approx(4.0)
    assert (summary["accuracy/gap_dips"], summary["accuracy/gap_recovered_dips"]) == (3, 2)
    assert summary["accuracy/worst"] == pytest.approx(0.35) and len(detail["accuracy"]) == 3


def test_lower_is_better_reads_worst_as_highest():
    """Bits per token: the same curves mirrored (1 - accuracy) give the same dips."""
    bits = curves(lambda row: [1 - v for v in row], metric="bits_per_token")
    out = stability.worst_case(bits, "bits_per_token", higher_is_better=False)
    assert out["worst"] == pytest.approx((0.8 + 0.5) / 2)
    assert out["wc"] == pytest.approx(0.05 / 3 + 2 / 3 * 0.65)
    pairs = stability.transitions(bits, "bits_per_token", higher_is_better=False)
    assert [p["depth"] for p in pairs] == pytest.approx([0.6, 0.6, 0.4])
    assert [p["recovery_steps"] for p in pairs] == [4, None, 4]
    summary, _ = stability.gap_summary(bits, {"bits_per_token"})
    assert summary["bits_per_token/gap_depth"] == pytest.approx(1.6 / 3)


def test_no_dip_is_depth_zero_and_not_counted_as_a_recovery():
    """An old task that does not fall (or was forgotten already) has nothing to recover: it
    adds 0 to the mean depth but no instant recovery to the recovery time."""
    rising = {"step": [1, 2, 3, 4, 5, 6], "task": [0, 1, 1, 2, 2, 2],
              "scores": {"accuracy": [[0.5, 0.0, 0.0], [0.6, 0.2, 0.0], [0.7, 0.9, 0.0],
                                      [0.7, 0.1, 0.3], [0.8, 0.3, 0.4], [0.8, 0.8, 0.5]]}}
    pairs = stability.transitions(rising, "accuracy", True)
    assert [(p["depth"], p["recovery_steps"]) for p in pairs] == [
        (0.0, 0), (0.0, 0), (pytest.approx(0.8), 3)]
    summary, _ = stability.gap_summary(rising, set())
    assert summary["accuracy/gap_recovery_steps"] == 3  # not (0 + 0 + 3) / 3
    assert (summary["accuracy/gap_dips"], summary["accuracy/gap_recovered_dips"]) == (1, 1)
    assert summary["accuracy/gap_depth"] == pytest.approx(0.8 / 3)


def test_undefined_without_two_tasks_or_curves_and_missing_scores_skipped():
    one = {"step": [1, 2], "task": [0, 0], "scores": {"accuracy": [[0.1], [0.2]]}}
    assert stability.worst_case(one, "accuracy", True) == {"worst": None, "wc": None}
    assert stability.gap_summary(None, set()) == ({}, {})
    holed = curves(lambda row: [math.nan if v == 0.2 else v for v in row])
    assert stability.worst_case(holed, "accuracy", True)["worst"] == pytest.approx(
        (0.3 + 0.5) / 2)  # the NaN point is left out, not read as a dip
