"""Beyond the paper: does R=2 reach context that R=1 cannot? A long-range ablation that runs on CPU.

    python experiments/longrange.py              # nox -s reproduce_longrange: ~5-10 minutes on 2 CPU cores
    python experiments/longrange.py --dry-run    # the settings and the planned runs
    python experiments/longrange.py --seeds 0    # one seed per variant (faster)

The task (``cca.data.long_range``): the class of an object blob is the colour of a cue placed so that
it shares no row or column with the blob (with a gap wider than the conv stem's receptive field).
A tiny conv stem (receptive-field radius below the gap) + a context block + a 1x1 classifier is
trained per variant and seed:

* ``r0``: no context block (convolution alone cannot see the cue);
* ``r1``: RCCA, one loop (the pixel's own row and column only: no cue either);
* ``r2``: RCCA, two loops (full-image context through the pixel in the blob's row and the cue's column);
* ``nonlocal``: a non-local block (every pixel directly);
* ``r2_gamma0``: R=2 with the paper's gamma = 0 initialisation (see the note in the report);
* ``r2_ccl``: R=2 + the category consistent loss on the context features.

The paper's argument predicts r2 ~ nonlocal > r1 ~ r0 (chance on the blob's class). The report gives
what is measured: val mIoU mean ± std over seeds, and for the CCL the feature statistics the loss
targets (intra-class spread, inter-class distance of the context features). Results are resumable:
``runs/longrange/<variant>_s<seed>/result.json``; report: ``reports/longrange.md`` / ``.csv`` / ``.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cca.data.long_range import LongRangeDataset, LongRangeTask  # noqa: E402

RUNS = Path("runs") / "longrange"
REPORTS = Path("reports")


@dataclass(frozen=True)
class LongRangeSettings:
    """Task, model and training of the ablation (read top to bottom)."""

    # --- task: cca.data.long_range.LongRangeTask ---
    size: int = 24  # images are size x size
    num_colours: int = 3  # blob classes (+ background): red, green, blue
    blob_min: int = 4
    blob_max: int = 6
    cue_size: int = 10  # the cue is cue_size x cue_size
    margin: int = 3  # gap (rows/columns) between the blob's band and the cue: > stem radius
    cue_contrast: float = 4.0  # cue colour amplitude (a weak cue makes the two-hop path hard to learn)
    noise: float = 0.15
    num_train: int = 2048
    num_val: int = 256
    # --- model: stem (3x3 convs) -> context block -> 1x1 classifier ---
    channels: int = 32
    stem_convs: int = 2  # receptive-field radius of the stem = stem_convs (must be < margin)
    reduction: int = 4  # RCCA query/key channels = channels // reduction
    gamma_init: float = 1.0  # RCCA's residual weight at initialisation (the paper: 0); variant r2_gamma0 uses 0
    # --- training ---
    iterations: int = 600
    batch_size: int = 16
    lr: float = 3e-3  # Adam
    ccl_weight: float = 1.0  # variant r2_ccl
    seeds: tuple[int, ...] = (0, 1, 2)

    def task(self) -> LongRangeTask:
        return LongRangeTask(
            size=self.size,
            num_colours=self.num_colours,
            blob_min=self.blob_min,
            blob_max=self.blob_max,
            cue_size=self.cue_size,
            margin=self.margin,
            noise=self.noise,
            cue_contrast=self.cue_contrast,
        )


# variant -> (context block, loops, gamma at init ("settings": gamma_init), CCL on)
VARIANTS: dict[str, dict[str, Any]] = {
    "r0": {"label": "R=0 (no context)", "block": "none", "recurrence": 0},
    "r1": {"label": "RCCA R=1", "block": "rcca", "recurrence": 1},
    "r2": {"label": "RCCA R=2", "block": "rcca", "recurrence": 2},
    "nonlocal": {"label": "non-local", "block": "nonlocal", "recurrence": 0},
    "r2_gamma0": {"label": "RCCA R=2, gamma init 0 (paper)", "block": "rcca", "recurrence": 2, "gamma_init": 0.0},
    "r2_ccl": {"label": "RCCA R=2 + CCL", "block": "rcca", "recurrence": 2, "ccl": True},
}


class TinySegmenter(nn.Module):
    """``stem (3x3 convs, no downsampling) -> context -> 1x1 classifier``; returns ``{"out", "feat"}``."""

    def __init__(self, context: nn.Module, num_classes: int, channels: int = 32, stem_convs: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(stem_convs):
            layers += [nn.Conv2d(3 if i == 0 else channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*layers)
        self.context = context
        self.classifier = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, num_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.context(self.stem(x))
        return {"out": self.classifier(feat), "feat": feat}


def build_model(settings: LongRangeSettings, variant: str) -> TinySegmenter:
    spec = VARIANTS[variant]
    if settings.stem_convs >= settings.margin:
        raise ValueError(
            f"stem_convs={settings.stem_convs} gives a receptive-field radius >= margin={settings.margin}: "
            "convolution alone could reach the cue"
        )
    from cca.nn import RCCA, NonLocal2d

    c = settings.channels
    if spec["block"] == "none":
        context: nn.Module = nn.Identity()
    elif spec["block"] == "rcca":
        context = RCCA(c, recurrence=spec["recurrence"], reduction=settings.reduction)
        gamma = spec.get("gamma_init", settings.gamma_init)
        found = [p for name, p in context.named_parameters() if name.split(".")[-1] == "gamma"]
        if not found:
            raise RuntimeError("RCCA has no parameter named 'gamma' to initialise")
        with torch.no_grad():
            for p in found:
                p.fill_(gamma)
    elif spec["block"] == "nonlocal":
        context = NonLocal2d(c)
    else:
        raise ValueError(f"unknown block {spec['block']!r}")
    return TinySegmenter(context, settings.num_colours + 1, channels=c, stem_convs=settings.stem_convs)


def feature_statistics(feat: torch.Tensor, label: torch.Tensor, num_classes: int) -> dict[str, float]:
    """What the CCL acts on: mean distance of features to their class centre, mean distance between centres."""
    f = feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1]).double()
    y = label.reshape(-1)
    centres, spreads = [], []
    for k in range(num_classes):
        members = f[y == k]
        if len(members) == 0:
            continue
        centre = members.mean(0)
        centres.append(centre)
        spreads.append((members - centre).norm(dim=1).mean())
    c = torch.stack(centres)
    pair = torch.cdist(c, c)
    inter = pair[~torch.eye(len(c), dtype=torch.bool)].mean()
    intra = torch.stack(spreads).mean()
    return {"intra_class_spread": float(intra), "inter_class_distance": float(inter), "inter_over_intra": float(inter / intra)}


def _ccl_loss(settings: LongRangeSettings):
    from cca.losses import CategoryConsistentLoss

    return CategoryConsistentLoss()


def train_one(settings: LongRangeSettings, variant: str, seed: int, out_dir: Path | None = None) -> dict[str, Any]:
    """Train one variant with one seed; returns val mIoU (percent) and feature statistics."""
    from cca.engine.metrics import ConfusionMatrix

    torch.manual_seed(seed)
    task = settings.task()
    train_x, train_y = LongRangeDataset(settings.num_train, task, seed=1000 + seed).tensors()
    val_x, val_y = LongRangeDataset(settings.num_val, task, seed=999_999).tensors()
    model = build_model(settings, variant)
    ccl = _ccl_loss(settings) if VARIANTS[variant].get("ccl") else None
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    start = time.time()
    model.train()
    for it in range(1, settings.iterations + 1):
        idx = torch.randint(len(train_x), (settings.batch_size,), generator=generator)
        outputs = model(train_x[idx])
        loss = F.cross_entropy(outputs["out"], train_y[idx])
        if ccl is not None:
            loss = loss + settings.ccl_weight * ccl(outputs["feat"], train_y[idx])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if it % 25 == 0 or it == settings.iterations:
            history.append({"type": "train", "iter": it, "loss": float(loss.detach())})
    model.eval()
    matrix = ConfusionMatrix(task.num_classes)
    feats = []
    with torch.no_grad():
        for i in range(0, len(val_x), 64):
            outputs = model(val_x[i : i + 64])
            matrix.update(outputs["out"].argmax(1), val_y[i : i + 64])
            feats.append(outputs["feat"])
    metrics = matrix.compute()
    stats = feature_statistics(torch.cat(feats), val_y, task.num_classes)
    result = {
        "variant": variant,
        "seed": seed,
        "miou": 100.0 * float(metrics["miou"]),
        "iou": [100.0 * float(v) for v in metrics["iou"]],
        **stats,
        "final_loss": history[-1]["loss"],
        "seconds": round(time.time() - start, 1),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / "metrics.jsonl").open("w") as f:
            for row in history + [{"type": "eval", "iter": settings.iterations, "miou": result["miou"] / 100.0}]:
                f.write(json.dumps(row) + "\n")
        torch.save({"settings": dataclasses.asdict(settings), "variant": variant, "model": model.state_dict()}, out_dir / "model.pt")
    return result


def settings_key(settings: LongRangeSettings, variant: str, seed: int) -> str:
    data = dataclasses.asdict(settings)
    data.pop("seeds")
    blob = json.dumps({"settings": data, "variant": variant, "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(settings: LongRangeSettings, variants: list[str], force: bool = False, runs: Path = RUNS) -> list[dict[str, Any]]:
    """Every (variant, seed), skipping those whose result exists for the same settings and commit."""
    from cca.reports.provenance import git_commit

    commit = git_commit()
    results = []
    for variant in variants:
        for seed in settings.seeds:
            directory = runs / f"{variant}_s{seed}"
            path = directory / "result.json"
            key = settings_key(settings, variant, seed)
            if path.is_file() and not force:
                old = json.loads(path.read_text())
                if old.get("settings_hash") == key and old.get("commit") == commit:
                    print(f"{variant} seed {seed}: done before (mIoU {old['miou']:.1f}), skipped")
                    results.append(old)
                    continue
            print(f"{variant} seed {seed}: training {settings.iterations} iterations ...", flush=True)
            result = train_one(settings, variant, seed, out_dir=directory)
            result.update({"settings_hash": key, "commit": commit})
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"  mIoU {result['miou']:.1f}  ({result['seconds']} s)", flush=True)
            results.append(result)
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def write_report(settings: LongRangeSettings, results: list[dict[str, Any]], reports: Path = REPORTS) -> Path:
    import pandas as pd

    from cca.reports.plots import plot_bars
    from cca.reports.provenance import provenance, stamp

    reports.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(results)
    rows = []
    for variant in [v for v in VARIANTS if v in set(frame["variant"])]:
        part = frame[frame["variant"] == variant]
        row = {"variant": variant, "label": VARIANTS[variant]["label"], "seeds": len(part)}
        for metric in ("miou", "intra_class_spread", "inter_class_distance", "inter_over_intra"):
            mean, std = _mean_std([float(v) for v in part[metric]])
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        row["miou_per_seed"] = " / ".join(f"{v:.1f}" for v in part["miou"])
        blob = [[v for v in ious[1:] if v == v] for ious in part["iou"]]  # NaN: class absent from val and predictions
        row["blob_class_iou_mean"] = float(sum(sum(b) / len(b) for b in blob if b) / max(1, sum(1 for b in blob if b)))
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.to_csv(reports / "longrange.csv", index=False)
    plot_bars(
        {r["variant"]: list(frame[frame["variant"] == r["variant"]]["miou"]) for r in rows},
        reports / "longrange.png",
        ylabel="val mIoU (%)",
        title="Long-range task: mIoU per variant (mean ± std over seeds, dots = seeds)",
    )
    prov = provenance("cpu")
    chance = 100.0 / settings.num_colours  # IoU of the one class a model predicts for every blob
    chance_miou = (100.0 + chance) / (settings.num_colours + 1)
    table = pd.DataFrame(
        {
            "Variant": [f"{r['label']} (`{r['variant']}`)" for r in rows],
            "val mIoU (%)": [f"{r['miou_mean']:.1f} ± {r['miou_std']:.1f}" for r in rows],
            "per seed": [r["miou_per_seed"] for r in rows],
            "blob classes IoU (%)": [f"{r['blob_class_iou_mean']:.1f}" for r in rows],
            "intra-class spread": [f"{r['intra_class_spread_mean']:.3f} ± {r['intra_class_spread_std']:.3f}" for r in rows],
            "inter-class distance": [f"{r['inter_class_distance_mean']:.3f} ± {r['inter_class_distance_std']:.3f}" for r in rows],
            "inter / intra": [f"{r['inter_over_intra_mean']:.2f}" for r in rows],
        }
    ).to_markdown(index=False)
    task = settings.task()
    means = {r["variant"]: (r["miou_mean"], r["miou_std"]) for r in rows}
    order = " > ".join(f"`{v}` {m:.1f}" for v, (m, _) in sorted(means.items(), key=lambda kv: -kv[1][0]))
    verdict = ""
    if all(v in means for v in ("r0", "r1", "r2", "nonlocal")):
        low = max(means["r0"][0], means["r1"][0])
        high = min(means["r2"][0], means["nonlocal"][0])
        spread = 2 * max(means[v][1] for v in ("r0", "r1", "r2", "nonlocal"))
        holds = high - low > max(spread, 1.0)
        verdict = (
            f"R=2 and non-local both beat R=0 and R=1 by {high - low:.1f} mIoU points (more than twice the largest std, "
            f"{spread / 2:.1f}): the measurement agrees with the prediction."
            if holds
            else f"The gap between min(R=2, non-local) and max(R=0, R=1) is {high - low:.1f} mIoU points, not more than "
            f"twice the largest std ({spread / 2:.1f}): the measurement does not show the predicted separation."
        )
    text = f"""# Long-range context ablation (beyond the paper)

{stamp(prov, "nox -s reproduce_longrange  (python experiments/longrange.py)")}
**Task** (`cca.data.long_range`): {settings.size}x{settings.size} images with one grey blob ({settings.blob_min}-{settings.blob_max} px
sides) and one {settings.cue_size}x{settings.cue_size} coloured cue; the blob's class ({settings.num_colours} classes + background) is the
cue's colour. The cue shares no row or column with the blob, with a gap of {settings.margin} rows/columns, wider than the
stem's receptive-field radius ({settings.stem_convs}): for every blob pixel, its row and column (and anything convolution
reaches) hold no evidence of the class. A model that finds the blob but cannot tell its class scores about
{chance:.0f}% IoU on the one class it predicts for every blob and 0 on the others: val mIoU about {chance_miou:.0f}%.

**Model**: {settings.stem_convs} 3x3 conv layers ({settings.channels} channels, full resolution) -> context block -> 1x1 classifier;
Adam lr {settings.lr}, batch {settings.batch_size}, {settings.iterations} iterations, {settings.num_train} training / {settings.num_val} val images,
seeds {list(settings.seeds)}. RCCA's query/key have {settings.channels // settings.reduction} channels; its gamma starts at
{settings.gamma_init} (variant `r2_gamma0`: the paper's 0). The CCL variant adds {settings.ccl_weight} x `cca.losses.CategoryConsistentLoss`
on the context features.

**Prediction** (the paper's argument): R=2 ≈ non-local > R=1 ≈ R=0. **Measured** (val mIoU over all {task.num_classes} classes,
mean ± std over seeds):

{table}

Measured order (mean val mIoU): {order}. {verdict}

![mIoU per variant](longrange.png)

How to read it:
- *blob classes IoU* averages the IoU of the {settings.num_colours} object classes (background excluded): at or below
  {chance / settings.num_colours:.0f}-{chance:.0f}% the class was guessed; near 100% the cue was used.
- *intra-class spread*: mean distance of a pixel's context feature to its class centre (val set);
  *inter-class distance*: mean distance between class centres. The category consistent loss pulls the first
  down and pushes the second up; its margins also set the feature scale (distances near delta_v / delta_d), so
  compare `r2_ccl` with `r2` on the scale-free *inter / intra* ratio.
- `r2_gamma0` starts RCCA's residual weight at 0, as the paper does. With gamma = 0 the signal that travels two
  hops (cue -> pixel in the cue's column and the blob's row -> blob pixel) is second order in gamma, so its
  gradient vanishes at initialisation; whether the run escapes within the budget is what this row measures.

CSV: [longrange.csv](longrange.csv). Per-run results and training logs: `runs/longrange/<variant>_s<seed>/`.
"""
    path = reports / "longrange.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python experiments/longrange.py", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the settings' seeds)")
    parser.add_argument("--iterations", type=int, help="training iterations per run")
    parser.add_argument("--force", action="store_true", help="re-run runs whose results exist")
    parser.add_argument("--dry-run", action="store_true", help="print the settings and planned runs only")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    settings = LongRangeSettings()
    if args.seeds:
        settings = dataclasses.replace(settings, seeds=tuple(args.seeds))
    if args.iterations:
        settings = dataclasses.replace(settings, iterations=args.iterations)
    if args.dry_run:
        for key, value in dataclasses.asdict(settings).items():
            print(f"{key} = {value!r}")
        print(f"runs: {len(args.variants)} variants x {len(settings.seeds)} seeds = {len(args.variants) * len(settings.seeds)}")
        return 0
    results = run(settings, args.variants, force=args.force)
    path = write_report(settings, results)
    from cca.reports.index import main as index_main

    index_main([])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
