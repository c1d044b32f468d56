"""The paper-specific reports: they read the paper's values (``experiments/paper/*.csv``) and the results on disk.

* :mod:`experiments.reports.tables`: paper vs ours tables (pandas -> Markdown and CSV).
* :mod:`experiments.reports.claims`: ``reports/claims.md``, one row per claim of the paper with a verdict
  (:mod:`~experiments.reports.claims_accuracy`, :mod:`~experiments.reports.claims_efficiency`).
* :mod:`experiments.reports.efficiency`: ``reports/efficiency.md``, the context blocks alone (data from
  :mod:`cca.profiling`; ``python -m experiments.reports.efficiency``), its statements in
  :mod:`~experiments.reports.efficiency_text`.
* :mod:`experiments.reports.index`: ``reports/README.md``, the index of every table
  (``python -m experiments.reports.index``).

The generic pieces stay in the library: :mod:`cca.reports` (renderer, plots, attention maps, the operator
benchmark report) and :mod:`cca.provenance` (what made a file).
"""
