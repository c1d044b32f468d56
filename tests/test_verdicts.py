"""The declared decision rules (experiments/reports/verdicts.py): Student's t, Welch, Fisher, the bands."""

from __future__ import annotations

import math

import pytest

from experiments.reports import verdicts as v

# Welch's example 1 (Wikipedia, "Welch's t-test"): t = -2.46, df = 24.99, p = 0.021
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
B1 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


@pytest.mark.parametrize("df,q", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042), (1000, 1.962)])
def test_t_quantile_matches_the_table(df, q):
    assert v.t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)
    assert v.t_sf(q, df) == pytest.approx(0.025, abs=2e-5)
    assert v.t_quantile(0.025, df) == pytest.approx(-q, abs=1e-3)


def test_t_sf_against_closed_forms():
    for t in (-3.0, -0.5, 0.0, 0.7, 2.0, 9.0):  # df = 1: Cauchy; df = 2: 1/2 - t / (2 sqrt(t^2 + 2))
        assert v.t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-12)
        assert v.t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)), abs=1e-12)
    with pytest.raises(ValueError, match="df"):
        v.t_sf(1.0, 0)
    with pytest.raises(ValueError, match="p must be"):
        v.t_quantile(1.0, 3)


def test_welch_matches_a_published_example():
    test = v.welch(A1, B1)
    assert test.df == pytest.approx(24.99, abs=0.01)
    assert test.p == pytest.approx(0.021, abs=0.001)
    se = (test.high - test.low) / 2 / v.t_quantile(0.975, test.df)
    assert test.diff / se == pytest.approx(-2.46, abs=0.01)


def test_welch_edge_cases():
    one = v.welch([5.0], [1.0, 2.0])
    assert one.p == 1.0 and math.isnan(one.df) and one.low == -math.inf
    exact = v.welch([3.0, 3.0], [1.0, 1.0])
    assert exact.diff == 2.0 and exact.low == exact.high == 2.0
    with pytest.raises(ValueError, match="at least one"):
        v.welch([], [1.0])


def test_fisher_exact_p_of_the_ccl_and_gamma_counts():
    assert v.fisher_exact_p(9, 10, 7, 10) == pytest.approx(0.5820, abs=1e-4)
    assert v.fisher_exact_p(5, 5, 1, 5) == pytest.approx(10 / 210)
    with pytest.raises(ValueError, match="a_wins"):
        v.fisher_exact_p(11, 10, 1, 10)


def test_a_count_difference_without_significance_is_not_resolved():
    """9/10 vs 7/10 (p = 0.58) was called 'holds in part'; by the declared rule it is not resolved."""
    p = v.fisher_exact_p(9, 10, 7, 10)
    assert v.claim_verdict(0.2, p) == "not resolved" and v.mechanism_verdict(0.2, p) == "not resolved"
    assert v.claim_verdict(0.8, 0.01) == "holds" and v.claim_verdict(-0.8, 0.01) == "does not hold"
    assert v.mechanism_verdict(-0.8, 0.01) == "mechanism not confirmed"


def test_equivalence_needs_a_narrow_interval():
    assert v.equivalence_verdict(v.Welch(0.0, -0.1, 0.1, 4.0, 0.9)) == "mechanism confirmed"
    assert v.equivalence_verdict(v.Welch(-12.6, -47.6, 22.4, 4.0, 0.37)) == "not resolved"
    assert v.equivalence_verdict(v.Welch(-30.0, -40.0, -20.0, 4.0, 0.001)) == "mechanism not confirmed"


def test_efficiency_rule_accounts_for_the_model_error():
    """+RCCA 141.1 MB vs 127 was 'does not hold' by 1.1 points past a ±10% cut; with the model's ±23% it is
    not resolved, while +NL 879 vs 1411 stays outside even with the error."""
    assert v.efficiency_verdict(*v.band(141.1, 0.0), 127) == "does not hold"
    assert v.efficiency_verdict(*v.band(141.1, 23.4), 127) == "not resolved"
    assert v.efficiency_verdict(*v.band(878.6, 23.4), 1411) == "does not hold"
    assert v.efficiency_verdict(*v.band(83.5, 0.0), 85) == "holds"
    low, high = v.ratio_band(878.6, 141.1, 23.4)
    assert low == pytest.approx(6.227 * 0.766 / 1.234, rel=1e-3) and high == pytest.approx(6.227 * 1.234 / 0.766, rel=1e-3)
    assert v.efficiency_verdict(*v.band(5.0, 0.0), 11) == "does not hold"  # no "holds in part" for any ratio > 1
    assert v.efficiency_verdict(*v.band(5.0, math.inf), 11) == "not resolved"
    assert v.memory_error_pct([1.7, -23.4]) == pytest.approx(23.4) and v.memory_error_pct(None) == math.inf
    with pytest.raises(ValueError, match="paper"):
        v.efficiency_verdict(1.0, 2.0, 0.0)


def test_prediction_band_and_single_runs():
    runs = [79.74, 79.22, 78.40]
    low, high = v.prediction_band(runs, 79.8)
    sd = (sum((x - sum(runs) / 3) ** 2 for x in runs) / 2) ** 0.5
    assert high - 79.8 == pytest.approx(79.8 - low) == pytest.approx(4.303 * sd * math.sqrt(4 / 3), rel=1e-3)
    test = v.single_runs_test(70.0, 78.0, [runs, [77.31, 77.91, 76.89]])
    assert test.df == 4.0 and test.p < 0.05 and v.claim_verdict(test.diff, test.p) == "does not hold"
    with pytest.raises(ValueError, match="two or more"):
        v.single_runs_test(1.0, 2.0, [[1.0]])


def test_rules_text_states_every_rule():
    text = v.rules_text(23.4, "measured so")
    for needle in ("alpha = 0.05", "Welch-Satterthwaite", "Fisher", "±23%: measured so", "mechanism confirmed", "±5"):
        assert needle in text
    assert "error not estimated" in v.rules_text(math.inf, "x")
