"""A table run in a fresh clone (no ``runs/``, the committed reports only): rows not re-run keep the values the
committed report holds, with their commit and scale, never "not run"."""

from __future__ import annotations

import shutil

import pandas as pd
from test_experiments import CALLS, env, fake_table  # noqa: F401  (env is a fixture)

from experiments import run, spec
from experiments.cache import produces


def _ours(frame: pd.DataFrame, key: str) -> list[str]:
    return list(frame[frame["ours_row"] == key]["ours"])


def test_rows_not_rerun_keep_the_committed_reports_values(env):  # noqa: F811
    table = fake_table()
    run.run_table(table, env)
    before = pd.read_csv(env.reports_dir / "table99.csv", dtype=str, keep_default_na=False)
    commit_a = set(before[before["ours_row"] == "a"]["commit"])
    shutil.rmtree(env.runs_dir)  # a fresh clone: runs/ is not in git, reports/ is
    run.run_table(table, spec.Options(**{**env.__dict__, "rows": ("b",), "overrides": ("lr=0.2",)}))
    assert CALLS[-1] == ("b", 3, 0.2)
    after = pd.read_csv(env.reports_dir / "table99.csv", dtype=str, keep_default_na=False)
    assert _ours(after, "a") == _ours(before, "a") == ["20.0"], "row a lost its committed value"
    assert set(after[after["ours_row"] == "a"]["commit"]) == commit_a and set(after["scale"]) >= {"smoke"}
    text = (env.reports_dir / "table99.md").read_text()
    assert "not run at this scale" not in text, text
    assert "`a` kept from the previous report" in text and "`b` run this time" in text
    assert "curves/table99_a.png" in text, "the committed curve of a kept row stays linked"
    index = (env.reports_dir / "README.md").read_text()
    assert "2/2" in index or "| smoke |" in index


def test_rows_from_a_report_of_another_scale_are_not_carried(env):  # noqa: F811
    table = fake_table()
    run.run_table(table, env)
    shutil.rmtree(env.runs_dir)
    full = spec.Options(**{**env.__dict__, "scale": "full", "rows": ("b",)})
    run.run_table(table, full)
    after = pd.read_csv(env.reports_dir / "table99.csv", dtype=str, keep_default_na=False)
    assert _ours(after, "a") == [""] and set(after[after["ours_row"] == "b"]["scale"]) == {"full"}


def test_a_resumed_row_says_from_which_iteration(env, capsys):  # noqa: F811
    import torch

    from cca.engine import checkpoint

    attempts = []

    @produces(version=1)
    def runner(table, row, settings, options, directory):
        attempts.append(row.key)
        if len(attempts) == 1:  # killed after its checkpoint at iteration 7
            checkpoint.save({"iteration": 7, "model": {"w": torch.zeros(2)}}, directory / "last.pt")
            raise KeyboardInterrupt
        return {"miou": 1.0}

    table = spec.Table(**{**fake_table().__dict__, "runner": runner,
                            "rows": (spec.Row("a", "Row A", {"iterations": 10}),)})
    try:
        run.run_table(table, env)
    except KeyboardInterrupt:
        pass
    capsys.readouterr()
    run.run_table(table, env)
    out = capsys.readouterr().out
    assert "resuming from iteration 7 of 10" in out, out


def test_report_only_rerenders_from_the_results_on_disk_and_trains_nothing(env):  # noqa: F811
    """``--report-only``: a renderer change reaches the committed report without a run (a fresh clone has only
    the report's CSV); every row keeps its value and commit, and nothing is trained."""
    table = fake_table()
    run.run_table(table, env)
    before = pd.read_csv(env.reports_dir / "table99.csv", dtype=str, keep_default_na=False)
    shutil.rmtree(env.runs_dir)
    (env.reports_dir / "table99.md").write_text("stale\n")
    calls = len(CALLS)
    outcome = run.run_table(table, spec.Options(**{**env.__dict__, "report_only": True}))
    assert len(CALLS) == calls and outcome["ran"] == [] and outcome["failed"] == []
    after = pd.read_csv(env.reports_dir / "table99.csv", dtype=str, keep_default_na=False)
    for key in ("a", "b"):
        assert _ours(after, key) == _ours(before, key) and _ours(after, key) != [""]
        assert set(after[after["ours_row"] == key]["commit"]) == set(before[before["ours_row"] == key]["commit"])
    assert (env.reports_dir / "table99.md").read_text() != "stale\n"


def test_report_only_without_any_result_leaves_the_report(env, capsys):  # noqa: F811
    outcome = run.run_table(fake_table(), spec.Options(**{**env.__dict__, "report_only": True}))
    assert outcome["report"] is None and "left as it is" in capsys.readouterr().out
