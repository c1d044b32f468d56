"""experiments/: the table runner (settings, resumability, reports) and every table's smoke path."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import pytest

from experiments import report, run, spec
from experiments import settings as resolve
from experiments.cache import produces

# ---------------------------------------------------------------------------------------------
# The machinery, on a fake table whose runner only records its calls
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeSettings:
    iterations: int = 10
    lr: float = 0.1
    device: str = "cpu"
    name: str = ""
    output_dir: str = ""


CALLS: list[tuple[str, int, float]] = []


@produces(version=1)
def fake_runner(table, row, settings, options, directory):
    CALLS.append((row.key, settings.iterations, settings.lr))
    (directory / "partial.txt").write_text("started")
    if row.key == "broken" or settings.lr == 0.5:
        raise RuntimeError("this row always fails")
    log = directory / "metrics.jsonl"
    log.write_text("\n".join(json.dumps({"type": "train", "iter": i, "loss": 1.0 / i}) for i in range(1, 4)) + "\n")
    return {"miou": 10.0 * settings.iterations}


def fake_table(rows=None) -> spec.Table:
    rows = rows or (spec.Row("a", "Row A", {"iterations": 2}), spec.Row("b", "Row B", {"iterations": 3}))
    return spec.Table(
        number=99, topic="demo", title="Demo table", kind="train", metrics=("miou",), rows=tuple(rows),
        full=FakeSettings(iterations=1000), smoke=FakeSettings(), runner=fake_runner,
        shows_full="full text", shows_smoke="smoke text",
    )


@pytest.fixture
def env(tmp_path, monkeypatch):
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "table99_demo.csv").write_text(
        "row,method,miou,ours_row,source,confidence\n"
        "pa,Paper A,25.5,a,paper,verbatim\n"
        "pq,Quoted method,30.0,,paper,secondary\n"
        "pb,Paper B,,b,not found,\n"
    )
    monkeypatch.setattr(spec, "PAPER_DIR", paper)
    CALLS.clear()
    return spec.Options(runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports", command="python -m experiments.run 99")


def test_rows_run_once_and_are_skipped_when_done(env):
    table = fake_table()
    outcome = run.run_table(table, env)
    assert outcome["failed"] == [] and CALLS == [("a", 2, 0.1), ("b", 3, 0.1)]
    record = json.loads((env.runs_dir / "table99" / "smoke" / "a" / "result.json").read_text())
    assert record["metrics"] == {"miou": 20.0} and record["scale"] == "smoke" and len(record["settings_hash"]) == 16
    assert "commit" in record and record["hardware"]
    run.run_table(table, env)
    assert len(CALLS) == 2, "rows with results for the same settings and commit must be skipped"
    run.run_table(table, spec.Options(**{**env.__dict__, "force": True}))
    assert len(CALLS) == 4, "--force re-runs every row"
    run.run_table(table, spec.Options(**{**env.__dict__, "overrides": ("lr=0.25",)}))
    assert CALLS[-2:] == [("a", 2, 0.25), ("b", 3, 0.25)], "changed settings re-run"


def test_report_has_paper_and_ours_side_by_side(env):
    run.run_table(fake_table(), env)
    text = (env.reports_dir / "table99.md").read_text()
    assert text.startswith("# Table 99: Demo table")
    assert "Smoke scale: this is not a reproduction" in text and "smoke text" in text
    assert "25.5 (verbatim)" in text and "20.00" in text and "n/a (smoke)" in text
    assert "not found" in text and "quoted from the paper" in text
    assert "python -m experiments.run 99" in text and "curves/table99_a.png" in text
    assert (env.reports_dir / "curves" / "table99_a.png").is_file()
    frame = pd.read_csv(env.reports_dir / "table99.csv", dtype=str, keep_default_na=False)
    assert set(frame["row"]) == {"pa", "pq", "pb"}
    assert frame.set_index("row").loc["pb", "ours"] == "30.0"
    index_text = (env.reports_dir / "README.md").read_text()
    assert "| 99 |" in index_text and "| smoke |" in index_text


def test_a_failing_row_keeps_its_earlier_result_and_is_listed_on_the_console(env, capsys):
    table = fake_table()
    run.run_table(table, env)
    before = pd.read_csv(env.reports_dir / "table99.csv", dtype=str, keep_default_na=False)
    failing = spec.Options(**{**env.__dict__, "overrides": ("lr=0.5",), "rows": ("b",)})
    outcome = run.run_table(table, failing)
    assert outcome["failed"] == ["b"]
    out = capsys.readouterr().out
    assert "b: FAILED: RuntimeError: this row always fails" in out and "failed: b" in out
    after = pd.read_csv(env.reports_dir / "table99.csv", dtype=str, keep_default_na=False)
    ours = lambda frame, key: list(frame[frame["ours_row"] == key]["ours"])  # noqa: E731
    assert ours(after, "b") == ours(before, "b") == ["30.0"], "a failed row keeps its earlier result"
    assert ours(after, "a") == ["20.0"] and not any(after["status"].str.startswith("failed"))
    text = (env.reports_dir / "table99.md").read_text()
    assert "`b` failed this time (earlier result of" in text and "`a` earlier result" in text


def test_a_failed_run_at_another_scale_leaves_the_report_alone(env, capsys):
    table = fake_table()
    run.run_table(table, env)
    md, index = (env.reports_dir / "table99.md").read_text(), (env.reports_dir / "README.md").read_text()
    full = spec.Options(**{**env.__dict__, "scale": "full", "overrides": ("lr=0.5",), "rows": ("a",)})
    assert run.run_table(table, full) == {"report": None, "failed": ["a"], "ran": []}
    assert "no result at full scale" in capsys.readouterr().out
    assert (env.reports_dir / "table99.md").read_text() == md and (env.reports_dir / "README.md").read_text() == index
    assert (env.runs_dir / "table99" / "smoke" / "a" / "result.json").is_file(), "smoke results are not touched"


def test_a_partial_run_keeps_the_other_rows(env):
    table = fake_table()
    run.run_table(table, spec.Options(**{**env.__dict__, "rows": ("b",)}))
    run.run_table(table, spec.Options(**{**env.__dict__, "rows": ("a",), "force": True}))
    frame = pd.read_csv(env.reports_dir / "table99.csv", dtype=str, keep_default_na=False)
    assert set(frame[frame["ours"] != ""]["ours_row"]) == {"a", "b"}
    text = (env.reports_dir / "table99.md").read_text()
    assert "`a` run this time" in text and "`b` earlier result" in text
    assert "| 99 | Demo table | smoke |" in (env.reports_dir / "README.md").read_text()


def test_full_scale_report_says_full_scale(env):
    run.run_table(fake_table(), spec.Options(**{**env.__dict__, "scale": "full"}))
    text = (env.reports_dir / "table99.md").read_text()
    assert "**Full scale**" in text and "Smoke scale" not in text and "full text" in text
    assert (env.runs_dir / "table99" / "full" / "a" / "result.json").is_file()


def test_rows_take_the_reports_row_names_too(env):
    table = fake_table()
    assert [r.key for r in spec.selected_rows(table, spec.Options(**{**env.__dict__, "rows": ("pa", "b")}))] == ["a", "b"]
    with pytest.raises(ValueError, match=r"the report's row names also work: pa \(= a\), pb \(= b\)"):
        spec.selected_rows(table, spec.Options(**{**env.__dict__, "rows": ("zzz",)}))


def test_smoke_rows_are_labelled_with_their_real_backbone(env):
    tables = run.tables()
    table = tables[1]
    settings = resolve.row_settings(table, table.rows[0], spec.Options(runs_dir=env.runs_dir))
    assert "resnet18_tiny" in report.row_label(table.rows[0], settings)
    assert "ResNet-101" not in report.row_label(table.rows[0], settings)
    full = resolve.row_settings(table, table.rows[0], spec.Options(scale="full", runs_dir=env.runs_dir))
    assert "ResNet-101" in report.row_label(table.rows[0], full)


def test_curves_and_settings_say_what_ran(env, monkeypatch):
    from cca.reports import plots

    titles = []
    real = plots.plot_training_curves
    monkeypatch.setattr(plots, "plot_training_curves", lambda *a, **k: titles.append(k["title"]) or real(*a, **k))
    run.run_table(fake_table(), env)
    assert titles and all("(smoke" in t for t in titles)
    from experiments.report import _settings_text

    text = _settings_text(run.tables()[2])
    assert "| pretrained | ImageNet weights (as the paper" in text and "pretrained | None" not in text
    index = (env.reports_dir / "README.md").read_text()
    assert "`nox -s report`" in index and "(python -m experiments.reports.index)" not in index


def test_each_run_ends_with_its_rows_main_metric(env, capsys):
    run.run_table(fake_table(), env)
    out = capsys.readouterr().out
    assert "[table 99] a: miou 20.00 (smoke scale)" in out and "[table 99] b: miou 30.00 (smoke scale)" in out


def test_ctrl_c_in_a_table_run_prints_one_line(env, monkeypatch, capsys):
    from cca.engine.runtime import TrainingInterrupted

    def interrupted(table, row, options):
        raise TrainingInterrupted(7, 5, options.runs_dir)

    monkeypatch.setattr(run, "run_row", interrupted)
    assert run.main(["2", "--runs-dir", str(env.runs_dir), "--reports-dir", str(env.reports_dir)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted at iteration 7 (table 2 row r0); run the same command again to resume"]


def test_interrupted_row_resumes_in_place_and_changed_settings_start_over(env):
    table = fake_table((spec.Row("broken", "Broken row"),))
    run.run_table(table, env)
    directory = env.runs_dir / "table99" / "smoke" / "broken"
    marker = directory / "kept.txt"
    marker.write_text("checkpoint")
    run.run_table(table, env)  # same settings and commit: the directory (checkpoints) is kept
    assert marker.is_file()
    run.run_table(table, spec.Options(**{**env.__dict__, "overrides": ("iterations=7",)}))
    assert not marker.exists(), "different settings must not resume from another run's files"


def test_settings_errors_name_the_setting(env):
    table = fake_table()
    with pytest.raises(ValueError, match="valid settings: iterations, lr"):
        resolve.row_settings(table, table.rows[0], spec.Options(**{**env.__dict__, "overrides": ("nope=1",)}))
    with pytest.raises(TypeError, match="iterations"):
        resolve.row_settings(table, table.rows[0], spec.Options(**{**env.__dict__, "overrides": ("iterations=many",)}))
    with pytest.raises(ValueError, match="no row"):
        spec.selected_rows(table, spec.Options(**{**env.__dict__, "rows": ("zzz",)}))
    with pytest.raises(ValueError, match="scale"):
        spec.Options(scale="huge")
    with pytest.raises(FileNotFoundError, match="pretrained"):
        resolve.row_settings(table, table.rows[0], spec.Options(pretrained="/no/such/weights.pth"))


# ---------------------------------------------------------------------------------------------
# The command line and the real tables
# ---------------------------------------------------------------------------------------------


def test_list_names_every_table(capsys):
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    numbers = [int(line.split()[0]) for line in out.splitlines()[1:]]
    assert numbers == list(range(1, 10))
    for topic in ("cityscapes_test", "recurrence", "ccl", "context", "efficiency", "ade20k", "lip", "coco", "camvid"):
        assert topic in out


def test_every_entry_matches_its_paper_csv():
    for number, table in run.tables().items():
        assert table.paper_csv.is_file(), f"table {number}: {table.paper_csv} missing"
        paper = pd.read_csv(table.paper_csv, dtype=str, keep_default_na=False)
        ours = {r.key for r in table.rows}
        named = set(paper["ours_row"]) - {""}
        assert named <= ours, f"table {number}: paper rows name rows of ours that do not exist: {named - ours}"
        assert table.metrics[0] in paper.columns, f"table {number}: primary metric {table.metrics[0]} not in the paper CSV"
        assert table.smoke != table.full


def test_full_scale_is_the_papers_setting():
    tables = run.tables()
    cityscapes = tables[2].full
    assert (cityscapes.backbone, cityscapes.crop_size, cityscapes.batch_size, cityscapes.iterations) == ("resnet101", (769, 769), 8, 60000)
    assert (cityscapes.lr, cityscapes.momentum, cityscapes.weight_decay, cityscapes.poly_power, cityscapes.aux_weight) == (0.01, 0.9, 1e-4, 0.9, 0.4)
    assert tables[6].full.crop_size == (512, 512) and tables[6].full.batch_size == 16
    assert tables[7].full.crop_size == (473, 473)
    assert tables[5].full.input_shape == (1, 3, 769, 769) and tables[5].full.backbone == "resnet50"
    assert getattr(tables[5].full, "dataset", None) is None and "iterations" not in resolve.settings_dict(tables[5].full)
    for number in (1, 2, 3, 4, 6, 7):
        smoke = tables[number].smoke
        assert smoke.backbone == "resnet18_tiny" and smoke.synthetic and smoke.device == "cpu"


def test_dry_run_prints_settings_and_plan(capsys, tmp_path):
    assert run.main(["2", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "row r3 (RCCA R=3)" in out and "'recurrence': 3" in out and "planned iterations: 300" in out
    assert "synthetic cityscapes-format data will be written" in out
    assert run.main(["1", "--dry-run", "--scale", "full", "--data-root", str(tmp_path / "none")]) == 2  # named, one line
    out = capsys.readouterr().out
    assert "backbone = 'resnet101'" in out and "NOT FOUND" in out and "planned iterations: 60000" in out


def test_full_scale_without_data_fails_before_training_in_one_line(tmp_path, capsys):
    reports = tmp_path / "reports"
    argv = ["2", "--scale", "full", "--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(reports)]
    assert run.main([*argv, "--data-root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "usage:" not in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert run.main([*argv, "--data-root", str(tmp_path / "empty"), "--rows", "r1"]) == 2
    captured = capsys.readouterr()
    assert "Expected layout" in captured.err and "leftImg8bit" in captured.err
    assert "Traceback" not in captured.err + captured.out and "usage:" not in captured.err
    assert not reports.exists(), "a run that fails writes no report"


def test_settings_errors_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run.main(["2", "--set", "crop_size=12x12", "--runs-dir", str(tmp_path)])
    assert info.value.code == 2 and "'crop_size' expects H,W" in capsys.readouterr().err


# Each table's smoke path, on an even smaller setting (one or two steps, a few synthetic images).
TRAIN_SMALL = ["iterations=1", "synthetic_num_train=2", "synthetic_num_val=1", "batch_size=2", "crop_size=32", "checkpoint_every=1"]
SMALL = {
    1: TRAIN_SMALL,
    2: TRAIN_SMALL,
    3: TRAIN_SMALL,
    4: TRAIN_SMALL,
    5: ["crop_size=33,33"],  # the whole ResNet-50 network on a small crop
    6: TRAIN_SMALL,
    7: TRAIN_SMALL,
    8: ["iterations=1", "synthetic_num_train=2", "synthetic_num_val=1", "checkpoint_every=1"],
    9: TRAIN_SMALL,
}
PERCENT = ("miou", "pixel_acc", "mean_acc", "box_ap", "mask_ap", "box_ap50", "mask_ap50")
ROWS = {8: ["maskrcnn_r50", "maskrcnn_rcca_r50"]}  # the R-101 rows differ only by the backbone


@pytest.mark.slow
@pytest.mark.parametrize("number", sorted(SMALL))
def test_table_smoke_path_writes_its_report(number, tmp_path, monkeypatch):
    monkeypatch.setenv("CCA_BACKEND", "reference")
    argv = [str(number), "--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports"), "--set", *SMALL[number]]
    if number in ROWS:
        argv += ["--rows", *ROWS[number]]
    assert run.main(argv) == 0
    table = run.tables()[number]
    text = (tmp_path / "reports" / f"table{number}.md").read_text()
    assert f"# Table {number}:" in text and "Smoke scale: this is not a reproduction" in text
    frame = pd.read_csv(tmp_path / "reports" / f"table{number}.csv", dtype=str, keep_default_na=False)
    ran = ROWS.get(number, [r.key for r in table.rows])
    for key in ran:
        mine = frame[frame["ours_row"] == key]
        values = [float(v) for v in mine["ours"] if v != ""]
        assert values, f"table {number}: row {key} has no result in the report"
        percent = [float(v) for v, m in zip(mine["ours"], mine["metric"], strict=True) if v != "" and m in PERCENT]
        assert all(v == v for v in values) and all(0.0 <= v <= 100.0 for v in percent)
        done = mine[mine["ours"] != ""]
        expected_scale = [table.metric_scales.get(m, "smoke") for m in done["metric"]]  # table 2's increments: 769x769
        assert list(done["scale"]) == expected_scale and all("synthetic" in d or "no data" in d for d in done["dataset"])
        assert all(d == "" for d in done["diff"]), "a smoke number is not compared with the paper's (n/a (smoke))"
        result = json.loads((tmp_path / "runs" / f"table{number:02d}" / "smoke" / key / "result.json").read_text())
        assert "resnet18_tiny" in result["label"] or "ResNet" not in result["label"] or number in (5, 8)
        metrics_json = tmp_path / "runs" / f"table{number:02d}" / "smoke" / key / "metrics.json"
        if table.kind != "profile":  # run files hold fractions; the report percent
            run_metrics = json.loads(metrics_json.read_text())
            for metric, value in result["metrics"].items():
                if metric in ("gflops_increment", "memory_increment_mb"):  # table 2: profiled, not trained
                    assert number == 2 and value >= 0, (number, key, metric)
                    continue
                assert value == pytest.approx(100.0 * run_metrics[metric], abs=1e-9), (number, key, metric)
    paper = pd.read_csv(table.paper_csv, dtype=str, keep_default_na=False)
    quoted = paper[paper[table.metrics[0]] != ""] if table.metrics[0] in paper.columns else paper.iloc[0:0]
    for _, row in quoted.iterrows():  # every paper value of the primary metric is in the report, unchanged
        line = frame[(frame["row"] == row["row"]) & (frame["metric"] == table.metrics[0])]
        assert list(line["paper"]) == [row[table.metrics[0]]]


# ---------------------------------------------------------------------------------------------
# The long-range ablation's pieces
# ---------------------------------------------------------------------------------------------


def test_feature_statistics_on_known_features():
    import torch

    from experiments.mechanisms.training import feature_statistics

    label = torch.tensor([[[0, 0], [1, 1]]])  # (1, 2, 2)
    feat = torch.zeros(1, 2, 2, 2)
    feat[0, 0, 0, 0], feat[0, 0, 0, 1] = 1.0, -1.0  # class 0: (+1, 0) and (-1, 0): centre 0, spread 1
    feat[0, 1, 1, :] = 4.0  # class 1: both at (0, 4): spread 0
    stats = feature_statistics(feat, label, num_classes=2)
    assert stats["intra_class_spread"] == pytest.approx(0.5)  # mean of the per-class spreads 1 and 0
    assert stats["inter_class_distance"] == pytest.approx(4.0)
    assert stats["inter_over_intra"] == pytest.approx(8.0)


def test_longrange_variants_train_and_the_stem_cannot_reach_the_cue():
    import dataclasses

    from experiments import longrange

    small = dataclasses.replace(longrange.LongRangeSettings(), iterations=2, num_train=16, num_val=8, batch_size=4)
    for variant in ("r0", "r2", "nonlocal", "r2_ccl"):
        result = longrange.train_one(small, variant, seed=0)
        assert 0.0 <= result["miou"] <= 100.0 and result["intra_class_spread"] >= 0.0
    model = longrange.build_model(small, "r2_gamma0")
    assert model.context.cca.gamma.item() == 0.0
    assert longrange.build_model(small, "r2").context.cca.gamma.item() == small.gamma_init
    with pytest.raises(ValueError, match="receptive-field radius"):
        longrange.build_model(dataclasses.replace(small, stem_convs=small.margin), "r0")


@pytest.mark.slow
def test_smoke_run_never_replaces_a_full_scale_report(tmp_path, monkeypatch):
    """`reproduce_all` at smoke scale must not overwrite table 5's full-scale report: the smoke report
    goes to reports/smoke/ and reports/table5.md (+ .csv) stay byte for byte."""
    monkeypatch.setenv("CCA_BACKEND", "reference")
    reports = tmp_path / "reports"
    reports.mkdir()
    full = pd.DataFrame(
        [{c: "" for c in ("row", "method", "metric", "paper", "confidence", "source", "diff", "status", "hardware", "commit", "command")}
         | {"ours_row": "baseline", "ours": "0.0", "scale": "full", "dataset": "no data (module alone)"}]
    )
    full_csv = full.to_csv(index=False)
    (reports / "table5.csv").write_text(full_csv)
    (reports / "table5.md").write_text("# Table 5 (full scale)\n")
    argv = ["5", "--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(reports), "--rows", "baseline", "rcca_r2"]
    assert run.main([*argv, "--set", *SMALL[5]]) == 0
    assert (reports / "table5.csv").read_text() == full_csv
    assert (reports / "table5.md").read_text() == "# Table 5 (full scale)\n"
    smoke = (reports / "smoke" / "table5.md").read_text()
    assert "Smoke scale" in smoke and (reports / "README.md").is_file()
