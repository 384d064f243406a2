"""The few statistics ``retain compare`` and ``retain report`` need, stated once.

Why these and not more: continual-learning papers usually report 3–5 seeds. With so few
samples a normal-approximation interval is too narrow, so the interval is Student-t
(``mean ± t(0.975, n-1) · sd / sqrt(n)``); one seed gives a value and no interval at all.
Strategies are compared with the baseline *paired by seed* (same seed → same data order and
initialisation), which removes the seed-to-seed variance both runs share. With several
strategies per scenario the p-values are also Holm-adjusted, so "significant" in a table of
eight comparisons still means something.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CONFIDENCE = 0.95
ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """Mean and 95% Student-t interval of one metric over seeds. ``ci95`` is the half-width;
    ``sd`` and ``ci95`` are None when n == 1."""

    n: int
    mean: float
    sd: float | None
    ci95: float | None

    @property
    def low(self) -> float | None:
        return None if self.ci95 is None else self.mean - self.ci95

    @property
    def high(self) -> float | None:
        return None if self.ci95 is None else self.mean + self.ci95


@dataclass(frozen=True)
class Paired:
    """A strategy minus the baseline over the seeds both have. ``p`` is the two-sided paired
    t-test p-value, None (with ``note``) when it cannot be computed."""

    n: int
    mean_diff: float | None
    ci95: float | None
    p: float | None
    note: str = ""


def finite(values: Iterable) -> list[float]:
    """The values that are real numbers: missing metrics and NaNs are left out, not zeroed."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out.append(float(v))
    return out


def summarize(values: Iterable, confidence: float = CONFIDENCE) -> Summary | None:
    """Mean ± Student-t confidence half-width; None when no finite value is given."""
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return None
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(1, mean, None, None)
    from scipy.stats import t

    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return Summary(n, mean, sd, float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n))


def paired_test(values: Mapping, baseline: Mapping) -> Paired:
    """Compare ``values[seed]`` with ``baseline[seed]`` over the seeds both have finite."""
    seeds = [s for s in values if s in baseline and len(finite([values[s], baseline[s]])) == 2]
    n = len(seeds)
    if n == 0:
        return Paired(0, None, None, None, "no seed with a value in both")
    diffs = [float(values[s]) - float(baseline[s]) for s in seeds]
    summary = summarize(diffs)
    if n < 2:
        return Paired(n, summary.mean, None, None, "n < 2 paired seeds: cannot test")
    if summary.sd == 0:
        return Paired(n, summary.mean, 0.0, None, "identical difference on every seed: "
                                                  "no variance to test")
    from scipy.stats import ttest_rel

    p = float(ttest_rel([float(values[s]) for s in seeds],
                        [float(baseline[s]) for s in seeds]).pvalue)
    return Paired(n, summary.mean, summary.ci95, p)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (None entries are skipped and stay None)."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
