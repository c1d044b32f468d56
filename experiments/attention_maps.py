"""Attention-map figures: where chosen pixels look after one criss-cross loop (R=1) and after two (R=2).

    python -m experiments.attention_maps                       # nox -s attention_maps
    python -m experiments.attention_maps --checkpoint runs/table02/smoke/r2/last.pt   # any engine checkpoint

Default model: the long-range task's RCCA R=2 model (``experiments/longrange.py``, seed 0; trained here
if its run is missing, about half a minute). Figures: ``reports/attention_longrange.png`` (a blob
pixel, a background pixel, a cue pixel), and for each ``--checkpoint`` (default: table 2's smoke
CCNet R=2, ``runs/table02/smoke/r2/last.pt``, when it exists) ``reports/attention_<table>_<row>.png`` on a
validation image of that run's dataset. ``reports/attention.md`` says what they show, with the
share of each blob pixel's attention that lands on the cue (R=1 vs composed R=2) over validation images.

The maps come from :func:`cca.reports.attention.attention_maps`, which any user can call on their own
model and image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cca.data.long_range import LongRangeDataset
from cca.engine.checkpoint import load as load_checkpoint
from cca.engine.parsing import apply_overrides
from cca.reports.attention import attention_maps, plot_attention
from experiments import longrange

REPORTS = Path("reports")
DEFAULT_CHECKPOINT = Path("runs") / "table02" / "smoke" / "r2" / "last.pt"


def longrange_model(seed: int = 0) -> tuple[torch.nn.Module, longrange.LongRangeSettings]:
    """The long-range R=2 model of ``seed`` (trained now if ``runs/longrange/r2_s<seed>/model.pt`` is missing)."""
    settings = longrange.LongRangeSettings()
    path = longrange.RUNS / f"r2_s{seed}" / "model.pt"
    wanted = {k: v for k, v in settings.to_dict().items() if k != "seeds"}
    state = load_checkpoint(path) if path.is_file() else None
    saved = {k: v for k, v in (state or {}).get("settings", {}).items() if k != "seeds"}
    if state is None or saved != wanted:
        print(f"training the long-range R=2 model (seed {seed}) ...", flush=True)
        longrange.run(apply_overrides(settings, {"seeds": (seed,)}), ["r2"], force=True)
        state = load_checkpoint(path)
    model = longrange.build_model(settings, "r2")
    model.load_state_dict(state["model"])
    return model.eval(), settings


def cue_shares(model: torch.nn.Module, data: LongRangeDataset, count: int) -> dict[str, list[float]]:
    """Per image: the share of the blob centre pixel's attention that falls on the cue, per map (R=1, R=2)."""
    shares: dict[str, list[float]] = {}
    for i in range(count):
        s = data.sample(i)
        top, left, h, w = s.blob
        result = attention_maps(model, s.image, [(top + h // 2, left + w // 2)])
        cy, cx, ch, cw = s.cue
        for name, maps in result["maps"].items():
            shares.setdefault(name, []).append(float(maps[0, cy : cy + ch, cx : cx + cw].sum()))
    return shares


def checkpoint_figure(checkpoint: Path) -> tuple[Path, str]:
    """Attention of a trained engine run on the first validation image of its dataset."""
    from cca.engine import builders
    from cca.engine.config import config_from_dict

    state = load_checkpoint(checkpoint)  # weights_only: a crafted file is refused, never run
    if "config" not in state:
        raise ValueError(f"{checkpoint} has no saved config (expected an engine checkpoint: last.pt / best.pt)")
    cfg = config_from_dict(state["config"])
    dataset = builders.build_val_set(cfg)
    model = builders.build_model(cfg, dataset.num_classes)
    model.load_state_dict(state["model"])
    image, _ = dataset[0]
    h, w = image.shape[-2:]
    pixels = [(h // 2, w // 2), (h // 4, w // 4), (3 * h // 4, 3 * w // 4)]
    result = attention_maps(model.eval(), image, pixels)
    table_dir = checkpoint.parent.parent  # runs/tableNN/<scale>/<row>/last.pt
    if table_dir.name in ("smoke", "full"):
        table_dir = table_dir.parent
    out = REPORTS / f"attention_{table_dir.name}_{checkpoint.parent.name}.png"
    plot_attention(image, result, out, title=f"{cfg.name}: {cfg.model} R={cfg.recurrence}, {cfg.backbone} "
                   f"({'synthetic ' if cfg.synthetic else ''}{cfg.dataset}, iteration {state.get('iteration')})")
    return out, f"{cfg.name} ({cfg.model}, R={cfg.recurrence}, {cfg.backbone}, {'synthetic ' if cfg.synthetic else ''}{cfg.dataset})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.attention_maps", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, action="append", default=[],
        help=f"an engine checkpoint (last.pt/best.pt); default: {DEFAULT_CHECKPOINT} when it exists",
    )
    parser.add_argument("--samples", type=int, default=64, help="validation images for the cue-share statistic")
    args = parser.parse_args(argv)
    args.checkpoint = [c.resolve() for c in args.checkpoint]
    if not args.checkpoint and DEFAULT_CHECKPOINT.is_file():  # table 2's smoke CCNet (R=2), when it has run
        args.checkpoint = [DEFAULT_CHECKPOINT.resolve()]
    from cca.provenance import provenance, stamp

    model, settings = longrange_model(seed=0)
    data = LongRangeDataset(settings.num_val, settings.make_task(), seed=999_999)
    count = min(args.samples, len(data))
    shares = cue_shares(model, data, count)
    last = f"R={len(shares)}"
    order = sorted(range(count), key=lambda i: shares[last][i])
    shown = order[count // 2]  # the image with the median share: typical, not the best case
    sample = data.sample(shown)
    top, left, h, w = sample.blob
    cy, cx, ch, cw = sample.cue
    pixels = [(top + h // 2, left + w // 2), (cy + ch // 2, cx + cw // 2)]
    background = next(
        (y, x)
        for y in range(settings.size)
        for x in range(settings.size)
        if sample.label[y, x] == 0 and not (cy <= y < cy + ch or cx <= x < cx + cw) and abs(y - top) > 2 and abs(x - left) > 2
    )
    pixels.append(background)
    result = attention_maps(model, sample.image, pixels)
    figure = plot_attention(
        sample.image, result, REPORTS / "attention_longrange.png",
        title=f"Long-range task, RCCA R=2 model, val image {shown}: rows = blob pixel, cue pixel, background pixel",
    )
    extra = [checkpoint_figure(c) for c in args.checkpoint]
    share_lines = "\n".join(
        f"| {name} | {100 * sum(v) / len(v):.1f}% | {100 * sorted(v)[len(v) // 2]:.1f}% |" for name, v in shares.items()
    )
    cue_area = 100.0 * settings.cue_size**2 / settings.size**2
    text = f"""# Attention maps

{stamp(provenance("cpu"), "nox -s attention_maps")}
For a pixel u, **R=1** is the attention of the first loop over u's criss-cross set (row and column);
**R=2** is the exact composition of the two loops, M2[u, q] = sum over p in cross(u) of A1[u -> p] A0[p -> q]
(`cca.reports.attention.attention_maps`; attention paths only, residual and value projections not included).

![long-range task](attention_longrange.png)

[attention_longrange.png](attention_longrange.png): the long-range task's RCCA R=2 model (seed 0, see
[longrange.md](longrange.md)) on validation image {shown} (the one with the median cue share below: a typical image,
not the best). Rows: a blob pixel (its class is the cue's colour), a cue pixel, a background pixel. Colours show the
square root of each weight relative to the map's maximum, so weight spread over many pixels stays visible. The blob's class can only come from the cue, which lies off the blob's rows and columns: one loop
cannot reach it, the composed two-loop map can.

Share of a blob centre pixel's attention that falls on the cue ({count} validation images; the cue covers
{cue_area:.0f}% of the image, so attention spread evenly would put {cue_area:.0f}% on it):

| map | mean share on the cue | median |
| --- | --- | --- |
{share_lines}
"""
    for path, what in extra:
        text += f"\n![{what}]({path.name})\n\n[{path.name}]({path.name}): {what}, first validation image; pixels at the centre and the quarter points.\n"
    (REPORTS / "attention.md").write_text(text)
    means = {name: sum(v) / len(v) for name, v in shares.items()}
    print(json.dumps({"figure": str(figure), "image": shown, "mean_cue_share": means, "extra": [str(p) for p, _ in extra]}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError) as err:  # a refused or missing checkpoint (CheckpointError is a ValueError)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
