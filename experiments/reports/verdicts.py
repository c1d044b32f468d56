"""The decision rules of ``reports/claims.md`` and of every report that states a verdict, declared once.

* **Comparisons over runs** (accuracy, success counts): a two-sided test at :data:`ALPHA` = 0.05:
  Fisher's exact test for success counts, Welch's t-test (Welch-Satterthwaite degrees of freedom) for
  means over seeds. p < alpha in the claimed direction: the claim **holds**; p < alpha the other way:
  it **does not hold**; otherwise **not resolved**. One run against a figure: the figure's band is
  the 95% prediction interval of one run from the authors' run-to-run spread (:func:`prediction_band`).
* **Efficiency figures** (GFLOPs, memory): ours carries a relative error band (:data:`FLOPS_ERROR_PCT`;
  for memory the largest shift :data:`MEMORY_ERROR_COMMAND` measures, :func:`memory_error_pct`);
  the band inside the paper's figure ± :data:`TOLERANCE_PCT`: **holds**; wholly outside: **does not
  hold**; overlapping: **not resolved**.
* **Mechanism checks** (small CPU tasks built so that a mechanism decides the result) use the same
  tests with their own words, :data:`MECHANISM_VERDICTS`; an "equal" prediction is confirmed when the
  95% Welch interval of the difference lies within ± :data:`EQUIVALENCE_MIOU` points.

Student's t distribution is computed here (regularised incomplete beta by its continued fraction),
so non-integer Welch degrees of freedom need no table and no SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ALPHA",
    "CLAIM_VERDICTS",
    "EQUIVALENCE_MIOU",
    "MECHANISM_VERDICTS",
    "MEMORY_ERROR_COMMAND",
    "TOLERANCE_PCT",
    "Welch",
    "claim_verdict",
    "direction",
    "band",
    "efficiency_verdict",
    "memory_error_pct",
    "memory_error_text",
    "ratio_band",
    "equivalence_verdict",
    "error_text",
    "fisher_exact_p",
    "mechanism_verdict",
    "prediction_band",
    "rules_text",
    "single_runs_test",
    "t_quantile",
    "t_sf",
    "welch",
    "welch_from_stats",
]

ALPHA = 0.05  # two-sided significance level of every comparison
TOLERANCE_PCT = 10.0  # an efficiency figure agrees with the paper's within ± this (percent of the paper's)
FLOPS_ERROR_PCT = 0.0  # FLOPs are counted exactly (2 x multiply-adds; tested against hand counts)
MEMORY_ERROR_COMMAND = "python -m experiments.memory_model_error"  # writes reports/data/memory_model_error.csv
EQUIVALENCE_MIOU = 5.0  # "the same accuracy": the 95% interval of the difference within ± this many points
CLAIM_VERDICTS = ("holds", "does not hold", "not resolved", "not testable here")
MECHANISM_VERDICTS = ("mechanism confirmed", "mechanism not confirmed", "not resolved")


# ----------------------------------------------------------------------------------- Student's t
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (> 0, not necessarily integer) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"df must be > 0, got df={df!r}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_sf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got p={p!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1.0 - p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_sf(mid, df) > 1.0 - p else (lo, mid)
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------- the tests
@dataclass(frozen=True)
class Welch:
    """``mean(a) - mean(b)``, its 95% interval, the Welch-Satterthwaite df and the two-sided p-value."""

    diff: float
    low: float
    high: float
    df: float  # nan with fewer than two runs in an arm or no spread at all
    p: float  # two-sided; 1.0 when the test cannot be made

    def interval_text(self, digits: int = 1) -> str:
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def _mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must hold at least one number")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd, n


def welch_from_stats(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int) -> Welch:
    """Welch's test from per-arm means, sample standard deviations and counts."""
    diff = mean_a - mean_b
    if n_a < 2 or n_b < 2:
        return Welch(diff, -math.inf, math.inf, math.nan, 1.0)
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    se2 = va + vb
    if se2 == 0.0:  # no spread in either arm: the difference is exact, the test undefined
        return Welch(diff, diff, diff, math.nan, 0.0 if diff != 0 else 1.0)
    df = se2**2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    se = math.sqrt(se2)
    half = t_quantile(1.0 - ALPHA / 2.0, df) * se
    return Welch(diff, diff - half, diff + half, df, min(1.0, 2.0 * t_sf(abs(diff) / se, df)))


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's two-sample t-test of ``mean(a) - mean(b)`` (Welch-Satterthwaite df)."""
    return welch_from_stats(*_mean_sd(a), *_mean_sd(b))


def single_runs_test(a: float, b: float, spread_groups: Sequence[Sequence[float]]) -> Welch:
    """``a - b`` for one run per arm, tested with the pooled run-to-run standard deviation of ``spread_groups``
    (e.g. the authors' repeated runs; df = sum of n_i - 1): se = sd sqrt(2)."""
    groups = [[float(v) for v in g] for g in spread_groups if len(g) >= 2]
    df = sum(len(g) - 1 for g in groups)
    if df < 1:
        raise ValueError("spread_groups must hold at least one group of two or more runs")
    ss = sum(sum((v - sum(g) / len(g)) ** 2 for v in g) for g in groups)
    se = math.sqrt(2.0 * ss / df)
    diff = a - b
    half = t_quantile(1.0 - ALPHA / 2.0, df) * se
    p = min(1.0, 2.0 * t_sf(abs(diff) / se, df)) if se > 0 else (0.0 if diff else 1.0)
    return Welch(diff, diff - half, diff + half, float(df), p)


def fisher_exact_p(a_wins: int, a_runs: int, b_wins: int, b_runs: int) -> float:
    """Two-sided Fisher exact test of two success counts (sum of the tables no likelier than the observed)."""
    for name, wins, runs in (("a", a_wins, a_runs), ("b", b_wins, b_runs)):
        if runs < 0 or not 0 <= wins <= max(runs, 0):
            raise ValueError(f"need 0 <= {name}_wins <= {name}_runs, got {name}_wins={wins}, {name}_runs={runs}")
    if a_runs == 0 or b_runs == 0:
        return 1.0
    wins, total = a_wins + b_wins, a_runs + b_runs

    def prob(k: int) -> float:
        return math.comb(a_runs, k) * math.comb(b_runs, wins - k) / math.comb(total, wins)

    observed = prob(a_wins)
    ks = range(max(0, wins - b_runs), min(a_runs, wins) + 1)
    return min(1.0, sum(p for p in (prob(k) for k in ks) if p <= observed * (1 + 1e-9)))


def direction(diff: float, p: float) -> str:
    """``"greater"`` / ``"less"`` when the test resolves the sign of ``diff`` (p < alpha), else ``"not resolved"``."""
    if math.isnan(p) or p >= ALPHA or diff == 0:
        return "not resolved"
    return "greater" if diff > 0 else "less"


def claim_verdict(diff: float, p: float) -> str:
    """The verdict on "A beats B" from the test of A - B."""
    return {"greater": "holds", "less": "does not hold"}.get(direction(diff, p), "not resolved")


def mechanism_verdict(diff: float, p: float) -> str:
    """The verdict of a mechanism check predicting A > B, from the test of A - B."""
    return {"greater": "mechanism confirmed", "less": "mechanism not confirmed"}.get(direction(diff, p), "not resolved")


def equivalence_verdict(test: Welch) -> str:
    """A mechanism check predicting A = B: confirmed when the 95% interval lies within ± :data:`EQUIVALENCE_MIOU`,
    not confirmed when the test resolves a difference, else not resolved."""
    if -EQUIVALENCE_MIOU <= test.low and test.high <= EQUIVALENCE_MIOU:
        return "mechanism confirmed"
    return "mechanism not confirmed" if test.p < ALPHA else "not resolved"


def prediction_band(runs: Sequence[float], centre: float) -> tuple[float, float]:
    """95% prediction interval of one new run around ``centre`` from the spread of ``runs``:
    ``centre ± t_{0.975, n-1} sd sqrt(1 + 1/n)``."""
    _, sd, n = _mean_sd(runs)
    if n < 2:
        raise ValueError(f"a prediction band needs at least two runs, got {n}")
    half = t_quantile(1.0 - ALPHA / 2.0, n - 1) * sd * math.sqrt(1.0 + 1.0 / n)
    return centre - half, centre + half


def band(value: float, error_pct: float) -> tuple[float, float]:
    """``value`` ± ``error_pct`` % (an infinite error: the band is unbounded)."""
    if math.isnan(value) or not error_pct >= 0:
        raise ValueError(f"need a number and error_pct >= 0, got value={value!r}, error_pct={error_pct!r}")
    if math.isinf(error_pct):
        return -math.inf, math.inf
    return value * (1 - error_pct / 100), value * (1 + error_pct / 100)


def ratio_band(numerator: float, denominator: float, error_pct: float) -> tuple[float, float]:
    """The band of ``numerator / denominator`` when each carries ± ``error_pct`` % (worst case)."""
    if not denominator > 0:
        raise ValueError(f"denominator must be > 0, got {denominator!r}")
    e = error_pct / 100
    ratio = numerator / denominator
    if not e < 1:
        return 0.0, math.inf
    return ratio * (1 - e) / (1 + e), ratio * (1 + e) / (1 - e)


def efficiency_verdict(low: float, high: float, paper: float) -> str:
    """Our band ``[low, high]`` against ``paper`` ± :data:`TOLERANCE_PCT` % (see the module docstring)."""
    if not paper > 0 or math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"need paper > 0 and low <= high, got low={low!r}, high={high!r}, paper={paper!r}")
    p_lo, p_hi = paper * (1 - TOLERANCE_PCT / 100), paper * (1 + TOLERANCE_PCT / 100)
    if p_lo <= low and high <= p_hi:
        return "holds"
    if high < p_lo or low > p_hi:
        return "does not hold"
    return "not resolved"


def memory_error_pct(shifts: Sequence[float] | None) -> float:
    """The memory model's error band: the largest |shift| (%) measured by :data:`MEMORY_ERROR_COMMAND`,
    infinite when it was not measured (every memory verdict is then "not resolved")."""
    values = [abs(float(v)) for v in shifts or () if not math.isnan(float(v))]
    return max(values) if values else math.inf


def memory_error_text(shifts: Mapping[str, float] | None) -> str:
    """How the memory error was estimated, for the top of ``claims.md``."""
    if not shifts:
        return (
            f"not estimated (`{MEMORY_ERROR_COMMAND}` has not written reports/data/memory_model_error.csv), so every "
            "memory figure is **not resolved**"
        )
    measured = ", ".join(f"{label} {shift:+.1f}%" for label, shift in shifts.items())
    return (
        f"the largest shift of the increments when every live tensor is rounded to the caching allocator's 2 MiB "
        f"segments instead of its 512-byte blocks ({measured}; `{MEMORY_ERROR_COMMAND}`), a stand-in for the reserve "
        "a GPU adds to the allocated bytes. The model itself equals a real CPU run under the same tracker (tested); "
        "cuDNN workspaces are not in the band, and no GPU has measured it (`nox -s reproduce_table5 -- --scale full "
        "--device cuda` does)"
    )


def error_text(error_pct: float) -> str:
    """``"±23%"``, or ``"error not estimated"`` for an infinite band."""
    return "error not estimated" if math.isinf(error_pct) else f"±{error_pct:.0f}%"


def rules_text(memory_error: float, memory_error_how: str) -> str:
    """The rules as the top of ``claims.md`` states them (``memory_error`` %, and how it was estimated)."""
    return "\n".join(
        [
            "**Decision rules** (declared in `experiments/reports/verdicts.py`, applied to every row here and in the "
            "mechanism reports):",
            "",
            f"- *Comparisons over runs*: two-sided tests at alpha = {ALPHA:g}: Fisher's exact test for success counts, "
            "Welch's t-test (Welch-Satterthwaite degrees of freedom) for means over seeds or runs. p < alpha in the "
            "claimed direction: **holds**; p < alpha the other way: **does not hold**; otherwise **not resolved**.",
            "- *One run per arm* (a full-scale table row): the difference is tested against the pooled run-to-run "
            "spread of the authors' repeated runs of the released code (Cityscapes val), with the same words.",
            "- *One published run against the paper's figure*: **holds** when it reaches at least the lower end of the "
            "95% prediction interval of one run around the paper's figure, the spread taken from the authors' three "
            "runs of the released code (R=2, Cityscapes val); **does not hold** below it.",
            f"- *Efficiency figures*: ours ± its error (FLOPs ±{FLOPS_ERROR_PCT:g}%, counted exactly; memory "
            f"{error_text(memory_error)}: {memory_error_how}) against the paper's figure ± {TOLERANCE_PCT:g}%: "
            "inside: **holds**; wholly outside: **does not hold**; overlapping: **not resolved**. A ratio of two "
            "memory figures carries both errors.",
            "- *Mechanism checks* (small CPU tasks built so that the mechanism decides the result) use the same tests "
            "with their own words: **mechanism confirmed**, **mechanism not confirmed**, **not resolved**; an 'equal "
            f"accuracy' prediction is confirmed when the 95% Welch interval of the difference lies within ±{EQUIVALENCE_MIOU:g} "
            "mIoU points. They are not counted as claims of the paper.",
            "- **not testable here**: the claim needs the real dataset and GPUs; our smoke runs show only that the "
            "pipeline runs.",
        ]
    )
