"""The settings of the CPU mechanism experiments, the variant description, and the paper's values.

:class:`MechanismSettings` is a small settings dataclass of its own (these runs are not a segmentation
training run): the synthetic task, the tiny model and the training, every field read by the runs, parsed
and type-checked by the engine's one parser (:mod:`cca.engine.parsing`); the training fields keep the
engine's names (``iterations``, ``batch_size``, ``lr``, ``ccl_weight``, ``log_every``, ``eval_every``,
``checkpoint_every``), as the run layer reads them. :class:`Variant` says which context block a run
uses and what is added to it (gamma at init, the category consistent loss, the clip length). A run's
identity (:func:`experiments.mechanisms.training.run_key`, the name of its directory under
``runs/mechanisms/``) hashes :meth:`MechanismSettings.identity`. The paper's values are read from ``experiments/paper/``
(``tables_tpami.csv``, ``settings_tpami.csv``; the shared copy ``../shared/paper/`` when the
project's is not there yet), never typed here.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cca.engine.config import require
from cca.engine.parsing import check_fields, to_json_dict

ROOT = Path(__file__).resolve().parents[2]
PAPER_DIRS = (ROOT / "experiments" / "paper", ROOT.parent / "shared" / "paper", ROOT.parents[1] / "shared" / "paper")
TASKS = ("long_range", "temporal_cue")
BLOCKS = ("none", "rcca", "nonlocal", "hv", "vh", "hv_vh")
CCL_FORMS = ("piecewise", "hinge")
NOT_IN_IDENTITY = ("seeds", "checkpoint_every")  # how many runs, how often a checkpoint: not what a run computes


@dataclass(frozen=True)
class MechanismSettings:
    """Task, model and training of one mechanism experiment (defaults: the long-range ablation).

    Every field is read by the runs (on CPU, one thread per run: exact seeds). The names are part of every
    run's identity (:meth:`identity`): renaming one would orphan the cached runs.
    """

    # --- task: cca.data.long_range.LongRangeTask ("long_range") or cca.data.temporal_cue ("temporal_cue") ---
    task: str = "long_range"
    size: int = 24  # images (frames) are size x size
    num_colours: int = 3  # blob classes (+ background)
    blob_min: int = 4
    blob_max: int = 6
    cue_size: int = 10  # long_range: the cue is cue_size x cue_size
    margin: int = 3  # long_range: gap between the blob's band and the cue (> stem radius)
    cue_contrast: float = 4.0
    noise: float = 0.15
    frames: int = 5  # temporal_cue: clip length (the label is the centre frame's)
    num_train: int = 2048  # generated training samples (a new set per seed)
    num_val: int = 256  # generated val samples (the same for every seed)
    # --- model: stem (3x3 convs per frame) -> context block -> 1x1 classifier ---
    channels: int = 32
    stem_convs: int = 2  # receptive-field radius of the stem (must be < margin on long_range)
    reduction: int = 4  # attention query/key channels = channels // reduction
    gamma_init: float = 1.0  # attention residual weight at init (the paper: 0); a Variant may override it
    # --- training (Adam, cross entropy on every pixel; + ccl_weight x CCL for CCL variants): engine fields ---
    iterations: int = 600
    batch_size: int = 16
    lr: float = 3e-3
    ccl_weight: float = 1.0
    log_every: int = 25  # train rows of metrics.jsonl (loss terms, gamma, feature norm, gradient ratio)
    eval_every: int = 0  # val mIoU every so many iterations (0: only at the end)
    stop_miou_pct: float = 0.0  # > 0: stop once two evaluations in a row reach it (curves of the gamma study)
    checkpoint_every: int = 200  # resumable runs: runs/.../last.pt
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self, self.task in TASKS, "task", f"one of {TASKS}")
        for key in ("num_train", "num_val", "channels", "size", "num_colours", "frames", "reduction", "iterations",
                    "batch_size", "log_every", "checkpoint_every"):
            require(self, getattr(self, key) >= 1, key, "a positive integer")
        for key in ("stop_miou_pct", "ccl_weight", "eval_every"):
            require(self, getattr(self, key) >= 0, key, ">= 0")
        require(self, self.lr > 0, "lr", "> 0")
        if self.task == "long_range" and self.stem_convs >= self.margin:
            raise ValueError(
                f"stem_convs={self.stem_convs} gives a receptive-field radius >= margin={self.margin}: "
                "convolution alone could reach the cue"
            )

    def to_dict(self) -> dict[str, Any]:
        """``{field: JSON value}`` in field order (saved beside a run's model)."""
        return to_json_dict(self)

    def identity(self) -> dict[str, Any]:
        """What decides a run's numbers: every field but the seeds list and the checkpoint cadence."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_IN_IDENTITY}

    def make_task(self) -> Any:
        """The task dataclass of :mod:`cca.data.long_range` or :mod:`cca.data.temporal_cue`, from the
        settings of the same names."""
        if self.task == "long_range":
            from cca.data.long_range import LongRangeTask as Task
        else:
            from cca.data.temporal_cue import TemporalCueTask as Task
        return Task(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Task)})

    def datasets(self, seed: int) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
        """``((train_x, train_y), (val_x, val_y))`` tensors; the training set depends on ``seed``, the val set does not."""
        if self.task == "long_range":
            from cca.data.long_range import LongRangeDataset as Data
        else:
            from cca.data.temporal_cue import TemporalCueDataset as Data
        task = self.make_task()
        return Data(self.num_train, task, seed=1000 + seed).tensors(), Data(self.num_val, task, seed=999_999).tensors()


@dataclass(frozen=True)
class Variant:
    """What one arm of an experiment trains: the context block and what is added to it."""

    label: str
    block: str = "rcca"  # one of BLOCKS: none, rcca (criss-cross, 3D on clips), nonlocal, hv, vh, hv_vh
    recurrence: int = 2  # rcca only
    gamma_init: float | None = None  # None: the settings' gamma_init
    ccl: str | None = None  # None, or the CCL's distance: "piecewise" (the paper's) / "hinge" (quadratic)
    ccl_channels: int | None = None  # None: CCL on the context features; else on a 1x1 projection to that many
    clip_frames: int | None = None  # temporal_cue: frames the model sees (centred); None: all
    per_frame: bool = False  # temporal_cue: 2D context on each frame alone (no time axis)
    ccl_centres: str = "image"  # "image": class centres per image (the CCL's own); "batch": over the whole batch

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got block={self.block!r}")
        if self.ccl is not None and self.ccl not in CCL_FORMS:
            raise ValueError(f"ccl must be None or one of {CCL_FORMS}, got ccl={self.ccl!r}")
        if self.ccl_centres not in ("image", "batch"):
            raise ValueError(f"ccl_centres must be 'image' or 'batch', got ccl_centres={self.ccl_centres!r}")

    def spec(self) -> dict[str, Any]:
        """Everything but the label (two variants with the same spec are the same run)."""
        data = dataclasses.asdict(self)
        data.pop("label")
        if data["ccl_centres"] == "image":  # the default is left out: run keys made before the field existed stay valid
            data.pop("ccl_centres")
        return data


# ----------------------------------------------------------------------------------- paper values
def paper_file(name: str) -> Path:
    """``experiments/paper/<name>`` (or the shared copy); FileNotFoundError naming the places looked at."""
    for directory in PAPER_DIRS:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"paper data file {name!r} not found in any of {[str(d) for d in PAPER_DIRS]}")


@cache
def _rows(name: str) -> tuple[dict[str, str], ...]:
    with paper_file(name).open(newline="") as f:
        return tuple(csv.DictReader(f))


def paper_setting(name: str) -> str:
    """A value of ``settings_tpami.csv`` (e.g. ``ccl_delta_v``), as written there."""
    for row in _rows("settings_tpami.csv"):
        if row["setting"] == name:
            return row["value"]
    raise KeyError(f"setting {name!r} not in {paper_file('settings_tpami.csv')}")


def paper_value(topic: str, row: str, metric: str) -> dict[str, str]:
    """The row of ``tables_tpami.csv`` with this topic, row name and metric (value, unit, source, confidence)."""
    for item in _rows("tables_tpami.csv"):
        if item["topic"] == topic and item["row"] == row and item["metric"] == metric:
            return item
    raise KeyError(f"no row topic={topic!r}, row={row!r}, metric={metric!r} in {paper_file('tables_tpami.csv')}")


def paper_quote(topic: str, row: str, metric: str) -> str:
    """``"<value> <unit> (<confidence>)"`` for a report's paper column."""
    item = paper_value(topic, row, metric)
    return f"{item['value']} {item['unit']} ({item['confidence']})".replace(" percent", "%")


def ccl_loss(form: str):
    """The category consistent loss with the paper's margins and weights (``settings_tpami.csv``) and
    the distance ``form`` ("piecewise" or "hinge"): a :class:`cca.losses.CategoryConsistentLoss`."""
    from cca.losses import CategoryConsistentLoss

    values = {k: float(paper_setting(f"ccl_{k}")) for k in ("delta_v", "delta_d", "alpha", "beta", "gamma")}
    return CategoryConsistentLoss(**values, variance=form)


def ccl_feature_dim() -> int:
    """The paper's CCL projection width (``ccl_feature_dim`` of ``settings_tpami.csv``)."""
    return int(paper_setting("ccl_feature_dim"))
