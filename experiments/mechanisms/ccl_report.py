"""``reports/mechanism_ccl.md`` (+ CSV, PNG, claims rows) from the CCL stability runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from experiments.mechanisms import common
from experiments.mechanisms.settings import MechanismSettings, Variant, paper_quote, paper_setting, paper_value
from experiments.mechanisms.stats import (
    difference_interval,
    fisher_exact_p,
    mean_std,
    runs_frame,
    succeeded,
    summarise,
    write_claims,
)

NAME = "mechanism_ccl"
EARLY_ITERS = 100  # "early training": the train rows up to this iteration


def _space(result: dict[str, Any], key: str) -> float:
    """A feature statistic in the space the CCL acts on (the projection if there is one)."""
    value = result.get(f"ccl_{key}") if result["spec"].get("ccl_channels") else result.get(key)
    return float("nan") if value is None else float(value)


def _early(result: dict[str, Any], key: str) -> float:
    values = [float(r[key]) for r in result.get("train_log", []) if r["iter"] <= EARLY_ITERS and r.get(key) is not None]
    return sum(values) / len(values) if values else float("nan")


def _fmt(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={len(values)})"


def diagnosis(results: list[dict[str, Any]], names: list[str], threshold: float) -> pd.DataFrame:
    """Per CCL variant and outcome: loss and gradient scale vs cross entropy early on, and the CCL space at the end."""
    rows = []
    for name in names:
        for outcome in ("success", "failure"):
            part = [
                r
                for r in results
                if r["name"] == name and r["spec"]["ccl"] and succeeded(r, threshold) == (outcome == "success")
            ]
            if not part:
                continue
            rows.append(
                {
                    "variant": name,
                    "outcome": outcome,
                    "runs": len(part),
                    f"CCL / CE loss (iter <= {EARLY_ITERS})": _fmt(
                        [_early(r, "ccl_loss") / max(_early(r, "ce"), 1e-12) for r in part]
                    ),
                    f"grad ratio CCL/CE on feat (iter <= {EARLY_ITERS})": _fmt(
                        [_early(r, "grad_ratio_ccl_over_ce") for r in part]
                    ),
                    f"CCL-space norm (iter <= {EARLY_ITERS})": _fmt([_early(r, "ccl_feature_norm") for r in part]),
                    "CCL-space intra spread (end)": _fmt([_space(r, "intra_class_spread") for r in part]),
                    "CCL-space centre distance (end)": _fmt([_space(r, "inter_class_distance") for r in part]),
                    "CCL-space blob-class centre distance (end)": _fmt(
                        [_space(r, "blob_inter_class_distance") for r in part]
                    ),
                    "blob-class centre distance, context features (end)": _fmt(
                        [float(r["blob_inter_class_distance"]) for r in part]
                    ),
                }
            )
    return pd.DataFrame(rows)


def write(
    settings: MechanismSettings, variants: dict[str, Variant], results: list[dict[str, Any]], reports: Path
) -> Path:
    from experiments.mechanisms.ccl_stability import SUCCESS_MIOU_PCT as threshold  # noqa: I001
    from cca.reports.render import Report, write_report

    names = list(variants)
    labels = {n: v.label for n, v in variants.items()}
    summary = summarise(results, names, labels, threshold)
    wins = {r["variant"]: (int(r["successes"]), int(r["seeds"])) for _, r in summary.iterrows()}
    miou = {n: [float(r["miou"]) for r in results if r["name"] == n] for n in names}
    quad_paper = paper_value("ccl", "quadratic distance: training runs that succeed", "success")
    piece_paper = paper_value("ccl", "piecewise distance: training runs that succeed", "success")
    gain_paper = paper_quote("ccl", "CCL gain", "mIoU gain")
    paper_col = {
        "ccl_quadratic": f"{quad_paper['value']} ({quad_paper['confidence']})",
        "ccl_piecewise": f"{piece_paper['value']} ({piece_paper['confidence']})",
    }
    table = pd.DataFrame(
        {
            "Variant": [f"{r['label']} (`{r['variant']}`)" for _, r in summary.iterrows()],
            "paper: runs that succeed": [paper_col.get(r["variant"], "-") for _, r in summary.iterrows()],
            "ours: successes": [f"{r['successes']}/{r['seeds']}" for _, r in summary.iterrows()],
            "success rate, 95% Wilson": [
                f"[{100 * r['success_ci95_low']:.0f}%, {100 * r['success_ci95_high']:.0f}%]"
                for _, r in summary.iterrows()
            ],
            "val mIoU (%) mean ± std": [f"{r['miou_mean']:.1f} ± {r['miou_std']:.1f}" for _, r in summary.iterrows()],
            "mIoU 95% t interval": [
                f"[{r['miou_ci95_low']:.1f}, {r['miou_ci95_high']:.1f}]" for _, r in summary.iterrows()
            ],
            "per seed": list(summary["miou_per_seed"]),
        }
    )
    gain, gain_lo, gain_hi = difference_interval(miou["ccl_piecewise"], miou["r2"])
    p_form = fisher_exact_p(*wins["ccl_piecewise"], *wins["ccl_quadratic"])
    p_proj = fisher_exact_p(*wins["ccl_piecewise"], *wins["ccl_piecewise_on_features"])
    diag = diagnosis(results, names, threshold)
    delta_v, delta_d = float(paper_setting("ccl_delta_v")), float(paper_setting("ccl_delta_d"))
    prov = common.provenance_now()
    command = "nox -s mechanism_ccl  (python -m experiments.mechanisms.ccl_stability)"
    png = reports / f"{NAME}.png"
    common.bar_figure(
        results,
        names,
        png,
        "CCL stability on the long-range task (bars: mean, whiskers: 95% t interval, dots: seeds)",
        threshold,
    )
    form_verdict = (
        "holds"
        if wins["ccl_piecewise"][0] > wins["ccl_quadratic"][0] and p_form < 0.05
        else ("does not hold" if wins["ccl_piecewise"][0] <= wins["ccl_quadratic"][0] else "holds in part")
    )
    summary_text = f"""
**Claim** (paper, CCL table, {piece_paper["confidence"]}): with the piecewise distance the training succeeds
{piece_paper["value"]} times, with the quadratic one {quad_paper["value"]}; the CCL adds {gain_paper} mIoU.

**Success, defined before any run**: val mIoU >= {threshold:g}% and no NaN/inf loss (chance on this task, the
blob found but its class guessed, is about 33% mIoU; a solved run about 100%).

**Measured** ({settings.seeds and len(settings.seeds)} seeds per variant, R=2, gamma init {settings.gamma_init}, CCL
weight {settings.ccl_weight}, margins delta_v {delta_v:g} / delta_d {delta_d:g} and weights from `settings_tpami.csv`):
piecewise {wins["ccl_piecewise"][0]}/{wins["ccl_piecewise"][1]}, quadratic {wins["ccl_quadratic"][0]}/{wins["ccl_quadratic"][1]}
(Fisher exact p = {p_form:.2f}), no CCL {wins["r2"][0]}/{wins["r2"][1]}; on the raw context features
{wins["ccl_piecewise_on_features"][0]}/{wins["ccl_piecewise_on_features"][1]} (vs the 16-channel projection: p = {p_proj:.2f}).
CCL gain (piecewise, projected, minus no CCL): {gain:+.1f} mIoU, 95% interval [{gain_lo:+.1f}, {gain_hi:+.1f}].
Verdict on "piecewise trains more reliably than quadratic": **{form_verdict}** here.
"""
    notes = [
        f"Task and model: `cca.data.long_range`, {settings.size}x{settings.size}, {settings.num_colours} blob classes, cue contrast "
        f"{settings.cue_contrast}; {settings.stem_convs} 3x3 convs ({settings.channels} ch) -> RCCA R=2 -> 1x1 classifier; Adam lr {settings.lr}, "
        f"batch {settings.batch_size}, {settings.iterations} iterations, {settings.num_train} train / {settings.num_val} val images; one thread per run.",
        "The CCL's centres are per image (as De Brabandere et al.); every image here holds background and one blob class, so the "
        "distance term pushes the blob's centre away from the background's and never the blob classes from each other.",
        "Without the CCL, R=2 already solves this task: a gain of the CCL cannot show here (ceiling); what can show is whether the CCL "
        "makes a run fail, and which distance does so less often.",
    ]
    findings = diagnosis_text(results, wins, threshold, delta_v, delta_d)
    per_run = runs_frame(
        results,
        [
            "miou",
            "diverged",
            "iterations_run",
            "intra_class_spread",
            "inter_class_distance",
            "blob_inter_class_distance",
            "ccl_intra_class_spread",
            "ccl_inter_class_distance",
            "ccl_blob_inter_class_distance",
            "feature_norm",
            "seconds",
        ],
    )
    report = Report(
        title="CCL stability: piecewise vs quadratic distance over 10 seeds (mechanism test on CPU)",
        provenance=prov,
        regenerate=command,
        scale="cpu-mechanism",
        summary=summary_text,
        tables=[
            ("Successes and val mIoU per variant", table),
            ("Why runs fail: loss scale, feature scale, projection (by outcome)", diag),
        ],
        notes=notes,
        sections=[("What we found", findings)],
        figures=[("val mIoU per variant and seed", png.name)],
    )
    path = write_report(
        report, reports / f"{NAME}.md", {reports / f"{NAME}.csv": summary, reports / f"{NAME}_runs.csv": per_run}
    )
    rows = [
        {
            "claim_id": "ccl_piecewise_vs_quadratic_success",
            "claim": "the CCL with the piecewise distance trains successfully more often than with the quadratic one",
            "paper": f"{piece_paper['value']} vs {quad_paper['value']}",
            "ours": f"{wins['ccl_piecewise'][0]}/{wins['ccl_piecewise'][1]} vs {wins['ccl_quadratic'][0]}/{wins['ccl_quadratic'][1]} (Fisher p={p_form:.2f})",
            "report": f"reports/{NAME}.md",
            "scale": "cpu-mechanism",
            "hardware": prov["hardware"],
            "verdict": form_verdict,
            "command": command,
        },
        {
            "claim_id": "ccl_gain",
            "claim": "the category consistent loss improves mIoU",
            "paper": gain_paper,
            "ours": f"{gain:+.1f} mIoU [{gain_lo:+.1f}, {gain_hi:+.1f}] (task at ceiling without the CCL)",
            "report": f"reports/{NAME}.md",
            "scale": "cpu-mechanism",
            "hardware": prov["hardware"],
            "verdict": "not testable here"
            if min(miou["r2"]) >= threshold
            else ("holds" if gain_lo > 0 else "does not hold"),
            "command": command,
        },
    ]
    write_claims(reports / "claims" / f"{NAME}.csv", rows)
    return path


def diagnosis_text(
    results: list[dict[str, Any]], wins: dict[str, tuple[int, int]], threshold: float, delta_v: float, delta_d: float
) -> str:
    """The findings, each tied to a measured number (the table above gives them all)."""

    def med(name: str, key: str, fn=_early, outcome: bool | None = None) -> float:
        vals = [
            fn(r, key) for r in results if r["name"] == name and (outcome is None or succeeded(r, threshold) == outcome)
        ]
        vals = sorted(v for v in vals if v == v)
        return vals[len(vals) // 2] if vals else float("nan")

    lines = []
    for name in ("ccl_quadratic", "ccl_piecewise", "ccl_piecewise_on_features"):
        ok, fail = (
            med(name, "blob_inter_class_distance", _space, True),
            med(name, "blob_inter_class_distance", _space, False),
        )
        lines.append(
            f"- `{name}`: {wins[name][0]}/{wins[name][1]} succeed. Early on (iterations <= {EARLY_ITERS}) the CCL's gradient on the context "
            f"features is {med(name, 'grad_ratio_ccl_over_ce'):.2f}x the cross entropy's (median over seeds); the CCL space's mean norm is "
            f"{med(name, 'ccl_feature_norm'):.2f} against margins delta_v {delta_v:g} / 2 delta_d {2 * delta_d:g}. At the end the blob-class centres "
            f"lie {ok:.2f} apart in the CCL space in the runs that succeed and {fail:.2f} in those that fail (median; nan: no such run)."
        )
    return "\n".join(lines)
