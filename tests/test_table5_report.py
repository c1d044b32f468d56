"""reports/table5.md reads as the paper's efficiency table (experiments.reports.table5)."""

from __future__ import annotations

import pandas as pd

from experiments.reports import table5, tables


def _frame() -> pd.DataFrame:
    rows = []
    for key, gflops, memory, paper_gflops, paper_memory in (
        ("nonlocal", 100.5, 878.6, 108.0, 1411.0),
        ("nonlocal_x2", 201.1, 1311.9, 216.0, 2820.0),
        ("rcca_r1", 8.27, 71.2, None, None),
        ("rcca_r2", 16.54, 141.1, 16.5, 127.0),
        ("nonlocal_batch2", 201.1, 1678.9, None, None),
    ):
        for metric, ours, paper in (("gflops_increment", gflops, paper_gflops), ("memory_increment_mb", memory, paper_memory)):
            rows.append({"row": key, "ours_row": key, "metric": metric, "paper": paper, "ours": ours})
        rows.append({"row": key, "ours_row": key, "metric": "miou", "paper": 77.3 if key == "nonlocal" else None, "ours": None})
    return pd.DataFrame(rows)


def test_table5_is_the_papers_table_with_variants_apart():
    (heading, main), (vheading, variants) = table5.displayed(_frame(), 23.4)
    assert "paper | ours" in heading and "not in the paper's table" in vheading
    assert list(main[""]) == ["+NL", "+NL x2", "+RCCA (R=1)", "+RCCA (R=2)", "+RCCA (R=3)"]
    assert {"GFLOPs: paper", "GFLOPs: ours", "memory (MB): paper", "memory (MB): ours", "mIoU (%): paper", "mIoU (%): ours"} <= set(main.columns)
    by = main.set_index("")
    assert by.loc["+NL", "memory (MB): ours"] == "878.6 ±23% (**does not hold**)"
    assert by.loc["+RCCA (R=2)", "memory (MB): ours"] == "141.1 ±23% (**not resolved**)"
    assert by.loc["+RCCA (R=2)", "GFLOPs: ours"] == "16.54 (**holds**)"
    assert by.loc["+RCCA (R=1)", "GFLOPs: paper"] == "not in our sources" and by.loc["+RCCA (R=3)", "GFLOPs: ours"] == "not run"
    assert by.loc["+NL", "mIoU (%): paper"] == "77.3" and "needs Cityscapes" in by.loc["+NL", "mIoU (%): ours"]
    assert list(variants["row"]) == ["`nonlocal_batch2`"] and "+NL 1411 MB: +19%" in variants["against the paper's"].iloc[0]
    assert not any("done (metric not produced)" in str(v) for v in main.to_numpy().ravel())


def test_table5_states_the_verdict_on_1411_mb():
    text = table5.verdict_on_nonlocal_memory(_frame(), 23.4)
    assert "1411 MB" in text and "**does not hold**" in text and "[673, 1084] MB" in text
    assert "`nonlocal_batch2`" in text  # 1679 ± 23% overlaps 1411 ± 10%: not excluded
    empty = table5.verdict_on_nonlocal_memory(_frame().iloc[0:0], 23.4)
    assert "not compared" in empty


def test_displayed_tables_replace_the_long_list_in_the_markdown(tmp_path):
    frame = tables.compare(
        pd.DataFrame({"row": ["r"], "method": ["m"], "x": [1.0], "ours_row": ["k"], "source": ["s"], "confidence": ["c"]}),
        {},
        ["x"],
    )
    shown = pd.DataFrame({"a": ["shown"]})
    md, csv = tables.write_report(
        frame, tmp_path / "t.md", tmp_path / "t.csv", title="T", provenance={}, regenerate="x", summary="s",
        displayed=[("Mine", shown)],
    )  # fmt: skip
    text = md.read_text()
    assert "## Mine" in text and "shown" in text and "| Row" not in text and csv.is_file()
