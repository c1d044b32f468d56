"""Experiment settings: one frozen dataclass read top to bottom, named presets, ``key=value`` overrides.

A run is fully described by one :class:`ExperimentConfig`; it is saved as ``config.json`` beside the
run's checkpoints and metrics. Overrides from the command line (``--set key=value``) are parsed
against the field's type; an unknown key is an error that lists the valid ones::

    cfg = get_config("smoke")
    cfg = apply_overrides(cfg, ["iterations=50", "crop_size=32,64", "pretrained=none"])
    save_config(cfg, "runs/smoke/config.json")

``batch_size`` is the *global* batch (summed over processes and gradient-accumulation steps), as in
the paper ("batch 8 on 4 GPUs" is ``batch_size=8`` with ``torchrun --nproc_per_node 4``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

AMP_DTYPES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
EVAL_MODES = ("whole", "slide")


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
        for f in fields(self):
            value = getattr(self, f.name)
            checked = _check_type(f.name, value, _field_types()[f.name])
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        _check_values(self)

    @property
    def run_dir(self) -> Path:
        """Directory of this run's config.json, metrics.jsonl and checkpoints."""
        return Path(self.output_dir or Path("runs") / self.name)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


# ---------------------------------------------------------------------------------------------
# Overrides, JSON
# ---------------------------------------------------------------------------------------------


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(ExperimentConfig))


def apply_overrides(cfg: ExperimentConfig, overrides: typing.Iterable[str] | dict[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with ``key=value`` strings (parsed by field type) or a dict of values applied.

    Raises ``ValueError`` for an unknown key (listing the valid ones) or a malformed item,
    ``TypeError`` for a value that does not fit the field's type.
    """
    types_ = _field_types()
    changes: dict[str, Any] = {}
    items = overrides.items() if isinstance(overrides, dict) else (_split_item(o) for o in overrides)
    for key, value in items:
        if key not in types_:
            raise ValueError(f"unknown setting {key!r}; valid settings: {', '.join(field_names())}")
        changes[key] = parse_value(key, value, types_[key]) if isinstance(value, str) else value
    return dataclasses.replace(cfg, **changes)


def save_config(cfg: ExperimentConfig, path: str | Path, **extra: Any) -> Path:
    """Write ``cfg`` as JSON; ``extra`` items go under keys prefixed with ``_`` (ignored on load)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cfg.to_dict()
    data.update({f"_{k}": v for k, v in extra.items()})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Inverse of :meth:`ExperimentConfig.to_dict`; keys starting with ``_`` are ignored."""
    clean = {k: v for k, v in data.items() if not k.startswith("_")}
    unknown = sorted(set(clean) - set(field_names()))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; valid settings: {', '.join(field_names())}")
    return ExperimentConfig(**clean)


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    return config_from_dict(json.loads(path.read_text()))


def diff(a: ExperimentConfig, b: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """Settings that differ between two configs: ``{key: (a_value, b_value)}``."""
    return {f.name: (getattr(a, f.name), getattr(b, f.name)) for f in fields(a) if getattr(a, f.name) != getattr(b, f.name)}


# ---------------------------------------------------------------------------------------------
# Parsing and checking values against the field types
# ---------------------------------------------------------------------------------------------

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(ExperimentConfig)


def _split_item(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"override must look like key=value, got {item!r}")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if typing.get_origin(tp) is None else str(tp).replace("typing.", "")


def parse_value(key: str, text: str, tp: Any) -> Any:
    """Parse the command-line text of setting ``key`` into type ``tp`` (raises TypeError if it does not fit)."""
    inner = _optional_inner(tp)
    if inner is not None:
        if text.strip().lower() in ("none", "null", ""):
            return None
        return parse_value(key, text, inner)
    expected = _type_name(tp)
    bad = TypeError(f"setting {key!r} expects {expected}, got {text!r}")
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise bad
    if tp is int:
        try:
            return int(text.strip())
        except ValueError:
            raise bad from None
    if tp is float:
        try:
            return float(text.strip())
        except ValueError:
            raise bad from None
    if tp is str:
        return text
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        parts = [p for p in text.strip().strip("()[]").split(",") if p.strip()]
        elem = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            if not parts:
                raise bad
        elif len(parts) == 1 and len(set(args)) == 1:
            parts = parts * len(args)  # "769" -> (769, 769)
        elif len(parts) != len(args):
            raise TypeError(f"setting {key!r} expects {expected} ({len(args)} comma-separated values), got {text!r}")
        return tuple(parse_value(key, p, elem) for p in parts)
    raise TypeError(f"setting {key!r} has unsupported type {expected}")


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked against ``tp`` (lists become tuples, ints become floats); raises TypeError."""
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else _check_type(key, value, inner)
    expected = _type_name(tp)
    bad = TypeError(f"setting {key!r} expects {expected}, got {type(value).__name__} {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return value if isinstance(value, float) else float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (tuple, list)):
            raise bad
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            if len(value) == 0:
                raise bad
            elems = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise bad
            elems = list(args)
        return tuple(_check_type(key, v, t) for v, t in zip(value, elems, strict=True))
    raise TypeError(f"setting {key!r} has unsupported type {expected}")


def _check_values(cfg: ExperimentConfig) -> None:
    def need(ok: bool, key: str, expectation: str) -> None:
        if not ok:
            raise ValueError(f"setting {key!r} must be {expectation}, got {getattr(cfg, key)!r}")

    for key in ("iterations", "batch_size", "grad_accum", "recurrence", "synthetic_num_train", "synthetic_num_val"):
        need(getattr(cfg, key) >= (0 if key == "recurrence" else 1), key, "a positive integer")
    for key in ("eval_every", "warmup_iters", "num_workers", "ohem_min_kept"):
        need(getattr(cfg, key) >= 0, key, ">= 0")
    for key in ("checkpoint_every", "log_every"):
        need(getattr(cfg, key) >= 1, key, ">= 1")
    for key in ("lr", "momentum", "weight_decay", "poly_power", "aux_weight", "ccl_weight", "head_lr_mult"):
        need(getattr(cfg, key) >= 0, key, ">= 0")
    need(cfg.lr > 0, "lr", "> 0")
    need(0.0 < cfg.warmup_ratio <= 1.0, "warmup_ratio", "in (0, 1]")
    need(0.0 <= cfg.ohem_thresh <= 1.0, "ohem_thresh", "in [0, 1]")
    for key in ("crop_size", "synthetic_size", "eval_crop", "eval_stride"):
        value = getattr(cfg, key)
        need(value is None or all(v > 0 for v in value), key, "positive (H, W)")
    need(all(s > 0 for s in cfg.eval_scales), "eval_scales", "positive scales")
    need(0 < cfg.scale_range[0] <= cfg.scale_range[1], "scale_range", "(low, high) with 0 < low <= high")
    need(cfg.amp in AMP_DTYPES, "amp", f"one of {AMP_DTYPES}")
    need(cfg.device in DEVICES, "device", f"one of {DEVICES}")
    need(cfg.eval_mode in EVAL_MODES, "eval_mode", f"one of {EVAL_MODES}")
    need(cfg.ccl_channels is None or cfg.ccl_channels >= 1, "ccl_channels", "None or a positive integer")
    need(cfg.ccl_variance in ("piecewise", "hinge"), "ccl_variance", "'piecewise' or 'hinge'")
    need(bool(cfg.name), "name", "a non-empty string")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ---------------------------------------------------------------------------------------------
# Presets. Each header gives the launch command and what the run should reach.
# ---------------------------------------------------------------------------------------------

# python -m cca train --config smoke
# CPU, a few seconds: tiny backbone on synthetic Cityscapes-format data written on first use;
# the loss falls, last.pt / best.pt / metrics.jsonl / config.json appear in runs/smoke.
_SMOKE = ExperimentConfig(
    name="smoke",
    model="ccnet",
    backbone="resnet18_tiny",
    recurrence=2,
    dataset="cityscapes",
    data_root="data/synthetic/cityscapes",
    synthetic=True,
    synthetic_num_train=8,
    synthetic_num_val=3,
    synthetic_size=(64, 128),
    crop_size=(64, 64),
    num_workers=0,
    batch_size=2,
    iterations=20,
    lr=0.01,
    eval_every=10,
    eval_mode="whole",
    device="cpu",
    checkpoint_every=5,
    deterministic=True,
)

# torchrun --nproc_per_node 4 -m cca train --config cityscapes_r101_769 --set pretrained=PATH
# The paper's Cityscapes setting (TPAMI 2020): ResNet-101 (output stride 8), RCCA R=2, crop 769,
# global batch 8, 60k iterations, SGD lr 0.01 / momentum 0.9 / wd 1e-4, poly 0.9, aux 0.4,
# single-scale sliding-window evaluation on val. Target: the released code's val mIoU in
# experiments/paper/official_code.csv.
_CITYSCAPES_R101_769 = ExperimentConfig(
    name="cityscapes_r101_769",
    # model: ResNet-101 (output stride 8) + RCCA with R=2 + auxiliary FCN head on res4
    model="ccnet",
    backbone="resnet101",
    recurrence=2,
    pretrained=None,  # ImageNet weights: --set pretrained=PATH
    # data: Cityscapes fine, 769x769 crops, random scale and flip
    dataset="cityscapes",
    data_root="data/cityscapes",
    train_split="train",
    val_split="val",  # test labels are not public
    crop_size=(769, 769),
    scale_range=(0.75, 2.0),  # the paper (settings_tpami.csv); the released code uses 0.5-2.0
    flip=True,
    # optimisation: SGD, lr 0.01, momentum 0.9, weight decay 1e-4, poly 0.9, global batch 8, 60k steps
    batch_size=8,
    iterations=60000,
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
    poly_power=0.9,
    # loss: cross entropy + 0.4 x auxiliary; OHEM and the category consistent loss off
    aux_weight=0.4,
    ohem=False,
    ohem_thresh=0.7,  # the released code's OHEM flags: --ohem-thres 0.7 --ohem-keep 100000
    ohem_min_kept=100000,
    ccl_weight=0.0,
    # evaluation: single-scale sliding 769x769 window, as the released code's val numbers
    eval_every=10000,
    eval_mode="slide",
    eval_crop=(769, 769),
    eval_scales=(1.0,),
    eval_flip=False,
    device="auto",
    checkpoint_every=1000,
)

PRESETS: dict[str, ExperimentConfig] = {c.name: c for c in (_SMOKE, _CITYSCAPES_R101_769)}


def get_config(name: str) -> ExperimentConfig:
    """The preset called ``name``, or the config saved in a ``config.json`` at that path."""
    if name in PRESETS:
        return PRESETS[name]
    if name.endswith(".json"):
        return load_config(name)
    raise ValueError(f"config must be one of {sorted(PRESETS)} or a path to a config.json, got {name!r}")
