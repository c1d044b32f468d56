"""The paper's settings as data: ``experiments/paper/settings_tpami.csv`` read once (never retyped).

from experiments.paper_settings import CCL_CHANNELS, CITYSCAPES_SCALE_RANGE
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

SETTINGS_CSV = Path(__file__).resolve().parent / "paper" / "settings_tpami.csv"


@cache
def _settings() -> dict[str, str]:
    frame = pd.read_csv(SETTINGS_CSV, dtype=str, keep_default_na=False)
    return dict(zip(frame["setting"], frame["value"], strict=True))


def setting(name: str) -> str:
    """The printed value of ``name`` (a ``setting`` of ``settings_tpami.csv``)."""
    values = _settings()
    if name not in values:
        raise KeyError(f"{name!r} is not in {SETTINGS_CSV}; settings: {', '.join(values)}")
    return values[name]


CCL_CHANNELS = int(setting("ccl_feature_dim"))  # the CCL acts on a 1x1-conv projection to this many channels
CITYSCAPES_SCALE_RANGE = tuple(float(v) for v in setting("cityscapes_random_scale").split("-"))  # (low, high)
