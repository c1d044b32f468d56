"""The CPU mechanism experiments (experiments/mechanisms): intervals, models, exact seeds, resume, reports."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from experiments.mechanisms import stats, training
from experiments.mechanisms.model import RowColumnStack, TinySegmenter, build_model, set_gamma
from experiments.mechanisms.settings import (
    MechanismSettings,
    Variant,
    ccl_feature_dim,
    ccl_loss,
    paper_setting,
)
from experiments.mechanisms.training import run_key

TINY = MechanismSettings(
    iterations=4, num_train=16, num_val=8, batch_size=4, log_every=1, checkpoint_every=2, seeds=(0,)
)


# --------------------------------------------------------------------------------------------- stats
def test_wilson_interval_matches_the_formula_and_bounds():
    lo, hi = stats.wilson_interval(9, 10)
    z = 1.959964
    p, n = 0.9, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert stats.wilson_interval(0, 10)[0] == 0.0 and stats.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="successes"):
        stats.wilson_interval(11, 10)


def test_t_interval_and_difference_interval():
    values = [1.0, 2.0, 4.0, 7.0]
    mean = sum(values) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    lo, hi = stats.t_interval(values)
    assert (lo + hi) / 2 == pytest.approx(mean) and (hi - lo) / 2 == pytest.approx(3.182 * std / 2, rel=1e-3)
    assert stats.t_interval([5.0]) == (5.0, 5.0)
    diff, dlo, dhi = stats.difference_interval([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])
    assert diff == pytest.approx(3.0) and dlo < 3.0 < dhi
    # Welch-Satterthwaite df (4.6 here), not the conservative min(n) - 1 = 2 of before
    from experiments.reports.verdicts import t_quantile

    a, b = [10.0, 12.0, 9.0, 15.0, 11.0], [1.0, 1.5, 0.5]
    va, vb = 5.3 / 5, 0.25 / 3
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 2)
    diff, dlo, dhi = stats.difference_interval(a, b)
    assert diff == pytest.approx(10.4)
    assert (dhi - dlo) / 2 == pytest.approx(t_quantile(0.975, df) * math.sqrt(va + vb))
    assert (dhi - dlo) / 2 < 0.7 * 4.303 * math.sqrt(va + vb)
    with pytest.raises(ValueError, match="at least one"):
        stats.mean_std([])


def test_fisher_exact_p_against_exact_enumeration():
    def reference(a, n_a, b, n_b):
        wins, total = a + b, n_a + n_b
        prob = {
            k: Fraction(math.comb(n_a, k) * math.comb(n_b, wins - k), math.comb(total, wins))
            for k in range(0, n_a + 1)
            if 0 <= wins - k <= n_b
        }
        return float(sum(p for p in prob.values() if p <= prob[a]))

    for case in [(9, 10, 6, 10), (10, 10, 0, 10), (3, 5, 3, 5), (0, 10, 2, 10)]:
        assert stats.fisher_exact_p(*case) == pytest.approx(reference(*case))


def test_single_runs_print_no_spread_and_no_interval():
    """One run has no standard deviation and no interval: never "550 ± 0" or "[550, 550]"."""
    assert stats.spread_text(550.0, 0.0, 1, 0) == "550 (one run)"
    assert stats.range_text(550.0, 550.0, 1, 0) == "-"
    assert stats.spread_text(550.0, 70.7, 2, 0) == "550 ± 71" and stats.range_text(1.0, 2.0, 2) == "[1.0, 2.0]"
    assert stats.interval_text([550.0]) == "-"


# -------------------------------------------------------------------------------------- paper values
def test_ccl_uses_the_papers_margins_weights_and_projection():
    loss = ccl_loss("hinge")
    for name in ("delta_v", "delta_d", "alpha", "beta", "gamma"):
        assert getattr(loss.params, name) == float(paper_setting(f"ccl_{name}"))
    assert loss.variance == "hinge" and ccl_loss("piecewise").variance == "piecewise"
    assert ccl_feature_dim() == int(paper_setting("ccl_feature_dim"))


def test_settings_and_variants_reject_bad_values():
    with pytest.raises(ValueError, match="receptive-field radius"):
        dataclasses.replace(TINY, stem_convs=TINY.margin)
    with pytest.raises(ValueError, match="task"):
        MechanismSettings(task="cityscapes")
    with pytest.raises(ValueError, match="block"):
        Variant("x", block="aspp")
    with pytest.raises(ValueError, match="ccl"):
        Variant("x", ccl="cubic")
    assert run_key(TINY, Variant("a"), 0) == run_key(dataclasses.replace(TINY, seeds=(5, 6)), Variant("b"), 0)
    assert run_key(TINY, Variant("a"), 0) != run_key(TINY, Variant("a", gamma_init=0.0), 0)
    with pytest.raises(ValueError, match="num_train"):
        MechanismSettings(num_train=0)
    with pytest.raises(TypeError, match="'seeds'"):
        MechanismSettings(seeds=("0",))


def test_settings_are_their_own_dataclass_parsed_by_the_engines_one_parser():
    from cca.engine.config import ExperimentConfig
    from cca.engine.parsing import apply_overrides

    assert not isinstance(TINY, ExperimentConfig)  # no engine fields it would ignore
    changed = apply_overrides(TINY, ["seeds=3,4", "iterations=7", "lr=0.5", "task=temporal_cue"])
    assert (changed.seeds, changed.iterations, changed.lr, changed.task) == ((3, 4), 7, 0.5, "temporal_cue")
    with pytest.raises(ValueError, match="unknown setting 'sizes'"):
        apply_overrides(TINY, ["sizes=3"])
    with pytest.raises(TypeError, match="'iterations' expects int"):
        apply_overrides(TINY, ["iterations=many"])
    names = [f.name for f in dataclasses.fields(MechanismSettings)]
    assert list(TINY.to_dict()) == names and TINY.to_dict()["seeds"] == [0]
    assert set(TINY.identity()) == set(names) - {"seeds", "checkpoint_every"}
    for bad in ("iterations=0", "lr=0", "log_every=0", "ccl_weight=-1"):
        with pytest.raises(ValueError, match=repr(bad.split("=")[0])):
            apply_overrides(TINY, [bad])


# Run keys name the cached runs under runs/mechanisms/<key>/ (hours of CPU training): these are the
# keys computed before the settings became an ExperimentConfig extension; they must never drift.
PINNED_RUN_KEYS = [
    ("default", "r2", 0, "7b68f0aeb3c8edf0"),
    ("default", "r2_ccl", 1, "c3119b4816b7ce5a"),
    ("ccl_stability", "ccl_piecewise", 0, "f20f70502ad7ed57"),
    ("ccl_stability", "ccl_piecewise_batch_centres", 0, "ee6ad350cec676d6"),
    ("gamma_init", "gamma0", 1, "41c50572b5632d69"),
    ("stacking", "hv", 0, "1ffa573b5f324275"),
    ("video_context", "ccnet3d_t5", 2, "fdafbbc82f982944"),
]


@pytest.mark.parametrize("study, arm, seed, key", PINNED_RUN_KEYS)
def test_run_keys_of_the_cached_runs_do_not_change(study, arm, seed, key):
    import importlib

    from experiments import longrange

    if study == "default":
        settings, variant = MechanismSettings(), longrange.VARIANTS[arm]
    else:
        declared = importlib.import_module(f"experiments.mechanisms.{study}").STUDY
        settings, variant = declared.settings, declared.arms()[arm]
    assert run_key(settings, variant, seed) == key
    assert run_key(dataclasses.replace(settings, seeds=(9,), checkpoint_every=7), variant, seed) == key
    assert not {"backbone", "name"} & {f.name for f in dataclasses.fields(settings)}  # no unused engine fields


# ---------------------------------------------------------------------------------------- the models
def _reach(module: torch.nn.Module, x: torch.Tensor, out_index: tuple, in_index: tuple) -> float:
    x = x.clone().requires_grad_(True)
    module(x)[out_index].sum().backward()
    return float(x.grad[in_index].abs().sum())


def test_row_then_column_reaches_off_row_and_off_column_pixels():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 6, 7, dtype=torch.float64)
    for order in ("hv", "vh", "hv_vh"):
        block = RowColumnStack(8, order, reduction=2).double()
        set_gamma(block, 1.0)
        assert _reach(block, x, (0, slice(None), 1, 2), (0, slice(None), 4, 5)) > 0, order
    one = RowColumnStack(8, "hv", reduction=2).double()
    set_gamma(one, 1.0)
    assert _reach(one.paths[0][0], x, (0, slice(None), 1, 2), (0, slice(None), 4, 5)) == 0.0
    with pytest.raises(ValueError, match="order"):
        RowColumnStack(8, "hh", 2)


def test_clip_model_sees_other_frames_only_with_3d_context():
    settings = dataclasses.replace(TINY, task="temporal_cue", size=8, blob_min=2, blob_max=3, frames=5)
    clip = torch.randn(1, 3, 5, 8, 8)
    for variant, expect in ((Variant("3d"), True), (Variant("2d", per_frame=True), False)):
        torch.manual_seed(0)
        model = build_model(settings, variant).eval()
        assert isinstance(model, TinySegmenter) and model(clip)["out"].shape == (1, 4, 8, 8)
        reach = _reach(lambda x, m=model: m(x)["out"], clip, (0, slice(None), 4, 4), (0, slice(None), 0, 4, 4))
        assert (reach > 0) == expect, variant


# ----------------------------------------------------------------------------- exact seeds and resume
def test_same_seed_same_numbers_and_another_seed_differs():
    variant = Variant("r2 + ccl", ccl="piecewise", ccl_channels=4)
    a, b = training.train_one(TINY, variant, 3), training.train_one(TINY, variant, 3)
    c = training.train_one(TINY, variant, 4)
    assert a["miou"] == b["miou"] and a["train_log"] == b["train_log"] and a["gamma"] == b["gamma"]
    assert a["train_log"] != c["train_log"]


def test_a_killed_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    variant = Variant("r2")
    straight = training.train_one(TINY, variant, 1, directory=tmp_path / "straight")
    calls = {"n": 0}
    real = training.F.cross_entropy

    def dies_at_third_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(training.F, "cross_entropy", dies_at_third_step)
    with pytest.raises(KeyboardInterrupt):
        training.train_one(TINY, variant, 1, directory=tmp_path / "killed")
    assert (tmp_path / "killed" / "last.pt").is_file()
    monkeypatch.setattr(training.F, "cross_entropy", real)
    resumed = training.train_one(TINY, variant, 1, directory=tmp_path / "killed")
    assert resumed["miou"] == straight["miou"] and resumed["gamma"] == straight["gamma"]
    assert resumed["train_log"] == straight["train_log"]


def test_finished_runs_are_read_back_not_trained(tmp_path, monkeypatch):
    jobs = [(TINY, Variant("r0", block="none"), 0, tmp_path / "r0")]
    first = training.run_jobs(jobs, workers=1)
    monkeypatch.setattr(training, "train_one", lambda *a, **k: pytest.fail("trained again"))
    again = training.run_jobs(jobs, workers=1)
    assert again[0]["miou"] == first[0]["miou"] and again[0]["settings_hash"] == run_key(TINY, jobs[0][1], 0)


# ------------------------------------------------------------------------------------------- reports
@pytest.mark.parametrize("module", ["ccl_stability", "stacking", "video_context", "gamma_init"])
def test_each_experiment_writes_its_report_and_checks_at_a_tiny_size(tmp_path, module):
    import importlib

    mod = importlib.import_module(f"experiments.mechanisms.{module}")
    argv = [
        "--seeds",
        "0",
        "1",
        "--iterations",
        "2",
        "--workers",
        "1",
        "--runs",
        str(tmp_path / "runs"),
        "--reports",
        str(tmp_path),
    ]
    assert mod.main(argv) == 0
    name = mod.STUDY.name
    md = (tmp_path / f"{name}.md").read_text()
    assert "Mechanism test on CPU" in md and "seed" in md and (tmp_path / f"{name}.png").is_file()
    assert "interval" in md and f"Regenerate with `nox -s {name}`" in md
    assert "mechanism" in (tmp_path / "claims.md").read_text()  # claims.md rebuilt with the recomputed checks
    from experiments.reports.mechanism_checks import mechanism_checks
    from experiments.reports.verdicts import MECHANISM_VERDICTS

    checks = [c for c in mechanism_checks(tmp_path) if c.report == f"{name}.md"]
    assert checks and all(c.verdict in MECHANISM_VERDICTS for c in checks)
    assert any(f"**{c.verdict}**" in md for c in checks)  # the report states the same verdict


def test_iterations_to_learn_needs_two_evaluations_in_a_row():
    from experiments.mechanisms.reports import iterations_to_learn

    assert iterations_to_learn({"curve": [[100, 95.0], [200, 40.0], [300, 91.0], [400, 99.0]]}, 90.0) == 300
    assert iterations_to_learn({"curve": [[100, 95.0], [200, 40.0]]}, 90.0) is None


def test_planned_jobs_put_late_arms_last(tmp_path):
    from experiments.mechanisms import ccl_stability

    study = ccl_stability.STUDY
    settings = dataclasses.replace(study.settings, seeds=(0, 1, 7))
    early, late = study.plan(settings, Path(tmp_path))
    assert [n for n, _ in early][:3] == ["r2", "ccl_quadratic", "ccl_piecewise"] and len(early) == 3 * 3
    late_seeds = [seed for seed in (0, 1, 7) if seed in study.late_seeds]
    assert late_seeds == [0, 1] and [job[2] for _, job in late] == [s for s in late_seeds for _ in study.late_arms]
    assert [n for n, _ in late] == [name for _ in late_seeds for name in study.late_arms]


def test_longrange_ablation_runs_and_reports_on_the_shared_pieces(tmp_path):
    from experiments import longrange

    small = dataclasses.replace(
        longrange.LongRangeSettings(), iterations=2, num_train=16, num_val=8, batch_size=4, seeds=(0,)
    )
    results = longrange.run(small, ["r0", "r2_ccl"], runs=tmp_path / "runs")
    assert [r["variant"] for r in results] == ["r0", "r2_ccl"]
    assert (tmp_path / "runs" / "r0_s0" / "model.pt").is_file() and (
        tmp_path / "runs" / "r2_ccl_s0" / "result.json"
    ).is_file()
    again = longrange.run(small, ["r0"], runs=tmp_path / "runs")  # read back, not trained
    assert again[0]["miou"] == results[0]["miou"]
    md = longrange.write_report(small, results, reports=tmp_path).read_text()
    assert "`r2_ccl`" in md and "Regenerate with `nox -s reproduce_longrange" in md
    assert (tmp_path / "longrange.csv").is_file() and (tmp_path / "longrange.png").is_file()


def test_a_damaged_checkpoint_falls_back_or_starts_over(tmp_path, capsys):
    """A truncated last.pt: the run resumes from last.pt.prev; with no readable checkpoint it starts over."""
    variant = Variant("r2")
    settings = dataclasses.replace(TINY, iterations=6)
    straight = training.train_one(settings, variant, 1)
    directory = tmp_path / "run"
    directory.mkdir()
    from cca.engine.checkpoint import previous_path

    training.train_one(dataclasses.replace(settings, iterations=5), variant, 1, directory=directory)  # saves at 2 and 4
    last = directory / "last.pt"
    assert previous_path(last).is_file()
    last.write_bytes(last.read_bytes()[:500])
    resumed = training.train_one(settings, variant, 1, directory=directory)
    assert "resumed at iteration 2" in capsys.readouterr().out
    assert resumed["miou"] == straight["miou"] and resumed["train_log"] == straight["train_log"]
    for path in (last, previous_path(last)):
        path.write_bytes(b"torn")
    again = training.train_one(settings, variant, 1, directory=directory)
    assert "and its previous copy are unreadable: starting this run over" in capsys.readouterr().out
    assert again["miou"] == straight["miou"] and again["train_log"] == straight["train_log"]


def test_ccl_report_medians_are_true_medians():
    from experiments.mechanisms.ccl_report import _median

    assert _median([4.0, 1.0, 3.0, 2.0]) == 2.5  # not the upper middle value (3.0)
    assert _median([1.0, float("nan"), 5.0, 3.0]) == 3.0 and math.isnan(_median([float("nan")]))


def test_gamma_check_reports_mean_abs_gamma_and_the_same_seed_ratio():
    """Signed gammas of opposite sign average to ~0: the check prints mean |gamma|; the slowdown is the
    ratio on the same seed (550 / 150 = 3.7x), not against the other arm's mean (550 / 120 = 4.6x)."""
    import pandas as pd

    from experiments.reports.mechanism_checks import gamma_check

    rows = [("gamma0", 0, 550.0, 600, "[0.42]"), ("gamma1", 0, 150.0, 200, "[1.1]")]
    rows += [("gamma0", s, None, 800, f"[{g}]") for s, g in ((1, 0.2), (2, -0.21), (3, -0.27), (4, 0.24))]
    rows += [("gamma1", s, 100.0, 150, "[1.1]") for s in (1, 2, 3, 4)]
    frame = pd.DataFrame(rows, columns=["variant", "seed", "iterations_to_learn", "iterations_run", "gamma"])
    check = gamma_check(frame)
    assert "seed 0: 3.7x slower" in check.ours and "4.6x" not in check.ours
    assert "mean |gamma| at the end 0.27 vs 1.10" in check.ours
    assert "1/5" in check.ours and "5/5" in check.ours and check.verdict == "mechanism confirmed"  # Fisher p = 0.048
