"""The one report renderer: every ``reports/*.md`` (+ ``.csv``, figures) is written by :func:`write_report`.

A report is a :class:`Report`: a title, the scale banner, the provenance stamp (command, time,
hardware, commit), a summary, tables (pandas frames, rendered as Markdown), notes, free sections and
figures. The Markdown and every CSV are written atomically (:mod:`cca._io`), so a failed run never
leaves a half-written report. Reports are generated from results on disk, never edited by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cca._io import atomic_write_text, temporary_beside
from cca.provenance import stamp

SCALE_BANNERS = {
    "smoke": "**Smoke scale**: synthetic data in the dataset's format, a tiny backbone, CPU. It shows that the "
    "pipeline works end to end; a smoke number is not a reproduction of the paper's number.",
    "full": "**Full scale**: the paper's setting.",
    "cpu-mechanism": "**Mechanism test on CPU**: a small synthetic task built so that the paper's mechanism decides "
    "the result; it tests the mechanism, not the paper's benchmark number.",
}


@dataclass
class Report:
    """What a generated Markdown report says, top to bottom."""

    title: str
    provenance: Mapping[str, Any]
    regenerate: str  # the command that rebuilds this file
    scale: str = ""  # a key of SCALE_BANNERS, or free text for the banner; "" for none
    summary: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (heading or "", frame)
    notes: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)  # (heading, Markdown body)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, file name relative to the report)

    def markdown(self) -> str:
        parts = [f"# {self.title}\n\n", stamp(dict(self.provenance), self.regenerate)]
        if self.scale:
            parts.append("\n" + SCALE_BANNERS.get(self.scale, self.scale) + "\n")
        if self.summary.strip():
            parts.append(f"\n{self.summary.strip()}\n")
        for heading, frame in self.tables:
            if heading:
                parts.append(f"\n## {heading}\n")
            parts.append("\n" + markdown_table(frame) + "\n")
        notes = [n for n in self.notes if n]
        if notes:
            parts.append("\nNotes:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
        for heading, body in self.sections:
            parts.append(f"\n## {heading}\n\n{body.strip()}\n")
        for caption, name in self.figures:
            parts.append(f"\n![{caption}]({name})\n")
        return "".join(parts)


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub Markdown table (no index); an empty frame reads "(no rows)"."""
    if frame.empty:
        return "(no rows)"
    return frame.to_markdown(index=False)


def write_report(report: Report, md_path: str | Path, csvs: Mapping[str | Path, pd.DataFrame] = ()) -> Path:
    """Write each CSV (path -> frame), then the Markdown (with a link to each CSV); all atomically."""
    md_path = Path(md_path)
    links = []
    for csv_path, frame in dict(csvs).items():
        csv_path = Path(csv_path)
        atomic_write_text(csv_path, frame.to_csv(index=False))
        try:
            links.append(csv_path.relative_to(md_path.parent).as_posix())
        except ValueError:
            links.append(csv_path.as_posix())
    text = report.markdown()
    if links:
        text += "\nCSV: " + ", ".join(f"[{name}]({name})" for name in links) + "\n"
    return atomic_write_text(md_path, text)


def save_figure(fig: Any, path: str | Path, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure (parents created), close it, return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(path, suffix=f".tmp{path.suffix}")  # the suffix tells matplotlib the format
    os.close(fd)
    try:
        fig.savefig(tmp, **savefig_kwargs)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path
