"""Reports generated from results files and the paper's values (``experiments/paper/*.csv``).

* :mod:`cca.reports.render`: the one report renderer (:class:`~cca.reports.render.Report`, ``write_report``,
  ``save_figure``); every generated Markdown report goes through it.
* :mod:`cca.reports.tables`: paper vs ours tables (pandas -> Markdown and CSV).
* :mod:`cca.reports.plots`: training curves from a run's ``metrics.jsonl``; bar charts with spread.
* :mod:`cca.reports.attention`: per-pixel criss-cross attention maps (R=1 and the composed R=2 map) of
  any model holding an ``RCCA`` module, and their figures.
* :mod:`cca.reports.claims`: ``reports/claims.md``, one row per claim of the paper with a verdict.
* :mod:`cca.reports.efficiency`: ``reports/efficiency.md``, the context blocks alone (data from :mod:`cca.profiling`).
* :mod:`cca.reports.index`: ``reports/README.md``, the index of every table (``python -m cca.reports.index``).
* :mod:`cca.reports.provenance`: what made a file (command, time, hardware, commit).

Submodules load on first use, so ``import cca.reports`` does not import matplotlib or pandas.
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("attention", "claims", "claims_accuracy", "claims_efficiency", "efficiency", "efficiency_text", "index", "plots", "provenance", "render", "tables")

__all__ = list(_SUBMODULES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
