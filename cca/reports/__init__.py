"""Generic report pieces: the renderer, plots, attention maps and the operator benchmark report.

The paper-specific reports (claims, tables, efficiency, index) live in ``experiments/reports/``: the library
never reads the paper's values. What made a file: :mod:`cca.provenance`.

* :mod:`cca.reports.render`: the one report renderer (:class:`~cca.reports.render.Report`, ``write_report``,
  ``save_figure``); every generated Markdown report goes through it.
* :mod:`cca.reports.plots`: training curves from a run's ``metrics.jsonl``; bar charts with spread.
* :mod:`cca.reports.attention`: per-pixel criss-cross attention maps (R=1 and the composed R=2 map) of
  any model holding an ``RCCA`` module, and their figures.
* :mod:`cca.reports.operator`: ``reports/operator.md`` from the operator benchmark's results.

Submodules load on first use, so ``import cca.reports`` does not import matplotlib or pandas.
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("attention", "operator", "plots", "render")

__all__ = list(_SUBMODULES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
