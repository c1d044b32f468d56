"""Table reports read as what was run: one run quoted beside several paper rows says it is the same run,
and a metric measured at another setting than the row's scale (table 2's increments) says which."""

from __future__ import annotations

import pandas as pd

from experiments.reports import tables


def _paper() -> pd.DataFrame:
    return pd.DataFrame(
        [{"row": "p1", "method": "A", "miou": "81.9", "ours_row": "r2", "source": "s", "confidence": "verbatim"},
         {"row": "p2", "method": "B", "miou": "81.4", "ours_row": "r2", "source": "s", "confidence": "verbatim"}]
    )


def test_one_run_beside_several_paper_rows_says_it_is_the_same_run():
    ours = {"r2": tables.OursResult(label="R=2", metrics={"miou": 49.6}, scale="smoke")}
    shown = tables.display_frame(tables.compare(_paper(), ours, ("miou",)))
    assert list(shown["Ours"]) == ["49.60", "49.60 (same run as `p1`)"]


def test_table2_increments_are_labelled_with_the_setting_they_were_measured_at():
    from experiments.table02_recurrence import TABLE

    assert set(TABLE.metric_scales) == {"gflops_increment", "memory_increment_mb"}
    assert all("769" in text and "ResNet-101" in text for text in TABLE.metric_scales.values())
    ours = {"r2": tables.OursResult(label="R=2", metrics={"miou": 49.6, "gflops_increment": 16.5}, scale="smoke")}
    paper = _paper().assign(gflops_increment="")
    frame = tables.compare(paper, ours, ("miou", "gflops_increment"))
    from experiments.report import label_metric_scales

    shown = tables.display_frame(label_metric_scales(frame, TABLE))
    scales = dict(zip(shown["Metric"] + shown["Row"], shown["Scale"], strict=True))
    assert scales["mioup1"] == "smoke" and "769" in scales["gflops_incrementp1"]


def test_mechanism_bars_show_readable_labels_and_whole_whiskers(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.mechanisms import common as mech
    from experiments.mechanisms.stats import t_interval

    results = [{"name": "r2", "miou": v} for v in (99.0, 100.0, 60.0)] + [{"name": "ccl", "miou": v} for v in (98.0, 99.5)]
    captured = {}
    from cca.reports import render

    def keep(fig, path):
        captured["fig"] = fig
        return path

    monkeypatch.setattr(render, "save_figure", keep)
    mech.bar_figure(results, ["r2", "ccl"], tmp_path / "x.png", "t", labels={"r2": "RCCA R=2, no CCL", "ccl": "CCL"})
    ax = captured["fig"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["RCCA R=2, no CCL", "CCL"]
    top = max(t_interval([99.0, 100.0, 60.0])[1], t_interval([98.0, 99.5])[1])
    assert ax.get_ylim()[1] >= top, (ax.get_ylim(), top)
    plt.close(captured["fig"])


def test_a_training_curve_plots_its_metric_on_the_whole_percent_scale(tmp_path, monkeypatch):
    import json

    from cca.reports import plots

    log = tmp_path / "metrics.jsonl"
    rows = [{"type": "train", "iter": i, "loss": 1.0 / i} for i in range(1, 5)]
    rows += [{"type": "eval", "iter": i, "miou": m} for i, m in ((2, 0.41), (4, 0.49))]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    captured = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: captured.setdefault("fig", fig) and path)
    plots.plot_training_curves(log, tmp_path / "c.png", title="t")
    low, high = captured["fig"].axes[1].get_ylim()
    assert low <= 0.0 and high >= 100.0, (low, high)
