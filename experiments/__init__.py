"""The paper's experiments: one entry per table (``tableNN_<topic>.py``), the long-range ablation,
attention maps, and the paper's values as data (``paper/``). Run them from the repository root as
``python -m experiments.<name>``, e.g. ``python -m experiments.run --list``."""

import importlib.util as _util
import sys as _sys

if _util.find_spec("torch") is None:  # e.g. a README command typed with the system `python`
    _sys.exit(
        f"error: {_sys.executable} has no PyTorch; run this with the project's environment, "
        ".nox/cca-env/bin/python (created by the first `nox` session), e.g. .nox/cca-env/bin/python -m experiments.run --list"
    )
