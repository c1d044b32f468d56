"""``reports/efficiency.md``: every context block alone on the paper's 1 x 512 x 97 x 97 input (the
block-alone view; the paper's own methodology, increments of the whole network, is table 5).

Writes, under ``--out`` (default ``reports/``):

* ``efficiency.md`` / ``efficiency.csv``: GFLOPs / peak training memory / CPU latency of each block beside
  the paper's values (``experiments/paper/efficiency.csv`` and ``claims.csv``, with their confidence),
  the non-local / block ratios, and generated statements of what matched and what did not;
* ``scaling_gflops.png`` / ``scaling_memory.png``: GFLOPs and peak memory against the feature-map side
  for non-local and RCCA (R = 1, 2, 3) with least-squares fits of the analytic forms;
* ``data/efficiency.json``, ``data/scaling.csv``, ``data/scaling.json``: the raw results.

    python -m experiments.reports.efficiency                    # full run (a few minutes on a 2-core CPU)
    python -m experiments.reports.efficiency --repeats 0        # no latency
    python -m experiments.reports.efficiency --sides 32,64,128  # fewer scaling points
    python -m experiments.reports.efficiency --from-data        # re-render from data/efficiency.json, no measuring

Measurements: :mod:`cca.profiling.efficiency`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cca._io import atomic_write_json
from cca.provenance import REPO_ROOT
from cca.provenance import provenance as reports_provenance
from cca.reports.render import Report, save_figure, write_report

__all__ = ["efficiency_table", "main", "paper_values", "plot_scaling"]

MiB = 2**20


def provenance(argv: Sequence[str]) -> dict:
    """:func:`cca.provenance.provenance` plus the GPU, fvcore and the active ``cca`` backend."""
    from importlib.metadata import version

    import torch

    from cca.ops import use_extension

    prov = reports_provenance("cpu", command="python -m experiments.reports.efficiency" + "".join(f" {a}" for a in argv))
    return {
        **prov,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "fvcore": version("fvcore"),
        "cca_backend": "extension" if use_extension(torch.device("cpu")) else "reference",
    }


def paper_values(paper_dir: Path) -> tuple[pd.DataFrame, dict]:
    """``efficiency.csv`` (rows) and the two abstract claims of ``claims.csv`` (may be absent)."""
    path = Path(paper_dir) / "efficiency.csv"
    if not path.is_file():
        raise FileNotFoundError(f"paper values not found: {path} (copy of /work/shared/paper/efficiency.csv expected)")
    table = pd.read_csv(path)
    claims = {}
    claims_path = Path(paper_dir) / "claims.csv"
    if claims_path.is_file():
        frame = pd.read_csv(claims_path)
        for claim in ("rcca_vs_nonlocal_memory_ratio", "rcca_vs_nonlocal_flops_reduction"):
            row = frame[frame["claim"] == claim]
            if len(row):
                claims[claim] = {
                    "value": float(row.iloc[0]["value"]),
                    "unit": row.iloc[0]["unit"],
                    "confidence": row.iloc[0]["confidence"],
                }
    return table, claims


def _paper_lookup(table: pd.DataFrame, block: str, recurrence: int | None, column: str) -> tuple[float | None, str]:
    rows = table[(table["block"] == block) & table[column].notna()]
    if recurrence is not None:
        rows = rows[rows["recurrence"] == recurrence]
    if not len(rows):
        return None, ""
    return float(rows.iloc[0][column]), str(rows.iloc[0]["confidence"])


def _label(result: dict) -> str:
    return f"{result['block']} (R={result['recurrence']})" if result["recurrence"] else result["block"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else a / b


def efficiency_table(results: list[dict], paper: pd.DataFrame) -> pd.DataFrame:
    """One row per measured block: ours, the paper's (with confidence) and the non-local / block ratios."""
    from cca.profiling.efficiency import block_frame

    nonlocal_result = next(r for r in results if r["block"] == "nonlocal")
    p_nl_gflops, _ = _paper_lookup(paper, "nonlocal", None, "gflops")
    p_nl_memory, _ = _paper_lookup(paper, "nonlocal", None, "memory_mb")
    records = []
    for r in results:
        p_gflops, c_gflops = _paper_lookup(paper, r["block"], r["recurrence"], "gflops")
        p_memory, c_memory = _paper_lookup(paper, r["block"], r["recurrence"], "memory_mb")
        latency = r["latency_ms"] or {}
        records.append(
            {
                "block": r["block"],
                "recurrence": r["recurrence"],
                "input": "x".join(map(str, r["input"])),
                "params": r["params"],
                "gflops": r["gflops"],
                "paper_gflops": p_gflops,
                "paper_gflops_confidence": c_gflops,
                "gflops_ours_over_paper": _ratio(r["gflops"], p_gflops),
                "peak_memory_mib": r["peak_memory_mib"],
                "peak_memory_mib_cuda_equivalent": r["peak_memory_mib_cuda_equivalent"],
                "peak_memory_mib_backend": r["peak_memory_mib_backend"],
                "peak_memory_mib_inference_cuda_equivalent": r["peak_memory_mib_inference"],
                "paper_memory_mb": p_memory,
                "paper_memory_confidence": c_memory,
                "memory_ours_over_paper": _ratio(r["peak_memory_mib_cuda_equivalent"], p_memory),
                "nonlocal_over_block_gflops": _ratio(nonlocal_result["gflops"], r["gflops"]),
                "paper_nonlocal_over_block_gflops": _ratio(p_nl_gflops, p_gflops),
                "flops_reduction_vs_nonlocal_pct": 100 * (1 - r["gflops"] / nonlocal_result["gflops"]),
                "nonlocal_over_block_memory": _ratio(
                    nonlocal_result["peak_memory_mib_cuda_equivalent"], r["peak_memory_mib_cuda_equivalent"]
                ),
                "paper_nonlocal_over_block_memory": _ratio(p_nl_memory, p_memory),
                "nonlocal_over_block_memory_inference": _ratio(
                    nonlocal_result["peak_memory_mib_inference"], r["peak_memory_mib_inference"]
                ),
                "latency_forward_ms_cpu": latency.get("forward"),
                "latency_forward_backward_ms_cpu": latency.get("forward_backward"),
                "memory_method": r["memory_method"],
                "memory_method_cuda_equivalent": r["memory_method_cuda_equivalent"],
                "flops_method": r["flops_method"],
                "cca_backend": r["cca_backend"],
            }
        )
    return block_frame(records)


def plot_scaling(frame: pd.DataFrame, out_dir: Path) -> dict:
    """The two scaling PNGs (measured points and fitted forms); returns the fits (form, coefficients,
    max relative residual) per ``"column:series"``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from cca.profiling.efficiency import SCALING_CHANNELS, fit_scaling

    fits = fit_scaling(frame)
    for column, ylabel, filename in (
        ("gflops", "GFLOPs (2 x multiply-adds)", "scaling_gflops.png"),
        ("peak_memory_mib", "peak training memory (MiB, fake tracker, CUDA-equivalent)", "scaling_memory.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 5))
        for fit in (f for f in fits.values() if f["column"] == column):
            (line,) = ax.plot(fit["side"], fit["measured"], "o", label=f"{fit['series']} (measured)")
            form = fit["form"].replace("*", "·")
            label = f"{form} fit (max residual {fit['max_rel_residual']:.1e})"
            ax.plot(fit["dense_side"], fit["dense_fit"], "-", color=line.get_color(), alpha=0.6, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted(frame["side"].unique()))
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(f"feature-map side H = W (input 1 x {SCALING_CHANNELS} x H x W)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{'GFLOPs' if column == 'gflops' else 'Peak memory'}: non-local O((HW)^2) vs RCCA O(HW(H+W))")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, Path(out_dir) / filename, dpi=120)
    keep = ("form", "coef", "max_rel_residual")
    return {key: {k: fit[k] for k in keep} for key, fit in fits.items()}


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def shown_table(table: pd.DataFrame, results: list[dict]) -> pd.DataFrame:
    """The Markdown table of the report (a selection of :func:`efficiency_table`'s columns, formatted)."""
    return pd.DataFrame(
        {
            "block": [_label(r) for r in results],
            "params (M)": [_fmt(p / 1e6, 3) for p in table["params"]],
            "GFLOPs ours": [_fmt(v) for v in table["gflops"]],
            "GFLOPs paper": [_fmt(v, 1) for v in table["paper_gflops"]],
            "conf.": [c or "–" for c in table["paper_gflops_confidence"]],
            "NL/block FLOPs ours": [_fmt(v) for v in table["nonlocal_over_block_gflops"]],
            "NL/block paper": [_fmt(v) for v in table["paper_nonlocal_over_block_gflops"]],
            "memory MiB (CUDA-eq.)": [_fmt(v, 1) for v in table["peak_memory_mib_cuda_equivalent"]],
            "memory MiB (exact bytes)": [_fmt(v, 1) for v in table["peak_memory_mib"]],
            "memory MB paper (network increment)": [_fmt(v, 0) for v in table["paper_memory_mb"]],
            "conf. ": [c or "–" for c in table["paper_memory_confidence"]],
            "NL/block memory ours": [_fmt(v) for v in table["nonlocal_over_block_memory"]],
            "NL/block paper ": [_fmt(v) for v in table["paper_nonlocal_over_block_memory"]],
            "inference MiB (CUDA-eq.)": [_fmt(v, 1) for v in table["peak_memory_mib_inference_cuda_equivalent"]],
            "NL/block inference": [_fmt(v) for v in table["nonlocal_over_block_memory_inference"]],
            "fwd ms (CPU)": [_fmt(v, 0) for v in table["latency_forward_ms_cpu"]],
            "fwd+bwd ms (CPU)": [_fmt(v, 0) for v in table["latency_forward_backward_ms_cpu"]],
        }
    )


METHODS = """- **GFLOPs**: {flops}. Counted with fvcore and exact handles for the criss-cross ops; identical on the
  compiled and the pure-PyTorch backend.
- **Memory**: peak of one training step (forward + backward): {includes}. `fake_tensor_tracker(cuda-equivalent)`:
  FakeTensorMode (no data) and a dispatch-mode tracker of live storages, each rounded up to the CUDA caching
  allocator's 512-byte blocks (what `max_memory_allocated` counts); 'inference' is a forward pass alone (eval
  mode, no_grad: parameters + input + forward temporaries); CPU kernels, because backward on a fake CUDA device
  needs a CUDA context. Kernel-internal workspaces (cuDNN) and allocator fragmentation are not included. The
  criss-cross attention allocates as the cca custom ops do (outputs + tensors saved for backward). 'Exact
  bytes' is the same run without rounding.
- **Latency**: CPU only (this machine, shared), median of the timed runs after warm-up, `time.perf_counter`;
  forward in eval mode under no_grad, forward + backward in training mode. Indicative only.
- Paper values from `experiments/paper/efficiency.csv` (GFLOPs: the author's answer in speedinghzl/CCNet
  issue #2 and summary A; memory: summary A, the **increment of the whole network** over its baseline, not the
  block alone; all secondary) and `experiments/paper/claims.csv` (abstract, verbatim)."""


def build_report(
    prov: dict, table: pd.DataFrame, results: list[dict], lines: list[str], fits: dict, network: list[str] = ()
) -> Report:
    """The :class:`~cca.reports.render.Report` of ``efficiency.md``."""
    from cca.profiling.blocks import PAPER_INPUT
    from cca.profiling.flops import FLOPS_CONVENTION
    from cca.profiling.memory import MEMORY_INCLUDES

    summary = (
        f"Hardware: {prov['hardware']}; GPU: {prov['gpu']} (no GPU measurement in this report). fvcore "
        f"{prov['fvcore']}, cca backend `{prov['cca_backend']}`.\n\n"
        f"Input: {'x'.join(map(str, PAPER_INPUT))} (the 97 x 97 feature map of a 769 x 769 crop at output stride 8, "
        "512 channels after the head's 3 x 3 reduction conv; the author's answer in speedinghzl/CCNet issue #2). "
        "Each block on its own, float32. This is the **block-alone view**; the paper's table measures increments of "
        "the whole ResNet-50 network, reproduced at full scale in [table5.md](table5.md)."
    )
    ignored = {_label(r): r["ignored_ops"] for r in results}
    sections = [
        ("What matched and what did not", "\n".join(f"- {line}" for line in lines)),
        (
            "Ops met but not counted (calls)",
            "\n".join(f"- {k}: {', '.join(f'{op} x{n}' for op, n in v.items()) or 'none'}" for k, v in ignored.items()),
        ),
        ("Methods", METHODS.format(flops=FLOPS_CONVENTION, includes=MEMORY_INCLUDES)),
    ]
    if network:
        body = "From [table5.md](table5.md) (`nox -s reproduce_table5 -- --scale full`, run before this report):\n\n"
        sections.insert(
            1, ("The paper's methodology: increments of the whole network", body + "\n".join(f"- {x}" for x in network))
        )
    if fits:
        body = [
            "![GFLOPs vs side](scaling_gflops.png)",
            "![Peak memory vs side](scaling_memory.png)",
            "",
            "Least-squares fits of the analytic forms to the measurements (max relative residual):",
            "",
            *[f"- {k}: {v['form']}, residual {v['max_rel_residual']:.2e}" for k, v in fits.items()],
            "",
            "Data: `data/scaling.csv`.",
        ]
        sections.append(("Scaling", "\n".join(body)))
    return Report(
        title="Efficiency: non-local vs RCCA and the other context blocks (each block alone)",
        provenance=prov,
        regenerate="nox -s profile",
        scale="full",
        summary=summary,
        tables=[("Table", shown_table(table, results))],
        notes=["NL/block: the non-local block's value divided by the row's (for RCCA R=2: the paper's comparison)."],
        sections=sections,
    )


def build_parser() -> argparse.ArgumentParser:
    from cca.profiling.efficiency import SCALING_SIDES

    parser = argparse.ArgumentParser(prog="python -m experiments.reports.efficiency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports", help="output folder (default reports/)")
    parser.add_argument("--paper-dir", type=Path, default=REPO_ROOT / "experiments" / "paper", help="paper CSVs")
    parser.add_argument("--warmup", type=int, default=1, help="latency warm-up runs (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="latency timed runs; 0 skips latency (default 3)")
    parser.add_argument(
        "--sides", default=",".join(map(str, SCALING_SIDES)), help="scaling sides, comma-separated; '' skips"
    )
    parser.add_argument("--no-live-check", action="store_true", help="skip the real-tensor memory cross-check")
    parser.add_argument(
        "--from-data",
        action="store_true",
        help="measure nothing: render efficiency.md from the results saved in <out>/data/efficiency.json and "
        "scaling.json (the plots are kept)",
    )
    return parser


def _sides(text: str) -> list[int]:
    try:
        sides = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sides = [-1]
    if any(s < 2 for s in sides):
        raise ValueError(f"--sides must be comma-separated ints >= 2, got {text!r}")
    return sides


def main(argv: Sequence[str] | None = None) -> int:
    from cca.profiling.blocks import PAPER_INPUT
    from cca.profiling.efficiency import efficiency_rows, scaling
    from experiments.reports.efficiency_text import network_findings, statements

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    sides = _sides(args.sides)
    paper, claims = paper_values(args.paper_dir)
    out = Path(args.out)
    prov = provenance(argv)

    measured = None
    if args.from_data:
        saved = json.loads((out / "data" / "efficiency.json").read_text())
        results, measured = saved["results"], saved["provenance"]
        prov = {**measured, **{k: prov[k] for k in ("command", "time_utc", "commit", "dirty")}}
        sides = []
    else:
        results = efficiency_rows(PAPER_INPUT, warmup=args.warmup, repeats=args.repeats, live_check=not args.no_live_check)
    table = efficiency_table(results, paper)
    from experiments.reports.claims_efficiency import memory_error

    error, _ = memory_error(out)
    lines = statements(results, table, claims, error)
    fits: dict = {}
    if measured is not None and (out / "data" / "scaling.json").is_file():
        fits = json.loads((out / "data" / "scaling.json").read_text()).get("fits", {})
    csvs = {out / "efficiency.csv": table}
    if sides:
        frame = scaling(sides)
        csvs[out / "data" / "scaling.csv"] = frame
        fits = plot_scaling(frame, out)
        atomic_write_json(
            out / "data" / "scaling.json", {"provenance": prov, "points": frame.to_dict("records"), "fits": fits}
        )
    if measured is None:
        atomic_write_json(
            out / "data" / "efficiency.json",
            {"provenance": prov, "claims": claims, "results": results, "statements": lines},
        )
    network = []
    if (out / "table5.csv").is_file() and (args.paper_dir / "table05_efficiency.csv").is_file():
        table5 = pd.read_csv(out / "table5.csv", dtype=str, keep_default_na=False)
        network = network_findings(
            table5, pd.read_csv(args.paper_dir / "table05_efficiency.csv", dtype=str), memory_error_pct=error
        )
    report = build_report(prov, table, results, lines, fits, network)
    if measured is not None:
        report.summary += (
            f"\n\nMeasured by `{measured.get('command', '?')}` at {measured.get('time_utc', '?')}, commit "
            f"`{measured.get('commit') or 'unknown'}`{' (with uncommitted changes)' if measured.get('dirty') else ''}; "
            "rendered again from `data/efficiency.json` without measuring."
        )
    write_report(report, out / "efficiency.md", csvs)
    print(f"wrote {out / 'efficiency.md'}, {out / 'efficiency.csv'}" + (", scaling plots" if sides else ""))
    for line in lines:
        print("-", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
