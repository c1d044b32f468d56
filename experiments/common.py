"""Shared machinery of the table entries: row settings, resumable runs, results, reports.

A table entry (``experiments/tableNN_<topic>.py``) defines one :class:`Table`: the paper's full-scale
settings (one dataclass read top to bottom), a smoke scale derived from them, the rows of the paper's
table that our code produces (each a few settings changed from the base), and how one row runs
(``runner``). :func:`run_table` does the rest:

* settings of a row = base (full or smoke) + the row's changes + the command line
  (``--data-root``, ``--pretrained``, ``--device``, ``--set key=value``);
* results go to ``runs/tableNN/<row>/result.json`` with the hash of the settings and the commit;
  a row whose result exists for the same settings and commit is skipped (``--force`` re-runs it),
  an interrupted training run with the same settings and commit resumes from its ``last.pt``;
* ``reports/tableN.md`` + ``.csv`` (paper vs ours), training curves, ``reports/README.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAPER_DIR = ROOT / "experiments" / "paper"
# Relative to the working directory, which `experiments/run.py` sets to the repository root: the
# settings, results and reports then name portable paths (runs/..., reports/...).
RUNS_DIR = Path("runs")
REPORTS_DIR = Path("reports")
SCALES = ("smoke", "full")
SYNTHETIC_AUTO = "runs/data/synthetic/auto"  # smoke data root: resolved per row to runs/data/synthetic/<params>
KINDS = ("train", "profile", "detection")

if str(ROOT) not in sys.path:  # so `python experiments/run.py` imports the entries as `experiments.*`
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------------------
# Tables and rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of the paper's table that our code produces."""

    key: str  # results go to runs/tableNN/<key>/; paper rows name it in their `ours_row` column
    label: str  # what the row is, e.g. "RCCA R=2"
    changes: Mapping[str, Any] = field(default_factory=dict)  # settings changed from the table's base


@dataclass(frozen=True)
class Options:
    """What the command line asks for (see ``experiments/run.py --help``)."""

    scale: str = "smoke"
    data_root: str | None = None
    pretrained: str | None = None
    device: str | None = None
    nproc: int = 1
    dry_run: bool = False
    force: bool = False
    overrides: tuple[str, ...] = ()  # --set key=value
    rows: tuple[str, ...] = ()  # --rows: only these row keys (default: all)
    runs_dir: Path = RUNS_DIR
    reports_dir: Path = REPORTS_DIR
    command: str = ""  # the command line that regenerates the report

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if not isinstance(self.nproc, int) or self.nproc < 1:
            raise ValueError(f"nproc must be a positive int, got {self.nproc!r}")
        if self.device not in (None, "cpu", "cuda", "auto"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {self.device!r}")


Runner = Callable[["Table", Row, Any, Options, Path], dict[str, float]]


@dataclass(frozen=True)
class Table:
    """One paper table: settings at both scales, our rows, how a row runs, what the report says."""

    number: int
    topic: str  # file topic: experiments/tableNN_<topic>.py, experiments/paper/tableNN_<topic>.csv
    title: str
    kind: str  # "train" (engine), "profile" (profiling harness), "detection" (Mask R-CNN loop)
    metrics: tuple[str, ...]  # metric columns compared with the paper, primary first
    rows: tuple[Row, ...]
    full: Any  # the paper's setting (a dataclass)
    smoke: Any  # derived from `full`
    runner: Runner
    shows_full: str  # what the table shows at full scale
    shows_smoke: str  # what a smoke run shows (never a reproduction of the paper's numbers)
    notes: tuple[str, ...] = ()  # settings not found in the paper, deviations, caveats

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        keys = [r.key for r in self.rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"table {self.number}: duplicate row keys {keys}")

    @property
    def paper_csv(self) -> Path:
        return PAPER_DIR / f"table{self.number:02d}_{self.topic}.csv"

    def base(self, scale: str) -> Any:
        return self.full if scale == "full" else self.smoke


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _field_types(settings: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(settings))


def apply_changes(settings: Any, changes: Mapping[str, Any] | Sequence[str]) -> Any:
    """A copy of the dataclass ``settings`` with ``changes`` (a dict, or ``key=value`` strings parsed by type).

    Raises ``ValueError`` for an unknown key (listing the valid ones), ``TypeError`` for a bad value.
    """
    from cca.engine.config import ExperimentConfig, apply_overrides, parse_value

    if isinstance(settings, ExperimentConfig):
        return apply_overrides(settings, changes if isinstance(changes, Mapping) else list(changes))
    types = _field_types(settings)
    items: list[tuple[str, Any]] = []
    if isinstance(changes, Mapping):
        items = list(changes.items())
    else:
        for item in changes:
            if "=" not in item:
                raise ValueError(f"override must look like key=value, got {item!r}")
            key, value = item.split("=", 1)
            items.append((key.strip(), value.strip()))
    parsed = {}
    for key, value in items:
        if key not in types:
            raise ValueError(f"unknown setting {key!r}; valid settings: {', '.join(types)}")
        parsed[key] = parse_value(key, value, types[key]) if isinstance(value, str) and types[key] is not str else value
    return dataclasses.replace(settings, **parsed)


def row_settings(table: Table, row: Row, options: Options) -> Any:
    """The settings one row runs with: base of the scale + row changes + command line."""
    settings = apply_changes(table.base(options.scale), dict(row.changes))
    names = set(_field_types(settings))
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
    def clean(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [clean(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return {f.name: clean(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def settings_hash(table: Table, row: Row, settings: Any) -> str:
    """Hash of what decides a row's result (the run directory itself excluded)."""
    data = {k: v for k, v in settings_dict(settings).items() if k != "output_dir"}
    blob = json.dumps({"table": table.number, "row": row.key, "settings": data}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_dir(table: Table, row: Row, options: Options) -> Path:
    return Path(options.runs_dir) / f"table{table.number:02d}" / row.key


# ---------------------------------------------------------------------------------------------
# Running rows
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def device_of(settings: Any) -> str:
    import torch

    device = getattr(settings, "device", "cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def dataset_label(settings: Any) -> str:
    dataset = getattr(settings, "dataset", None)
    if dataset is None:
        return "no data (module alone)"
    if getattr(settings, "synthetic", False):
        return f"synthetic {dataset}-format"
    return f"{dataset} (real)"


def run_row(table: Table, row: Row, options: Options) -> dict[str, Any]:
    """Run one row unless its result exists for the same settings and commit; returns the result record."""
    from cca.reports.provenance import git_commit, provenance

    settings = row_settings(table, row, options)
    directory = run_dir(table, row, options)
    digest, commit = settings_hash(table, row, settings), git_commit()
    result_path, state_path = directory / "result.json", directory / "state.json"
    previous = _read_json(result_path)
    if previous and not options.force and previous.get("settings_hash") == digest and previous.get("commit") == commit:
        print(f"[table {table.number}] {row.key}: result exists for these settings and commit, skipped (--force re-runs)")
        return previous
    state = _read_json(state_path)
    resume = bool(state and not options.force and state.get("settings_hash") == digest and state.get("commit") == commit)
    if directory.exists() and not resume:
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(state_path, {"settings_hash": digest, "commit": commit, "settings": settings_dict(settings)})
    start = time.time()
    print(f"[table {table.number}] {row.key}: {row.label} ({'resuming' if resume else 'starting'}, {options.scale} scale)")
    metrics = table.runner(table, row, settings, options, directory)
    prov = provenance(device_of(settings), command=options.command or None)
    record = {
        "table": table.number,
        "row": row.key,
        "label": row.label,
        "scale": options.scale,
        "dataset": dataset_label(settings),
        "metrics": metrics,
        "settings_hash": digest,
        "commit": commit,
        "dirty": prov["dirty"],
        "hardware": prov["hardware"] + (f" x{options.nproc} processes" if options.nproc > 1 else ""),
        "time_utc": prov["time_utc"],
        "command": prov["command"],
        "seconds": round(time.time() - start, 1),
        "settings": settings_dict(settings),
    }
    _write_json(result_path, record)
    return record


# ---------------------------------------------------------------------------------------------
# Runners shared by the training tables
# ---------------------------------------------------------------------------------------------

ENGINE_METRICS = ("miou", "pixel_acc", "mean_acc")


def as_percent(value: float) -> float:
    """The engine reports fractions in [0, 1]; the paper prints percentages."""
    return 100.0 * float(value)


def train_runner(table: Table, row: Row, cfg: Any, options: Options, directory: Path) -> dict[str, float]:
    """Train + evaluate one row through the engine (``torchrun -m cca train`` when ``--nproc > 1``)."""
    from cca.engine.config import save_config

    resume = (directory / "last.pt").is_file()
    if options.nproc > 1:
        requested = save_config(cfg, directory / "requested_config.json")
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={options.nproc}",
            "-m", "cca", "train", "--config", str(requested),
        ] + (["--resume"] if resume else [])
        print("  $ " + " ".join(command))
        subprocess.run(command, check=True, cwd=ROOT)
    else:
        from cca.engine.train import train

        train(cfg, resume=resume)
    metrics_path = directory / "metrics.json"
    final = _read_json(metrics_path)
    if final is None:
        raise RuntimeError(f"training finished but wrote no {metrics_path}")
    return {key: as_percent(final[key]) for key in ENGINE_METRICS if key in final}


def smoke_of(full: Any, **changes: Any) -> Any:
    """The smoke scale of a training setting: same model/loss/evaluation recipe, tiny everything else.

    Tiny backbone without pretrained weights, CPU, synthetic data in the dataset's own format
    (written under ``runs/data/synthetic/<parameters>`` on first use: 32 train / 8 val images), 64-pixel
    crops, global batch 8, 300 iterations (about 15 s per row on 2 CPU cores), whole-image evaluation.
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


# ---------------------------------------------------------------------------------------------
# Dry run
# ---------------------------------------------------------------------------------------------


def dataset_sizes(cfg: Any) -> str:
    """What data the settings find: split sizes, or what is missing / will be written."""
    dataset = getattr(cfg, "dataset", None)
    if dataset is None:
        return "no data needed"
    root = Path(cfg.data_root)
    if not (root.is_dir() and any(root.iterdir())):
        if getattr(cfg, "synthetic", False):
            return (
                f"{root} missing: synthetic {dataset}-format data will be written "
                f"({cfg.synthetic_num_train} train / {cfg.synthetic_num_val} val, {cfg.synthetic_size[0]}x{cfg.synthetic_size[1]})"
            )
        return f"{root} NOT FOUND: pass --data-root PATH"
    sizes = []
    try:
        from cca.data import build_dataset

        for split in (cfg.train_split, cfg.val_split):
            sizes.append(f"{split}: {len(build_dataset(dataset, str(root), split))} images")
    except Exception as err:  # report, do not fail a dry run
        sizes.append(f"could not read: {type(err).__name__}: {err}")
    return f"{root} ({dataset}): " + ", ".join(sizes)


def describe(table: Table, options: Options) -> str:
    """The dry-run text: resolved settings, data found, planned iterations."""
    lines = [f"Table {table.number} ({table.topic}): {table.title}", f"  kind: {table.kind}, scale: {options.scale}"]
    base = table.base(options.scale)
    lines.append(f"  base settings ({type(base).__name__}):")
    lines += [f"    {k} = {v!r}" for k, v in settings_dict(base).items()]
    total = 0
    for row in selected_rows(table, options):
        settings = row_settings(table, row, options)
        changed = {k: v for k, v in settings_dict(settings).items() if settings_dict(base).get(k) != v}
        lines.append(f"  row {row.key} ({row.label}):")
        lines.append(f"    changes: {changed or '{}'}")
        lines.append(f"    data: {dataset_sizes(settings)}")
        iterations = getattr(settings, "iterations", None)
        if iterations is not None:
            total += int(iterations)
            lines.append(f"    planned iterations: {iterations} (global batch {getattr(settings, 'batch_size', '?')})")
        lines.append(f"    results: {run_dir(table, row, options) / 'result.json'}")
    if total:
        lines.append(f"  planned iterations over all rows: {total}")
    return "\n".join(lines)


def selected_rows(table: Table, options: Options) -> list[Row]:
    if not options.rows:
        return list(table.rows)
    known = {r.key: r for r in table.rows}
    unknown = [k for k in options.rows if k not in known]
    if unknown:
        raise ValueError(f"table {table.number} has no row(s) {unknown}; rows: {', '.join(known)}")
    return [known[k] for k in options.rows]


# ---------------------------------------------------------------------------------------------
# The whole table
# ---------------------------------------------------------------------------------------------


def check_data(table: Table, options: Options) -> None:
    """Full scale needs the real dataset: fail before any training if it is not there."""
    for row in selected_rows(table, options):
        settings = row_settings(table, row, options)
        dataset = getattr(settings, "dataset", None)
        if dataset is None or getattr(settings, "synthetic", False):
            continue
        root = Path(settings.data_root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"table {table.number} row {row.key}: {dataset} not found at {root}; pass --data-root PATH "
                "(no dataset is ever downloaded)"
            )


def run_table(table: Table, options: Options) -> dict[str, Any]:
    """Run (or skip) every selected row, then write the report; returns ``{"report", "failed"}``."""
    if options.dry_run:
        print(describe(table, options))
        return {"report": None, "failed": []}
    check_data(table, options)
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for row in selected_rows(table, options):
        try:
            results[row.key] = run_row(table, row, options)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            traceback.print_exc()
            failed.append(row.key)
            results[row.key] = {"label": row.label, "status": f"failed: {type(err).__name__}: {err}"}
    # rows not selected this time keep their earlier results in the report
    for row in table.rows:
        if row.key not in results:
            earlier = _read_json(run_dir(table, row, options) / "result.json")
            if earlier:
                results[row.key] = earlier
    report = write_table_report(table, results, options)
    return {"report": report, "failed": failed}


def _ours(results: Mapping[str, Mapping[str, Any]]):
    from cca.reports.tables import OursResult

    ours = {}
    for key, record in results.items():
        if "metrics" not in record:
            ours[key] = OursResult(label=record.get("label", key), status=record.get("status", "not run"))
            continue
        commit = record.get("commit") or ""
        ours[key] = OursResult(
            label=record.get("label", key),
            metrics={k: float(v) for k, v in record["metrics"].items() if v is not None},
            status="done",
            scale=record.get("scale", ""),
            dataset=record.get("dataset", ""),
            hardware=record.get("hardware", ""),
            commit=commit + ("+dirty" if record.get("dirty") else ""),
            command=record.get("command", ""),
        )
    return ours


def write_table_report(table: Table, results: Mapping[str, Mapping[str, Any]], options: Options) -> Path:
    """``reports/tableN.md`` + ``.csv``, training curves, and the index ``reports/README.md``."""
    from cca.reports import index, plots, tables
    from cca.reports.provenance import provenance

    reports = Path(options.reports_dir)
    paper = tables.load_paper_table(table.paper_csv)
    ours = _ours(results)
    regenerate = f"nox -s reproduce_table{table.number}" + ("" if options.scale == "smoke" else " -- --scale full ...")
    frame = tables.compare(paper, ours, table.metrics, command=options.command)
    scales = sorted({r.scale for r in ours.values() if r.scale})
    if scales == ["full"]:
        summary = table.shows_full
    else:
        summary = (
            "**Smoke scale: this is not a reproduction of the paper's numbers.** "
            + table.shows_smoke
            + " The paper's values are quoted beside ours only to show which number each row will be compared "
            "with once the table runs at full scale (`--scale full` on the real dataset)."
        )
    curves = []
    metric = table.metrics[0]  # the table's main metric, plotted against iteration beside the loss
    metric_label = {"miou": "mIoU", "box_ap": "box AP", "mask_ap": "mask AP"}.get(metric, metric)
    for row in table.rows:
        log = run_dir(table, row, options) / "metrics.jsonl"
        if log.is_file():
            out = reports / "curves" / f"table{table.number}_{row.key}.png"
            try:
                plots.plot_training_curves(
                    log, out, title=f"Table {table.number}: {row.label}", metric=metric, metric_label=metric_label
                )
                curves.append(f"[{row.key}](curves/{out.name})")
            except ValueError as error:  # e.g. a run killed before its first logged step
                curves.append(f"{row.key} (no curve: {error})")
    settings_lines = []
    for row in table.rows:
        record = results.get(row.key, {})
        if "settings" in record:
            base = settings_dict(table.base(record.get("scale", options.scale)))
            changed = {k: v for k, v in record["settings"].items() if base.get(k) != v and k not in ("output_dir", "name")}
            settings_lines.append(f"- `{row.key}` ({row.label}, {record.get('scale')}): {changed or 'base settings'}")
        else:
            settings_lines.append(f"- `{row.key}` ({row.label}): {record.get('status', 'not run')}")
    sections = [
        ("Settings", _settings_text(table) + "\n\nRows (changes from the base settings of their scale):\n\n" + "\n".join(settings_lines)),
    ]
    if curves:
        sections.append(("Training curves", f"Loss and val {metric_label} vs iteration: " + ", ".join(curves) + "."))
    notes = [
        "Paper values come from `experiments/paper/" + table.paper_csv.name + "` with their confidence: "
        "verbatim (read in the paper), secondary (quoted by the authors elsewhere), uncertain (recalled, not re-read). "
        "'not found' means the value was not found in the sources searched; it is left empty, never guessed.",
        "Rows quoted from the paper only (other methods) are marked as such; rows of ours that the paper's table "
        "does not have are marked 'not in the paper's table'.",
        *table.notes,
    ]
    prov = provenance(options.device or "cpu", command=options.command or None)
    md, _ = tables.write_report(
        frame,
        reports / f"table{table.number}.md",
        reports / f"table{table.number}.csv",
        title=f"Table {table.number}: {table.title}",
        provenance=prov,
        regenerate=regenerate,
        summary=summary,
        notes=notes,
        sections=sections,
    )
    (reports / "README.md").write_text(index.build_index(reports, PAPER_DIR))
    print(f"[table {table.number}] wrote {md} and {md.with_suffix('.csv')}")
    return md


def _settings_text(table: Table) -> str:
    full = settings_dict(table.full)
    smoke = settings_dict(table.smoke)
    lines = ["| setting | full (paper) | smoke |", "| --- | --- | --- |"]
    for key, value in full.items():
        if key in ("output_dir", "name"):
            continue
        lines.append(f"| {key} | {value!r} | {smoke.get(key)!r} |")
    return "Base settings of the table (each row changes a few):\n\n" + "\n".join(lines)


def env_threads() -> None:
    """Keep CPU runs polite on shared machines: honour OMP_NUM_THREADS if set."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))
