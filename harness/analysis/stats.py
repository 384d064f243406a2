"""The few statistics ``retain compare`` and ``retain report`` need, stated once.

Why these and not more: continual-learning papers usually report 3–5 seeds. With so few
samples a normal-approximation interval is too narrow, so the interval is Student-t
(``mean ± t(0.975, n-1) · sd / sqrt(n)``); one seed gives a value and no interval at all.
Strategies are compared with the baseline *paired by seed* (same seed → same data order and
initialisation), which removes the seed-to-seed variance both runs share. With several
strategies per scenario the p-values are also Holm-adjusted, so "significant" in a table of
eight comparisons still means something: significance (a table's ``*``, the report's colour)
is read from the Holm-adjusted p.

The paired t-test leans on normality, which three seeds cannot show; beside it every
comparison carries a paired bootstrap interval of the mean difference
(``scipy.stats.bootstrap``, BCa, seeded so a table is reproducible), which does not. With few
seeds that interval is wide, which is the honest answer. And each comparison states how many
seeds a paired t-test would need to resolve the observed difference (80% power at
alpha = 0.05, for the observed mean and spread of the differences): a difference that needs 40
seeds is not one that 3 seeds can confirm or deny.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8  # for seeds_needed
MAX_SEEDS = 1000  # seeds_needed gives up above this
BOOTSTRAP_SEED = 0


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
    boot_low: float | None = None  # paired bootstrap 95% interval of the mean difference
    boot_high: float | None = None
    seeds_needed: int | None = None  # for 80% power at the observed effect; None: above 1000


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
    low, high = bootstrap_ci(diffs)
    return Paired(n, summary.mean, summary.ci95, p, boot_low=low, boot_high=high,
                  seeds_needed=seeds_needed(summary.mean, summary.sd))


def bootstrap_ci(diffs: list[float], confidence: float = CONFIDENCE) -> tuple:
    """Paired bootstrap interval of the mean difference: BCa, or the percentile interval where
    BCa is undefined (it needs the jackknife to vary); (None, None) if neither is."""
    import warnings

    import numpy as np
    from scipy.stats import bootstrap

    data = (np.asarray(diffs, dtype=float),)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's "cannot be calculated": we fall back
            ci = bootstrap(data, np.mean, confidence_level=confidence, method=method,
                           rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
        if math.isfinite(ci.low) and math.isfinite(ci.high):
            return float(ci.low), float(ci.high)
    return None, None


def seeds_needed(mean_diff: float, sd: float | None, alpha: float = ALPHA,
                 power: float = POWER) -> int | None:
    """Paired seeds for a two-sided paired t-test to detect ``mean_diff`` with ``power``, if
    the differences spread by ``sd`` (noncentral t); None when more than MAX_SEEDS."""
    if not sd or not mean_diff:
        return None
    from scipy.stats import nct, norm, t

    effect = abs(mean_diff) / sd
    guess = ((norm.ppf(1 - alpha / 2) + norm.ppf(power)) / effect) ** 2  # normal approximation
    for n in range(max(2, int(guess) - 1), MAX_SEEDS + 1):
        crit, shift = t.ppf(1 - alpha / 2, n - 1), effect * math.sqrt(n)
        if nct.sf(crit, n - 1, shift) + nct.cdf(-crit, n - 1, shift) >= power:
            return n
    return None


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
