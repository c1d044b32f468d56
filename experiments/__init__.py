"""The paper's experiments: one entry per table (``tableNN_<topic>.py``), the long-range ablation,
attention maps, and the paper's values as data (``paper/``). Run them with ``experiments/run.py``."""
