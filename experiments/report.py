"""Report: ``reports/tableN.md`` + ``.csv`` of one scale, built from every result on disk for that scale,
with training curves, and the index ``reports/README.md``; the labels a row's result carries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cca._io import atomic_write_text
from experiments import spec
from experiments.settings import row_settings, run_dir, settings_dict
from experiments.spec import Options, Row, Table

METRIC_LABELS = {"miou": "mIoU", "box_ap": "box AP", "mask_ap": "mask AP"}
BACKBONE_NAMES = {"resnet101": "ResNet-101", "resnet50": "ResNet-50"}  # as the paper's tables print them


def row_label(row: Row, settings: Any) -> str:
    """The row's label with the backbone it really runs (``resnet18_tiny`` at smoke scale, not "ResNet-101")."""
    backbone = getattr(settings, "backbone", None)
    if backbone is None:
        return row.label
    label = row.label
    actual = BACKBONE_NAMES.get(backbone, backbone)
    for name in BACKBONE_NAMES.values():
        label = label.replace(name, actual)
    return label


def data_label(settings: Any) -> str:
    """``"synthetic <dataset>-format"``, ``"<dataset> (real)"`` or ``"no data (module alone)"``."""
    dataset = getattr(settings, "dataset", None)
    if dataset is None:
        return "no data (module alone)"
    if getattr(settings, "synthetic", False):
        return f"synthetic {dataset}-format"
    return f"{dataset} (real)"


def _ours(results: Mapping[str, Mapping[str, Any]]):
    from experiments.reports.tables import OursResult

    ours = {}
    for key, record in results.items():
        commit = record.get("commit") or ""
        ours[key] = OursResult(
            label=record.get("label", key),
            metrics={k: float(v) for k, v in record["metrics"].items() if v is not None},
            status="done",
            scale=record.get("scale", ""),
            dataset=record.get("dataset", ""),
            hardware=record.get("hardware", ""),
            commit=commit + ("+dirty" if record.get("dirty") else ""),
            command=record.get("command", ""),
        )
    return ours


def label_metric_scales(frame, table: Table):
    """The comparison with each metric of ``table.metric_scales`` labelled with the setting it was measured at
    (in the Scale column) instead of the row's scale."""
    frame = frame.copy()
    for metric, setting in table.metric_scales.items():
        measured = (frame["metric"] == metric) & frame["ours"].notna()
        frame.loc[measured, "scale"] = setting
    return frame


def committed_results(table: Table, options: Options, have: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Results of ``options.scale`` that the report on disk holds for rows without a result in ``runs/``
    (a fresh clone: ``runs/`` is not in git, the reports are): row key -> a result record read back from
    the report's CSV (metrics, scale, dataset, hardware, commit, command; ``from_report`` set)."""
    reports = Path(options.reports_dir)
    carried: dict[str, dict[str, Any]] = {}
    for csv_path in (reports / f"table{table.number}.csv", reports / options.scale / f"table{table.number}.csv"):
        if not csv_path.is_file():
            continue
        import pandas as pd

        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        if not {"ours_row", "metric", "ours", "scale"} <= set(frame.columns):
            continue
        frame = frame[frame["ours"] != ""]
        for row in table.rows:
            mine = frame[frame["ours_row"] == row.key].drop_duplicates("metric")
            # a row of this scale (metrics of table.metric_scales carry their own setting in the scale column)
            if row.key in have or row.key in carried or not (mine["scale"] == options.scale).any():
                continue
            first = mine.iloc[0]
            carried[row.key] = {
                "metrics": {metric: float(value) for metric, value in zip(mine["metric"], mine["ours"], strict=True)},
                "label": row_label(row, row_settings(table, row, options)),  # the backbone of this scale
                **{k: str(first.get(k, "")) for k in ("dataset", "hardware", "commit", "command")},
                "scale": options.scale,
                "from_report": str(csv_path),
            }
    return carried


def _rows_line(table: Table, results: Mapping[str, Mapping[str, Any]], ran: Sequence[str], failed: Sequence[str]) -> str:
    parts = []
    for row in table.rows:
        record = results.get(row.key)
        if row.key in failed:
            parts.append(f"`{row.key}` failed this time" + (f" (earlier result of {record.get('time_utc', '?')} kept)" if record else ""))
        elif record is None:
            parts.append(f"`{row.key}` not run at this scale")
        elif record.get("from_report"):
            parts.append(f"`{row.key}` kept from the previous report (commit {str(record.get('commit', ''))[:10]}; "
                         "its run directory is not on this machine)")
        elif row.key in ran:
            parts.append(f"`{row.key}` run this time")
        else:
            parts.append(f"`{row.key}` earlier result ({record.get('time_utc', '?')}, commit {str(record.get('commit', ''))[:10]})")
    return "Rows: " + "; ".join(parts) + "."


def _holds_full_scale(csv_path: Path) -> bool:
    """Whether a table report's CSV has results of ours at full scale."""
    if not csv_path.is_file():
        return False
    import pandas as pd

    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return "scale" in frame.columns and bool(((frame["scale"] == "full") & (frame["ours"] != "")).any())


def _summary(table: Table, results: Mapping[str, Mapping[str, Any]], scale: str, reads_data: bool,
             ran: Sequence[str], failed: Sequence[str]) -> str:
    """The report's opening: what the scale shows, then which rows ran, were kept or failed."""
    if scale == "full":
        setting = "the paper's setting on the real dataset" if reads_data else "the paper's setting; no dataset needed"
        summary = f"**Full scale** ({setting}). " + table.shows_full
    else:
        summary = (
            "**Smoke scale: this is not a reproduction of the paper's numbers.** "
            + table.shows_smoke
            + " The paper's values are quoted beside ours only to show which number each row will be compared "
            "with once the table runs at full scale (`--scale full` on the real dataset)."
        )
    return summary + "\n\n" + _rows_line(table, results, ran, failed)


def _curves(table: Table, results: Mapping[str, Mapping[str, Any]], options: Options, reports: Path) -> list[str]:
    """Links to each row's training curves (loss and the table's main metric), plotted from its metrics log,
    or the previous report's curve for a row kept from it."""
    from cca.reports import plots

    metric = table.metrics[0]
    metric_label = METRIC_LABELS.get(metric, metric)
    curves = []
    for row in table.rows:
        record = results.get(row.key)
        log = run_dir(table, row, options) / "metrics.jsonl"
        out = reports / "curves" / f"table{table.number}_{row.key}.png"
        if record is not None and record.get("from_report") and out.is_file():  # the previous report's curve
            curves.append(f"[{row.key}](curves/{out.name})")
            continue
        if record is None or not log.is_file():
            continue
        data = record.get("dataset", "")
        title = f"Table {table.number}: {record.get('label', row.label)} ({options.scale}{', ' + data if data else ''})"
        try:
            plots.plot_training_curves(log, out, title=title, metric=metric, metric_label=metric_label)
            curves.append(f"[{row.key}](curves/{out.name})")
        except ValueError as error:  # e.g. a run killed before its first logged step
            curves.append(f"{row.key} (no curve: {error})")
    return curves


def _settings_lines(table: Table, results: Mapping[str, Mapping[str, Any]], scale: str) -> list[str]:
    """One line per row: its changes from the scale's base settings (or why they are not known)."""
    lines = []
    base = settings_dict(table.base(scale))
    for row in table.rows:
        record = results.get(row.key)
        if record and record.get("from_report"):
            lines.append(f"- `{row.key}` ({record['label']}): as in the previous report (its CSV keeps the values, "
                         "not the settings)")
        elif record and "settings" in record:
            changed = {k: v for k, v in record["settings"].items() if base.get(k) != v and k not in ("output_dir", "name")}
            lines.append(f"- `{row.key}` ({record.get('label', row.label)}): {changed or 'base settings'}")
        else:
            lines.append(f"- `{row.key}` ({row.label}): not run at {scale} scale")
    return lines


def _notes(table: Table, missing: bool) -> list[str]:
    return [
        "Paper values come from `experiments/paper/" + table.paper_csv.name + "` with their confidence: "
        "verbatim (read in the paper), secondary (quoted by the authors elsewhere), uncertain (recalled, not re-read)."
        + (
            " 'not found' marks a value of this table that our sources do not give; it is left empty, never guessed."
            if missing
            else ""
        ),
        "Rows quoted from the paper only (other methods) are marked as such; rows of ours that the paper's table "
        "does not have are marked 'not in the paper's table'. `--rows` takes our row keys or the paper's row names.",
        *table.notes,
    ]


def write_table_report(
    table: Table, results: Mapping[str, Mapping[str, Any]], options: Options, ran: Sequence[str] = (), failed: Sequence[str] = ()
) -> Path:
    """``reports/tableN.md`` + ``.csv`` from ``results`` (row key -> result record, all of ``options.scale``),
    training curves and the index ``reports/README.md``. ``ran`` / ``failed``: the rows of this run."""
    from cca.provenance import provenance
    from experiments.reports import index, tables

    reports = Path(options.reports_dir)
    scale = options.scale
    if scale != "full" and _holds_full_scale(reports / f"table{table.number}.csv"):
        # never replace a full-scale report by a smoke one: the smoke report goes beside it
        print(f"[table {table.number}] reports/table{table.number}.md holds full-scale results: kept; "
              f"this {scale} report goes to {reports / scale}/")
        reports = reports / scale
    paper = tables.load_paper_table(table.paper_csv)
    reads_data = getattr(table.full, "dataset", None) is not None  # table 5 reads no data
    regenerate = f"nox -s reproduce_table{table.number}" + (
        "" if scale == "smoke" else f" -- --scale full{' --data-root PATH' if reads_data else ''} ...")
    frame = label_metric_scales(tables.compare(paper, _ours(results), table.metrics, command=options.command), table)
    summary = _summary(table, results, scale, reads_data, ran, failed)
    sections = [("Settings", _settings_text(table) + f"\n\nRows (changes from the {scale} base settings):\n\n"
                  + "\n".join(_settings_lines(table, results, scale)))]
    curves = _curves(table, results, options, reports)
    if curves:
        metric_label = METRIC_LABELS.get(table.metrics[0], table.metrics[0])
        sections.append(("Training curves", f"Loss and val {metric_label} vs iteration ({scale} scale): " + ", ".join(curves) + "."))
    missing = bool((frame["paper"].isna() & (frame["source"] != tables.NOT_IN_PAPER)).any())
    displayed = None
    if table.number == 5:  # the efficiency table reads as the paper prints it, with the verdict on its +NL memory
        from experiments.reports import table5
        from experiments.reports.claims_efficiency import memory_error

        error, _ = memory_error(Path(options.reports_dir))
        displayed = table5.displayed(frame, error)
        summary += "\n\n" + table5.verdict_on_nonlocal_memory(frame, error)
    md, _ = tables.write_report(
        frame,
        reports / f"table{table.number}.md",
        reports / f"table{table.number}.csv",
        title=f"Table {table.number}: {table.title}",
        provenance=provenance(options.device or "cpu", command=options.command or None),
        regenerate=regenerate,
        summary=summary,
        notes=_notes(table, missing),
        sections=sections,
        displayed=displayed,
    )
    index_dir = Path(options.reports_dir)
    from experiments.reports.claims import refresh_claims

    refresh_claims(index_dir, spec.PAPER_DIR)  # claims.md never older than the table it cites
    atomic_write_text(index_dir / "README.md", index.build_index(index_dir, spec.PAPER_DIR))
    print(f"[table {table.number}] wrote {md} and {md.with_suffix('.csv')} ({scale} scale)")
    return md


def _full_value(key: str, value: Any) -> str:
    if key == "pretrained" and value is None:
        return "ImageNet weights (as the paper; a local file: --pretrained PATH)"
    if key == "backbone":
        return f"{value!r} ({BACKBONE_NAMES.get(value, value)})"
    return repr(value)


def _settings_text(table: Table) -> str:
    full = settings_dict(table.full)
    smoke = settings_dict(table.smoke)
    lines = ["| setting | full (paper) | smoke |", "| --- | --- | --- |"]
    for key, value in full.items():
        if key in ("output_dir", "name"):
            continue
        lines.append(f"| {key} | {_full_value(key, value) if 'backbone' in full else repr(value)} | {smoke.get(key)!r} |")
    return "Base settings of the table (each row changes a few):\n\n" + "\n".join(lines)
