"""Resolve: the settings one row runs with at a scale, their key, the device they resolve to, and the smoke
scale derived from a full-scale preset.

Settings of a row = base of the scale (full or smoke) + the row's changes + the command line
(``--data-root``, ``--pretrained``, ``--device``, ``--set key=value``), all applied by the engine's one
parser (:func:`cca.engine.parsing.apply_overrides`: unknown keys and bad values are named).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.cache import identity_hash, result_key
from experiments.spec import SYNTHETIC_AUTO, Options, Row, Table


def apply_changes(settings: Any, changes: Mapping[str, Any] | Sequence[str]) -> Any:
    """A copy of the dataclass ``settings`` with ``changes`` (a dict, or ``key=value`` strings parsed by type)."""
    from cca.engine.parsing import apply_overrides

    return apply_overrides(settings, dict(changes) if isinstance(changes, Mapping) else list(changes))


def field_names(settings: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(settings)}


def run_dir(table: Table, row: Row, options: Options) -> Path:
    """``runs/tableNN/<scale>/<row>``: smoke and full results of a row never replace each other."""
    return Path(options.runs_dir) / f"table{table.number:02d}" / options.scale / row.key


def row_settings(table: Table, row: Row, options: Options) -> Any:
    """The settings one row runs with: base of the scale + row changes + command line."""
    settings = apply_changes(table.base(options.scale), dict(row.changes))
    names = field_names(settings)
    cli: dict[str, Any] = {}
    if options.data_root is not None and "data_root" in names:
        cli["data_root"] = options.data_root
        if "synthetic" in names:
            cli["synthetic"] = False
    if options.pretrained is not None:
        if not Path(options.pretrained).is_file():
            raise FileNotFoundError(f"--pretrained: no file at {options.pretrained}")
        if "pretrained" in names:
            cli["pretrained"] = options.pretrained
    if options.device is not None and "device" in names:
        cli["device"] = options.device
    if "output_dir" in names:
        cli["output_dir"] = str(run_dir(table, row, options))
    if "name" in names:
        cli["name"] = f"table{table.number:02d}_{row.key}"
    settings = apply_changes(settings, cli)
    if options.overrides:
        settings = apply_changes(settings, list(options.overrides))
    if getattr(settings, "synthetic", False) and settings.data_root == SYNTHETIC_AUTO:
        settings = apply_changes(settings, {"data_root": str(synthetic_root(settings, options.runs_dir))})
    return settings


def synthetic_root(settings: Any, runs_dir: Path) -> Path:
    """Where synthetic data of these settings lives: its parameters are in the name, so changing them
    (``--set synthetic_num_train=...``) writes a new data set instead of reusing another."""
    size = "x".join(str(s) for s in settings.synthetic_size)
    name = f"{settings.dataset}-{settings.synthetic_num_train}-{settings.synthetic_num_val}-{size}-s{settings.seed}"
    return Path(runs_dir) / "data" / "synthetic" / name


def settings_dict(settings: Any) -> dict[str, Any]:
    """The settings of a row's run (every field of its settings dataclass), as JSON values."""
    def clean(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [clean(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return {f.name: clean(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def row_identity(table: Table, row: Row, settings: Any) -> dict[str, Any]:
    """What decides a row's result: the table, the row and its resolved settings (the run directory excluded)."""
    data = {k: v for k, v in settings_dict(settings).items() if k != "output_dir"}
    return {"table": table.number, "row": row.key, "settings": data}


def row_key(table: Table, row: Row, settings: Any) -> str:
    """The row's result key (:func:`experiments.cache.result_key`): its identity with its runner's code version."""
    return result_key(row_identity(table, row, settings), table.runner)


def settings_hash(table: Table, row: Row, settings: Any) -> str:
    """The settings-only key of the row results written before :mod:`experiments.cache` (still read back)."""
    return identity_hash(row_identity(table, row, settings))


def smoke_of(full: Any, **changes: Any) -> Any:
    """The smoke scale of a training setting: same model/loss/evaluation recipe, tiny everything else.

    Tiny backbone without pretrained weights, CPU, synthetic data in the dataset's own format
    (written under ``runs/data/synthetic/<parameters>`` on first use: 32 train / 8 val images), 64-pixel
    crops, global batch 8, 300 iterations, whole-image evaluation.
    ``changes`` adjust it per table.
    """
    iterations = changes.pop("iterations", 300)
    synthetic_size = tuple(changes.pop("synthetic_size", (64, 96)))
    crop = tuple(changes.pop("crop_size", (64, 64)))
    batch = changes.pop("batch_size", 8)
    full_pixels = full.crop_size[0] * full.crop_size[1] * full.batch_size
    smoke_pixels = crop[0] * crop[1] * batch
    base = dict(
        backbone="resnet18_tiny",
        pretrained=None,
        synthetic=True,
        synthetic_num_train=32,
        synthetic_num_val=8,
        synthetic_size=synthetic_size,
        crop_size=crop,
        batch_size=batch,
        grad_accum=1,
        iterations=iterations,
        num_workers=0,
        eval_every=max(1, iterations // 3),  # three points on the training curve
        eval_mode="whole",
        eval_crop=None,
        eval_stride=None,
        device="cpu",
        amp="none",
        checkpoint_every=max(1, iterations // 2),
        log_every=1,
        ohem_min_kept=max(1, round(full.ohem_min_kept * smoke_pixels / full_pixels)),
    )
    base.update(changes)
    return dataclasses.replace(full, data_root=SYNTHETIC_AUTO, **base)


def device_of(settings: Any) -> str:
    """The device a row's settings resolve to (``"auto"``: ``"cuda"`` when a GPU is visible, else ``"cpu"``)."""
    import torch

    device = getattr(settings, "device", "cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
