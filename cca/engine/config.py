"""Experiment settings: one frozen dataclass read top to bottom, named presets, ``key=value`` overrides.

A training run is fully described by one :class:`ExperimentConfig` (extended by :class:`VideoConfig`
and :class:`DetectionConfig` where a table needs more; experiments that are not a segmentation training
run, table 5's profiling and the mechanism studies, have small settings dataclasses of their own, parsed
by the same :func:`apply_overrides`); it is saved as ``config.json`` beside the run's
checkpoints and metrics. Overrides from the command line (``--set key=value``) are parsed against the
field's type (:mod:`cca.engine.parsing`, the one parser); an unknown key is an error that lists the
valid ones, a value out of range an error naming the setting and its valid range::

    cfg = presets.get_config("smoke")
    cfg = apply_overrides(cfg, ["iterations=50", "crop_size=32,64", "pretrained=none"])
    save_config(cfg, "runs/smoke/config.json")

``batch_size`` is the *global* batch (summed over processes and gradient-accumulation steps), as in
the paper ("batch 8 on 4 GPUs" is ``batch_size=8`` with ``torchrun --nproc_per_node 4``). Named presets
(mmsegmentation-style names that tell the whole setup) live in :mod:`cca.engine.presets`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cca._io import atomic_write_json
from cca.data import DATASETS
from cca.data.synthetic import MIN_SIZE
from cca.engine.parsing import (  # noqa: F401  (the one parser, re-exported)
    apply_overrides,
    check_fields,
    parse_value,
    size_fields,
    to_json_dict,
)
from cca.models import BACKBONES, MASK_RCNN_BACKBONES, MODELS

AMP_DTYPES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
EVAL_MODES = ("whole", "slide")
SEED_MAX = 2**32 - 1  # numpy's seed range; torch's is wider


@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of one training/evaluation run (defaults follow the paper's Cityscapes setup)."""

    name: str = "custom"
    # --- model ---------------------------------------------------------------------------------
    model: str = "ccnet"  # a name of cca.models.MODELS
    backbone: str = "resnet101"  # "resnet50", "resnet101", "resnet18_tiny"
    recurrence: int = 2  # R, loops of the shared criss-cross attention
    pretrained: str | None = None  # local path of ImageNet backbone weights (never downloaded)
    # --- data ----------------------------------------------------------------------------------
    dataset: str = "cityscapes"  # a name of cca.data.DATASETS
    data_root: str = "data/cityscapes"
    train_split: str = "train"
    val_split: str = "val"
    synthetic: bool = False  # write synthetic data in the dataset's format to data_root if it is missing
    synthetic_num_train: int = 8
    synthetic_num_val: int = 3
    synthetic_size: tuple[int, int] = (64, 128)  # (H, W) of the synthetic images
    crop_size: tuple[int, int] = (769, 769)  # (H, W) of the training crops
    scale_range: tuple[float, float] = (0.5, 2.0)  # random rescaling before the crop
    flip: bool = True  # random horizontal flip
    num_workers: int = 4  # data-loader processes per rank
    # --- optimisation --------------------------------------------------------------------------
    batch_size: int = 8  # global: over all processes and accumulation steps
    grad_accum: int = 1  # micro-batches per optimiser step and process
    iterations: int = 60000  # optimiser steps
    lr: float = 0.01  # base LR (backbone)
    head_lr_mult: float = 1.0  # LR of everything outside the backbone = lr * head_lr_mult
    momentum: float = 0.9
    weight_decay: float = 1e-4  # the paper's value; the released scripts use 5e-4
    poly_power: float = 0.9  # lr * (1 - it / iterations) ** poly_power
    warmup_iters: int = 0  # linear warm-up steps (0: none)
    warmup_ratio: float = 0.1  # LR factor at the first warm-up step
    # --- loss ----------------------------------------------------------------------------------
    aux_weight: float = 0.4
    ohem: bool = False
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100000
    ccl_weight: float = 0.0  # category consistent loss on outputs["feat"] (0: off)
    ccl_channels: int | None = None  # 1x1-conv projection of the features the CCL sees (the paper: 16); None: none
    ccl_variance: str = "piecewise"  # the CCL's distance: "piecewise" (the paper) or "hinge" (quadratic)
    # --- evaluation ----------------------------------------------------------------------------
    eval_every: int = 0  # evaluate every K iterations (0: only after the last one)
    eval_mode: str = "slide"  # "whole" image or sliding "slide" window
    eval_crop: tuple[int, int] | None = None  # window of the sliding evaluation (None: crop_size)
    eval_stride: tuple[int, int] | None = None  # stride of the window (None: ceil(2/3 * window))
    eval_scales: tuple[float, ...] = (1.0,)
    eval_flip: bool = False
    # --- runtime -------------------------------------------------------------------------------
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda"
    amp: str = "none"  # autocast dtype on CUDA: "none", "bf16", "fp16" (with GradScaler)
    sync_bn: bool = True  # SyncBatchNorm when training on several GPUs
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms, cudnn.benchmark off
    checkpoint_every: int = 1000  # write last.pt every K iterations (and after the last one)
    log_every: int = 1  # one metrics.jsonl row every K iterations
    output_dir: str = ""  # "" -> runs/<name>

    def __post_init__(self) -> None:
        check_fields(self)
        _check_values(self)

    def model_choices(self) -> tuple[str, ...]:
        """The names ``model`` may take (``cca.models.MODELS``)."""
        return MODELS

    def backbone_choices(self) -> tuple[str, ...]:
        """The names ``backbone`` may take (``cca.models.BACKBONES``)."""
        return BACKBONES

    @property
    def run_dir(self) -> Path:
        """Directory of this run's config.json, metrics.jsonl and checkpoints."""
        return Path(self.output_dir or Path("runs") / self.name)

    def to_dict(self) -> dict[str, Any]:
        return to_json_dict(self)


@dataclass(frozen=True)
class VideoConfig(ExperimentConfig):
    """A CamVid run: the engine's settings plus the clip length of the 3D model (``model="ccnet3d"``)."""

    clip_length: int = 3  # frames per clip (the centre one is labelled)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, self.clip_length >= 1 and self.clip_length % 2 == 1, "clip_length", "an odd integer >= 1")


@dataclass(frozen=True)
class DetectionConfig(ExperimentConfig):
    """A Mask R-CNN run: the engine's settings plus the detector's resize and step-decay schedule."""

    rcca: bool = True  # RCCA on the backbone output
    min_size: int = 800  # torchvision's resize: shorter side (standard COCO setting)
    max_size: int = 1333
    lr_steps: tuple[int, ...] = (60000, 80000)  # LR x lr_gamma at each of these iterations
    lr_gamma: float = 0.1

    def model_choices(self) -> tuple[str, ...]:
        return ("mask_rcnn",)  # torchvision's Mask R-CNN (FPN), RCCA on its backbone when rcca=True

    def backbone_choices(self) -> tuple[str, ...]:
        return MASK_RCNN_BACKBONES

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, 1 <= self.min_size <= self.max_size, "min_size", f"in [1, max_size={self.max_size}]")
        require(self, all(s >= 1 for s in self.lr_steps), "lr_steps", "positive iterations")
        require(self, 0.0 < self.lr_gamma <= 1.0, "lr_gamma", "in (0, 1]")
        # Mask R-CNN computes its own losses: the segmentation criterion's settings cannot apply to it
        require(self, not self.ohem, "ohem", "false for Mask R-CNN (it computes its own losses)")
        require(self, self.ccl_weight == 0, "ccl_weight", "0 for Mask R-CNN (it computes its own losses)")


CONFIG_TYPES = (ExperimentConfig, VideoConfig, DetectionConfig)


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


def field_names(cls: type = ExperimentConfig) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def save_config(cfg: ExperimentConfig, path: str | Path, **extra: Any) -> Path:
    """Write ``cfg`` as JSON atomically; ``extra`` items go under keys prefixed with ``_`` (ignored on load)."""
    data = cfg.to_dict()
    data.update({f"_{k}": v for k, v in extra.items()})
    return atomic_write_json(path, data)


def config_from_dict(data: Any, source: str = "config") -> ExperimentConfig:
    """Inverse of :meth:`ExperimentConfig.to_dict` (the smallest config type holding every key);
    keys starting with ``_`` are ignored."""
    if not isinstance(data, dict):
        raise TypeError(f"{source} must hold a JSON object of settings (key: value), got {type(data).__name__} {data!r}")
    clean = {k: v for k, v in data.items() if not k.startswith("_")}
    for cls in CONFIG_TYPES:
        if set(clean) <= set(field_names(cls)):
            return cls(**clean)
    unknown = sorted(set(clean) - set(field_names(ExperimentConfig)))
    raise ValueError(f"unknown setting(s) {unknown}; valid settings: {', '.join(field_names())}")


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"config file {path} is not valid JSON: {err}") from None
    return config_from_dict(data, source=f"config file {path}")


def diff(a: ExperimentConfig, b: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """Settings that differ between two configs: ``{key: (a_value, b_value)}``."""
    return {f.name: (getattr(a, f.name), getattr(b, f.name)) for f in fields(a)
            if getattr(a, f.name) != getattr(b, f.name, None)}


# ---------------------------------------------------------------------------------------------
# Value ranges
# ---------------------------------------------------------------------------------------------


def require(cfg: Any, ok: bool, key: str, expectation: str) -> None:
    """Raise ValueError naming setting ``key``, its value and ``expectation`` unless ``ok``."""
    if not ok:
        raise ValueError(f"setting {key!r} must be {expectation}, got {getattr(cfg, key)!r}")


def _finite(values: Any) -> bool:
    return all(math.isfinite(v) for v in values)


def _check_values(cfg: ExperimentConfig) -> None:
    def need(ok: bool, key: str, expectation: str) -> None:
        require(cfg, ok, key, expectation)

    for key in ("iterations", "batch_size", "grad_accum", "synthetic_num_train", "synthetic_num_val"):
        need(getattr(cfg, key) >= 1, key, "a positive integer")
    need(cfg.recurrence >= 0, "recurrence", "an integer >= 0")
    for key in ("eval_every", "warmup_iters", "num_workers", "ohem_min_kept"):
        need(getattr(cfg, key) >= 0, key, ">= 0")
    for key in ("checkpoint_every", "log_every"):
        need(getattr(cfg, key) >= 1, key, ">= 1")
    for key in ("poly_power", "aux_weight", "ccl_weight", "head_lr_mult"):
        need(getattr(cfg, key) >= 0, key, ">= 0")
    need(math.isfinite(cfg.lr) and cfg.lr > 0, "lr", "finite and > 0")
    need(0.0 <= cfg.momentum < 1.0, "momentum", "in [0, 1)")
    need(math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0, "weight_decay", "finite and >= 0")
    need(cfg.batch_size % cfg.grad_accum == 0, "batch_size",
         f"divisible by grad_accum={cfg.grad_accum} (the global batch is split into that many micro-batches)")
    need(cfg.warmup_iters <= cfg.iterations, "warmup_iters", f"<= iterations={cfg.iterations}")
    need(0.0 < cfg.warmup_ratio <= 1.0, "warmup_ratio", "in (0, 1]")
    need(0.0 <= cfg.ohem_thresh <= 1.0, "ohem_thresh", "in [0, 1]")
    for key in size_fields(type(cfg)):
        value = getattr(cfg, key)
        need(value is None or all(v > 0 for v in value), key, "positive (H, W)")
    need(_finite(cfg.eval_scales) and all(s > 0 for s in cfg.eval_scales), "eval_scales", "finite positive scales, e.g. 0.75,1,1.25")
    need(_finite(cfg.scale_range) and 0 < cfg.scale_range[0] <= cfg.scale_range[1], "scale_range",
         "(low, high) with 0 < low <= high < inf")
    need(0 <= cfg.seed <= SEED_MAX, "seed", f"an integer in [0, {SEED_MAX}]")
    need(cfg.amp in AMP_DTYPES, "amp", f"one of {AMP_DTYPES}")
    need(cfg.device in DEVICES, "device", f"one of {DEVICES}")
    need(cfg.eval_mode in EVAL_MODES, "eval_mode", f"one of {EVAL_MODES}")
    need(cfg.ccl_channels is None or cfg.ccl_channels >= 1, "ccl_channels", "None or a positive integer")
    need(cfg.ccl_variance in ("piecewise", "hinge"), "ccl_variance", "'piecewise' or 'hinge'")
    need(bool(cfg.name) and cfg.name not in (".", "..") and not any(c in cfg.name for c in "/\\\0"), "name",
         "a single directory name (runs/<name>; no '/', not '..'): give a path with --out DIR / output_dir")
    _check_names(cfg)


def _check_names(cfg: ExperimentConfig) -> None:
    """``model``, ``backbone`` and ``dataset`` are names the builders know; synthetic images are large enough."""

    require(cfg, cfg.model in cfg.model_choices(), "model", f"one of {cfg.model_choices()}")
    require(cfg, cfg.backbone in cfg.backbone_choices(), "backbone", f"one of {cfg.backbone_choices()}")
    require(cfg, cfg.dataset is None or cfg.dataset in DATASETS, "dataset", f"one of {DATASETS}")
    require(cfg, all(v >= MIN_SIZE for v in cfg.synthetic_size), "synthetic_size",
            f"at least {MIN_SIZE} in each of (H, W)")

