"""Report generation: paper vs ours alignment, Markdown/CSV output, plots, index, attention maps."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import cca
from cca import provenance
from cca.reports import attention, plots
from experiments.reports import index, tables

ROOT = Path(__file__).resolve().parents[1]
PAPER_DIR = ROOT / "experiments" / "paper"

PAPER_CSV = """row,method,miou,pixel_acc,ours_row,source,confidence,confidence_miou,note
a,Method A (ours reproduces),80.5,95.0,ours_a,paper table,verbatim,,
b,Method B (quoted only),78.25,,,paper table,secondary,,
c,Method C (value not found),,,ours_c,not found,,,
d,Method D (ours never ran),70.0,,ours_d,paper,uncertain,secondary,
"""


@pytest.fixture
def paper(tmp_path):
    path = tmp_path / "table99_demo.csv"
    path.write_text(PAPER_CSV)
    return tables.load_paper_table(path)


def _ours():
    return {
        "ours_a": tables.OursResult("A", {"miou": 79.0, "pixel_acc": 94.5}, scale="full", dataset="real", hardware="GPU x", commit="abc"),
        "ours_c": tables.OursResult("C", {"miou": 60.0}, scale="full", dataset="real", hardware="GPU y", commit="def"),
        "ours_extra": tables.OursResult("Extra row", {"miou": 50.0}, scale="smoke"),
    }


def test_compare_aligns_rows_and_marks_missing(paper):
    frame = tables.compare(paper, _ours(), ("miou", "pixel_acc"))
    by = {(r.row, r.metric): r for r in frame.itertuples()}
    a = by[("a", "miou")]
    assert a.paper == 80.5 and a.ours == 79.0 and math.isclose(a.diff, -1.5) and a.confidence == "verbatim"
    assert a.scale == "full" and a.hardware == "GPU x" and a.commit == "abc"
    assert math.isclose(by[("a", "pixel_acc")].diff, -0.5)
    b = by[("b", "miou")]
    assert b.paper == 78.25 and b.ours is None and b.status == tables.QUOTED
    assert ("b", "pixel_acc") not in by  # neither side has it
    c = by[("c", "miou")]
    assert c.paper is None and c.source == tables.NOT_FOUND and c.ours == 60.0 and c.diff is None
    d = by[("d", "miou")]
    assert d.ours is None and d.status == tables.NOT_RUN and d.confidence == "secondary"  # per-metric override
    extra = by[("ours_extra", "miou")]
    assert extra.source == tables.NOT_IN_PAPER and extra.ours == 50.0
    assert list(frame["row"]).index("a") < list(frame["row"]).index("b") < list(frame["row"]).index("ours_extra")


def test_markdown_and_csv_keep_every_row(paper, tmp_path):
    frame = tables.compare(paper, _ours(), ("miou", "pixel_acc"))
    prov = {"command": "python -m experiments.run 99", "time_utc": "2020-01-01 00:00:00Z", "hardware": "CPU test", "commit": "abc123", "torch": "x"}
    md, csv = tables.write_report(
        frame, tmp_path / "table99.md", tmp_path / "table99.csv", title="Table 99: demo", provenance=prov,
        regenerate="nox -s reproduce_table99", summary="What it shows.", notes=["a note"],
    )
    text = md.read_text()
    assert text.startswith("# Table 99: demo")
    for needle in ("python -m experiments.run 99", "2020-01-01", "CPU test", "abc123", "nox -s reproduce_table99", "a note"):
        assert needle in text
    assert "80.5 (verbatim)" in text and "79.00" in text and "-1.50" in text
    assert "not found" in text and "not run" in text and tables.QUOTED in text
    saved = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert len(saved) == len(frame)
    row_a = saved[(saved["row"] == "a") & (saved["metric"] == "miou")].iloc[0]
    assert row_a["paper"] == "80.5" and float(row_a["ours"]) == 79.0 and row_a["command"] == "nox -s reproduce_table99"
    row_d = saved[saved["row"] == "d"].iloc[0]
    assert row_d["ours"] == "" and row_d["status"] == tables.NOT_RUN
    # a smoke result is never compared with the paper's number in the Markdown
    smoke = {**_ours(), "ours_a": tables.OursResult("A", {"miou": 79.0}, scale="smoke")}
    text = tables.to_markdown(tables.compare(paper, smoke, ("miou",)))
    assert "n/a (smoke)" in text and "-1.50" not in text


def test_paper_table_validation(tmp_path):
    with pytest.raises(FileNotFoundError):
        tables.load_paper_table(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("row,method,miou\na,A,1\n")
    with pytest.raises(ValueError, match="ours_row"):
        tables.load_paper_table(bad)
    bad.write_text("row,method,miou,ours_row,source,confidence\na,A,1,x,s,recalled\n")
    with pytest.raises(ValueError, match="confidence"):
        tables.load_paper_table(bad)
    bad.write_text("row,method,miou,ours_row,source,confidence\na,A,eighty,x,s,verbatim\n")
    frame = tables.load_paper_table(bad)
    with pytest.raises(ValueError, match="not a number"):
        tables.compare(frame, {}, ("miou",))


def test_project_paper_tables_are_valid():
    """Every experiments/paper/tableNN_*.csv loads, its numbers parse, values have a source and confidence."""
    files = sorted(PAPER_DIR.glob("table[0-9]*_*.csv"))
    assert len(files) >= 9
    for path in files:
        frame = tables.load_paper_table(path)
        metric_columns = [c for c in frame.columns if c not in (*tables.PAPER_REQUIRED, "note") and not c.startswith("confidence_")]
        for _, row in frame.iterrows():
            numbers = []
            for column in metric_columns:
                try:
                    value, _, confidence = tables.paper_value(row.to_dict(), column)
                except ValueError:
                    continue  # descriptive columns (backbone, split, ...)
                if value is not None and column not in ("recurrence",):
                    numbers.append(column)
                    assert confidence in tables.CONFIDENCES, f"{path.name} row {row['row']}: {column} has no confidence"
            if numbers:
                assert row["source"] and row["source"] != "not found", f"{path.name} row {row['row']} has values but no source"


def test_claims_in_paper_tables_match_the_abstract_claims():
    """The headline numbers in the table CSVs are the abstract's (claims.csv), not retyped differently."""
    claims = pd.read_csv(PAPER_DIR / "claims.csv")
    value = {(r.dataset, r.version): r.value for r in claims.itertuples()}
    t1 = tables.load_paper_table(PAPER_DIR / "table01_cityscapes_test.csv").set_index("row")
    t6 = tables.load_paper_table(PAPER_DIR / "table06_ade20k.csv").set_index("row")
    t7 = tables.load_paper_table(PAPER_DIR / "table07_lip.csv").set_index("row")
    assert float(t1.loc["ccnet_tpami", "miou"]) == value[("Cityscapes", "TPAMI 2020")]
    assert float(t1.loc["ccnet_iccv", "miou"]) == value[("Cityscapes", "ICCV 2019")]
    assert float(t6.loc["ccnet_tpami", "miou"]) == value[("ADE20K", "TPAMI 2020")]
    assert float(t6.loc["ccnet_iccv", "miou"]) == value[("ADE20K", "ICCV 2019")]
    assert float(t7.loc["ccnet_tpami", "miou"]) == value[("LIP", "TPAMI 2020")]


def test_training_curves_png(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"type": "train", "iter": i, "loss": 2.0 / i, "main": 1.5 / i, "lr": 0.01} for i in range(1, 6)]
    rows.append({"type": "eval", "iter": 5, "miou": 0.25})
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn")
    out = plots.plot_training_curves(log, tmp_path / "curves" / "run.png", title="demo")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError):
        plots.plot_training_curves(tmp_path / "none.jsonl", tmp_path / "x.png")
    log.write_text(json.dumps({"type": "eval", "iter": 1, "miou": 0.1}) + "\n")
    with pytest.raises(ValueError, match="no training rows"):
        plots.plot_training_curves(log, tmp_path / "y.png")


def test_index_lists_status_of_each_table(tmp_path):
    paper = tmp_path / "paper"
    paper.mkdir()
    for name in ("table01_alpha.csv", "table02_beta.csv", "table03_gamma.csv", "claims.csv"):
        (paper / name).write_text("row,method,ours_row,source,confidence\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "table1.md").write_text("# Table 1: Alpha title\n")
    pd.DataFrame(
        [
            {"row": "a", "ours_row": "x", "ours": "1.0", "scale": "smoke", "dataset": "synthetic"},
            {"row": "b", "ours_row": "y", "ours": "", "scale": "", "dataset": ""},
        ]
    ).to_csv(reports / "table1.csv", index=False)
    pd.DataFrame([{"row": "a", "ours_row": "x", "ours": "2.0", "scale": "full", "dataset": "real"}]).to_csv(
        reports / "table2.csv", index=False
    )
    text = index.build_index(reports, paper)
    cells = {}
    for line in text.splitlines():
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and row[0].isdigit():
            cells[row[0]] = row
    assert set(cells) == {"1", "2", "3"}
    assert cells["1"][1:5] == ["Alpha title", "smoke", "synthetic", "1/2"]
    assert cells["2"][2] == "full" and cells["2"][6] == "`nox -s reproduce_table2`"
    assert cells["3"][2] == "not run"
    assert "Generated by" in text
    assert text.index("[claims.md](claims.md)") < text.index("| Table")  # the claims page is linked first


# ---------------------------------------------------------------------------------------------
# attention maps
# ---------------------------------------------------------------------------------------------


def test_slots_to_dense_follows_the_slot_order():
    h, w, y, x = 4, 5, 2, 3
    weights = torch.arange(1.0, h + w).view(1, -1)  # slot i has weight i + 1
    dense = attention.slots_to_dense(weights, torch.tensor([y]), torch.tensor([x]), h, w)[0]
    assert torch.equal(dense[y], torch.arange(1.0, w + 1))  # slots 0..W-1: the row, left to right
    others = [r for r in range(h) if r != y]
    assert [dense[r, x].item() for r in others] == [float(w + 1 + i) for i in range(h - 1)]  # then the column
    off = torch.ones(h, w, dtype=torch.bool)
    off[y] = False
    off[:, x] = False
    assert (dense[off] == 0).all()


@pytest.mark.parametrize("h,w", [(5, 7), (6, 4)])
def test_composed_two_loop_map_is_exact(h, w, make_tensor):
    """Aggregating a one-hot position code twice with cca.ca_map gives exactly the composed map."""
    q0, k0 = make_tensor((1, 3, h, w)), make_tensor((1, 3, h, w))
    q1, k1 = make_tensor((1, 3, h, w)), make_tensor((1, 3, h, w))
    a0 = cca.criss_cross_attention_map(q0, k0)
    a1 = cca.criss_cross_attention_map(q1, k1)
    code = torch.eye(h * w, dtype=torch.float64).view(1, h * w, h, w)  # channel c is one-hot at pixel c
    two_loops = cca.ca_map(a1, cca.ca_map(a0, code))
    for y, x in [(0, 0), (h - 1, w - 2), (h // 2, w // 2)]:
        composed = attention.compose([a0[0], a1[0]], y, x)
        expected = two_loops[0, :, y, x].view(h, w)
        torch.testing.assert_close(composed, expected, rtol=1e-10, atol=1e-12)
        assert math.isclose(composed.sum().item(), 1.0, rel_tol=1e-9)
        assert (composed > 0).all(), "two loops reach every pixel"
        one = attention.compose([a0[0]], y, x)
        torch.testing.assert_close(one, cca.ca_map(a0, code)[0, :, y, x].view(h, w), rtol=1e-10, atol=1e-12)
        assert (one == 0).sum() == (h - 1) * (w - 1), "one loop reaches only the cross"


def test_compose_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        attention.compose([], 0, 0)
    with pytest.raises(ValueError, match="outside"):
        attention.compose([torch.rand(3 + 4 - 1, 3, 4)], 3, 0)
    with pytest.raises(ValueError, match=r"\(H\+W-1, H, W\)"):
        attention.compose([torch.rand(5, 3, 4)], 0, 0)


class _TinyModel(torch.nn.Module):
    """Stem that halves the resolution, an RCCA, a classifier: like a segmentor around RCCA."""

    def __init__(self, recurrence: int = 2) -> None:
        super().__init__()
        from cca.nn import RCCA

        self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.rcca = RCCA(16, recurrence=recurrence, reduction=4)
        self.head = torch.nn.Conv2d(16, 3, 1)
        with torch.no_grad():
            self.rcca.cca.gamma.fill_(0.7)

    def forward(self, x):
        return {"out": self.head(self.rcca(self.stem(x)))}


def test_attention_maps_of_a_model_match_its_rcca():
    torch.manual_seed(0)
    model = _TinyModel().double()
    image = torch.randn(3, 20, 28, dtype=torch.float64)
    pixels = [(0, 0), (10, 15), (19, 27)]
    result = attention.attention_maps(model, image, pixels)
    assert result["grid_size"] == (10, 14) and result["grid_pixels"] == [(0, 0), (5, 7), (9, 13)]
    features = model.stem(image.unsqueeze(0))
    loops = model.rcca.attention_maps(features)
    assert len(result["loops"]) == 2
    for mine, theirs in zip(result["loops"], loops, strict=True):
        torch.testing.assert_close(mine.double(), theirs[0].float().double())
    assert set(result["maps"]) == {"R=1", "R=2"}
    for k, (gy, gx) in enumerate(result["grid_pixels"]):
        torch.testing.assert_close(result["maps"]["R=2"][k], attention.compose(result["loops"], gy, gx))
        assert math.isclose(result["maps"]["R=1"][k].sum().item(), 1.0, rel_tol=1e-5)
    # the module alone on the same features gives the same maps
    direct = attention.attention_maps(model.rcca, features, [(5, 7)])
    torch.testing.assert_close(direct["maps"]["R=2"][0], result["maps"]["R=2"][1])
    assert model.training, "the model's training mode is restored"


def test_plot_attention_and_bad_arguments(tmp_path):
    model = _TinyModel(recurrence=1)
    image = torch.randn(3, 16, 16)
    result = attention.attention_maps(model, image, [(8, 8)])
    assert set(result["maps"]) == {"R=1"}
    out = attention.plot_attention(image, result, tmp_path / "att.png", title="demo")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="outside"):
        attention.attention_maps(model, image, [(16, 0)])
    with pytest.raises(TypeError, match="no RCCA"):
        attention.attention_maps(torch.nn.Conv2d(3, 3, 1), image, [(0, 0)])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        attention.attention_maps(model, torch.randn(2, 3, 16, 16), [(0, 0)])


def test_command_line_names_scripts_and_modules_as_typed():
    root = provenance.REPO_ROOT
    assert provenance.command_line([str(root / "experiments" / "run.py"), "2", "--rows", "r1"]) == (
        "python -m experiments.run 2 --rows r1"
    )
    assert provenance.command_line([str(root / "experiments" / "mechanisms" / "__main__.py")]) == (
        "python -m experiments.mechanisms")
    assert provenance.command_line([str(root / "experiments" / "reports" / "index.py")]) == "python -m experiments.reports.index"
    assert provenance.command_line([str(root / "cca" / "__main__.py"), "train"]) == "python -m cca train"
    assert provenance.command_line(["/elsewhere/tool.py", "a b"]) == "python /elsewhere/tool.py 'a b'"


def test_command_line_keeps_python_m_of_any_package(monkeypatch):
    """``python -m experiments.mechanisms --seeds 1`` is recorded as typed, not as the __main__.py path."""
    root = provenance.REPO_ROOT
    monkeypatch.setattr(sys, "orig_argv", ["/env/bin/python", "-m", "experiments.mechanisms", "--seeds", "1"], raising=False)
    monkeypatch.setattr(sys, "argv", [str(root / "experiments" / "mechanisms" / "__main__.py"), "--seeds", "1"])
    assert provenance.command_line() == "python -m experiments.mechanisms --seeds 1"
    monkeypatch.setattr(sys, "orig_argv", ["/env/bin/python", str(root / "experiments" / "run.py"), "2"], raising=False)
    monkeypatch.setattr(sys, "argv", [str(root / "experiments" / "run.py"), "2"])
    assert provenance.command_line() == "python -m experiments.run 2"


def test_training_curves_plot_the_requested_metric(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    rows = [{"type": "train", "iter": i, "loss": 1.0 / i} for i in range(1, 4)]
    rows.append({"type": "eval", "iter": 3, "box_ap": 0.012})
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    import matplotlib.figure

    captured = {}
    savefig = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        axis = fig.axes[1]
        captured["label"] = axis.get_ylabel()
        captured["y"] = [list(line.get_ydata()) for line in axis.get_lines()]
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    plots.plot_training_curves(log, tmp_path / "ap.png", metric="box_ap", metric_label="box AP")
    assert captured["label"] == "val box AP (%)"
    assert captured["y"] == [[pytest.approx(1.2)]]  # a fraction in the log, percent on the axis

