"""``nox -s gpu_check``: the one command for a machine with a CUDA GPU, 8 minutes at most (``--quick``: 4).

Steps, each timed against its budget (``--dry-run`` lists them; needs no GPU):

* ``build``: compile the CUDA extension for this GPU's architecture only (skipped when ``cca/_C*.so``
  is newer than ``csrc/`` and has CUDA kernels);
* ``tests``: ``pytest tests/test_cuda.py`` and the CUDA tests of the GEMM backend and the backend choice
  (``--quick``: without the ``torch.compile`` and opcheck tests);
* ``bench``: every CUDA backend (gemm, simple, fused) and the auto choice vs einsum and axial fused attention
  (``experiments/gpu_bench.py``), forward and forward+backward, float32/float16/bfloat16, 97x97 and 2x, 4x
  larger maps (``--quick``: 97 and 194), with GB/s and % of roofline from ``cca.profiling.gpu_model``;
  **fails** when auto is slower than einsum on any case (by more than ``AUTO_SLACK`` for timing noise);
* ``efficiency``: table 5 blocks on CUDA, ``python -m cca.profiling BLOCK --device cuda --json``
  (peak memory by ``torch.cuda.max_memory_allocated``), and ``--network resnet50`` when
  ``cca.profiling`` has that option (else skipped, with the reason);
* ``report``: ``reports/gpu.md`` + CSVs naming the device, with the kernels' roofline at the paper's shape,
  and ``reports/gpu_model.md`` again with the measured times beside the predicted ones.

    python -m experiments.gpu_check [--quick] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TOTAL_LIMIT_S = {"full": 480, "quick": 240}
REPORT = ROOT / "reports" / "gpu.md"
AUTO_SLACK = 1.05  # auto fails the check when its median is above 1.05x einsum's (timing noise below that)
CUDA_TESTS = ("tests/test_cuda.py", "tests/test_gemm_backend.py", "tests/test_cuda_dispatch.py")


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: dict  # {"full": s, "quick": s}
    what: str


STEPS = (
    Step("build", {"full": 170, "quick": 125}, "setup.py build_ext --inplace, FORCE_CUDA=1, this GPU's arch only"),
    Step("tests", {"full": 100, "quick": 40}, "pytest the CUDA tests (-m cuda; quick: no torch.compile/opcheck)"),
    Step("bench", {"full": 150, "quick": 55}, "every backend + auto vs einsum/axial_sdpa x fwd, fwd+bwd x 3 dtypes x sizes; fails if auto is slower than einsum"),
    Step("efficiency", {"full": 50, "quick": 15}, "python -m cca.profiling BLOCK --device cuda --json (+ --network resnet50)"),
    Step("report", {"full": 10, "quick": 5}, "reports/gpu.md + gpu*.csv via cca.reports.render"),
)
BLOCKS = {"full": ("nonlocal", "cca", "rcca"), "quick": ("nonlocal", "rcca")}
QUICK_TEST_FILTER = "not torch_compile and not opcheck"


def bench_plan(mode: str) -> list[str]:
    """What the bench step times: the formulations (every CUDA backend, auto, the baselines) and the cases."""
    from experiments import gpu_bench

    n, cq, c, _ = gpu_bench.PAPER_SHAPE
    sizes = gpu_bench.SIZES if mode == "full" else gpu_bench.SIZES[:2]
    return [
        f"backends: {', '.join(gpu_bench.FORMULATIONS)} (auto = cca.criss_cross_attention, choosing among "
        "fused, gemm, simple, einsum per shape)",
        f"cases: N={n}, C'={cq}, C={c}; sizes {', '.join(f'{s}x{s}' for s in sizes)}; dtypes "
        f"{', '.join(str(d).removeprefix('torch.') for d in gpu_bench.DTYPES)}; passes forward, forward+backward",
        f"check: auto <= {AUTO_SLACK} x einsum on every case, else exit 1",
    ]


def plan(mode: str) -> list[dict]:
    """The steps with their budgets and the cumulative deadline of each, in seconds."""
    rows, elapsed = [], 0
    for step in STEPS:
        elapsed += step.budget_s[mode]
        rows.append({"step": step.name, "budget_s": step.budget_s[mode], "deadline_s": elapsed, "what": step.what})
    return rows


def _run(args: list[str], timeout_s: float, env: dict | None = None) -> tuple[int | None, str]:
    """Run a command from the repository root, streaming nothing; ``(returncode or None on timeout, output)``."""
    try:
        done = subprocess.run(
            args, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=max(timeout_s, 1)
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, out
    return done.returncode, done.stdout + done.stderr


def step_build(remaining_s: float, mode: str) -> tuple[str, str]:
    import torch

    from cca.ops import _extension

    lib = _extension._aot_library()
    probe = "from cca.ops import _extension as e; print('CCA_CUDA_KERNELS', e.has_kernel('cuda'))"
    if lib is not None and "CCA_CUDA_KERNELS True" in _run([sys.executable, "-c", probe], 60)[1]:
        return "ok", f"up to date: {lib.name}"
    major, minor = torch.cuda.get_device_capability()
    env = {"CCA_BUILD_EXT": "1", "FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": f"{major}.{minor}",
           "MAX_JOBS": str(os.cpu_count() or 4)}
    code, out = _run([sys.executable, "setup.py", "build_ext", "--inplace"], remaining_s, env)
    if code != 0:
        print(out[-3000:])
        return "failed" if code is not None else "timed out", out.strip().splitlines()[-1][:200] if out.strip() else ""
    return "ok", f"built for sm_{major}{minor}"


def step_tests(remaining_s: float, mode: str) -> tuple[str, str]:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS, "-m", "cuda"]
    if mode == "quick":
        args += ["-k", QUICK_TEST_FILTER]
    code, out = _run(args, remaining_s)
    summary = next((line for line in reversed(out.splitlines()) if " in " in line and ("passed" in line or "failed" in line)), "")
    if code != 0:
        print(out[-4000:])
    return ("ok" if code == 0 else "timed out" if code is None else "failed"), summary.strip("= ")


def step_bench(remaining_s: float, mode: str, results: dict) -> tuple[str, str]:
    import torch

    from experiments import gpu_bench

    deadline = time.monotonic() + remaining_s
    sizes = gpu_bench.SIZES if mode == "full" else gpu_bench.SIZES[:2]
    rows = []
    for size in sizes:
        for dtype in gpu_bench.DTYPES:
            for name in gpu_bench.FORMULATIONS:
                if time.monotonic() > deadline:
                    rows.append({"formulation": name, "size": f"{size}x{size}", "dtype": str(dtype)[6:], "error": "not run: over budget"})
                    continue
                rows.append(gpu_bench.bench_case(name, size, dtype, repeats=10 if mode == "full" else 5))
                print(f"  {rows[-1]}", flush=True)
                torch.cuda.empty_cache()
    results["bench"] = rows
    results["auto_vs_einsum"] = verdicts = auto_vs_einsum(rows)
    failed = sum(bool(r.get("error")) for r in rows if r["formulation"] in ("einsum", "auto"))
    slower = [v for v in verdicts if v["verdict"].startswith("slower")]
    unmeasured = [v for v in verdicts if v["verdict"].startswith("not measured")]
    for v in slower:
        print(f"  FAIL: auto is slower than einsum: {v['size']} {v['dtype']} {v['pass']}: auto {v['auto_ms']} ms "
              f"vs einsum {v['einsum_ms']} ms ({v['verdict']})", flush=True)
    for v in unmeasured:
        print(f"  NOT CHECKED: auto vs einsum at {v['size']} {v['dtype']} {v['pass']}: {v['verdict']}", flush=True)
    errors = sum(bool(r.get("error")) for r in rows)
    ok = len(verdicts) - len(slower) - len(unmeasured)
    detail = f"{len(rows) - errors}/{len(rows)} cases; auto vs einsum: {ok}/{len(verdicts)} ok"
    detail += f", {len(slower)} slower" if slower else ""
    detail += f", {len(unmeasured)} not measured" if unmeasured else ""
    return ("failed" if slower or failed else "partial" if unmeasured else "ok"), detail


def auto_vs_einsum(rows: list[dict]) -> list[dict]:
    """Per size, dtype and pass: auto's median against einsum's; verdict ``ok`` when auto <= AUTO_SLACK x einsum."""
    by_case = {(r["formulation"], r["size"], r["dtype"]): r for r in rows}
    verdicts = []
    for (name, size, dtype), auto in by_case.items():
        if name != "auto":
            continue
        einsum = by_case.get(("einsum", size, dtype), {})
        for which in ("forward_ms", "forward_backward_ms"):
            a, e = auto.get(which), einsum.get(which)
            if a is None or e is None or a != a or e != e:
                verdict = "not measured: " + (auto.get("error") or einsum.get("error") or "missing")
            else:
                verdict = "ok" if a <= AUTO_SLACK * e else f"slower: {a / e:.2f}x einsum's time"
            verdicts.append({"size": size, "dtype": dtype, "pass": which[:-3].replace("_", "+"),
                             "auto_ms": a, "einsum_ms": e, "chosen": auto.get(f"backend_{which[:-3]}"),
                             "verdict": verdict})
    return verdicts


def _has_network_option() -> bool:
    from cca.profiling.__main__ import build_parser

    return any("--network" in action.option_strings for action in build_parser()._actions)


def step_efficiency(remaining_s: float, mode: str, results: dict) -> tuple[str, str]:
    deadline = time.monotonic() + remaining_s
    runs = [[block] for block in BLOCKS[mode]]
    skipped = ""
    if _has_network_option():
        runs += [["--network", "resnet50", block] for block in ("rcca", "nonlocal")]
    else:
        skipped = "network increment skipped: `python -m cca.profiling` has no --network option in this checkout"
        print(f"  {skipped}")
    rows = []
    for run in runs:
        left = deadline - time.monotonic()
        if left < 5:
            rows.append({"run": " ".join(run), "error": "not run: over budget"})
            continue
        args = [sys.executable, "-m", "cca.profiling", *run, "--device", "cuda", "--json", "--repeats", "3" if mode == "full" else "1"]
        code, out = _run(args, left)
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
        if code != 0 or line is None:
            rows.append({"run": " ".join(run), "error": (out.strip().splitlines() or ["timed out"])[-1][:200]})
            continue
        data = json.loads(line)
        latency = data.pop("latency_ms", None) or {}
        row = {"run": " ".join(run)}
        for key, value in data.items():
            if isinstance(value, (list, tuple)):
                row[key] = "x".join(map(str, value))
            elif not isinstance(value, dict):
                row[key] = value
        row.update({f"latency_{k}_ms": v for k, v in latency.items()})
        rows.append(row)
        print(f"  {row}", flush=True)
    results["efficiency"] = rows
    failed = sum("error" in r for r in rows)
    return ("ok" if not failed else "partial"), "; ".join(filter(None, [f"{len(rows) - failed}/{len(rows)} runs", skipped]))


def write_report(results: dict, steps: list[dict], mode: str, total_s: float, device: str, prov: dict,
                 path: Path = REPORT) -> Path:
    """``path`` (reports/gpu.md) + CSVs beside it from the steps' results, via cca.reports.render."""
    import pandas as pd

    from cca.reports.render import Report
    from cca.reports.render import write_report as render
    from experiments import gpu_bench

    gpu = gpu_bench.gpu_key(device)
    gpus = (gpu,) if gpu else tuple(gpu_bench.GPU_SPECS)
    bench = pd.DataFrame(results.get("bench", []))
    if not bench.empty and "forward_ms" in bench:
        einsum = bench[bench.formulation == "einsum"].set_index(["size", "dtype"])
        for column in ("forward_ms", "forward_backward_ms"):
            key = bench.set_index(["size", "dtype"]).index
            bench[f"{column[:-3]}_x_einsum"] = einsum[column].reindex(key).to_numpy() / bench[column].to_numpy()
    roof = pd.concat(
        [pd.DataFrame(gpu_bench.roofline(gpu_bench.PAPER_SHAPE, nbytes, gpus)).assign(dtype=name)
         for name, nbytes in (("float32", 4), ("float16/bfloat16", 2))]
    )
    efficiency = pd.DataFrame(results.get("efficiency", []))
    n, cq, c, size = gpu_bench.PAPER_SHAPE
    report = Report(
        title=f"CUDA check on {device}",
        provenance=prov,
        regenerate="nox -s gpu_check" + (" -- --quick" if mode == "quick" else ""),
        scale=f"**Measured on {device}** ({mode} check, {total_s:.0f} s of the {TOTAL_LIMIT_S[mode]} s budget).",
        summary="Tests of the CUDA kernels on the device, the operator against two other formulations, table 5's "
        "blocks on CUDA, and the kernels' roofline at the paper's shape to judge the measured times against.",
        tables=[
            ("Steps", pd.DataFrame(steps)),
            ("Auto choice vs einsum (the check fails on any row not ok)", pd.DataFrame(results.get("auto_vs_einsum", []))),
            ("Operator: forward and forward+backward (median ms; peak MiB above the inputs)", bench),
            ("Table 5 blocks on CUDA (python -m cca.profiling ... --device cuda)", efficiency),
            (f"Roofline of each simple kernel at N={n}, C'={cq}, C={c}, {size}x{size} ({', '.join(gpus)})", roof),
        ],
        notes=[
            "`x_einsum` columns: einsum's time / the formulation's at the same size and dtype (>1: faster than einsum). "
            "`backend_*`: the backend that ran (for auto, its choice). `*_gb_s`: the HBM bytes of "
            "`cca/profiling/gpu_model.py` for that backend over the measured time; `*_roofline_pct`: the model's "
            f"roofline time / the measured time. auto fails the check above {AUTO_SLACK}x einsum's time.",
            "`axial_sdpa`: row and column memory-efficient attention merged by log-sum-exp; PyTorch returns the "
            "log-sum-exp without a gradient, so its backward omits that term: its forward+backward is a lower bound.",
            "Roofline of the simple kernels: compulsory traffic (each input read once, each output written once) at "
            "the GPU's peak DRAM bandwidth, and 2 FLOPs per multiply-add at its FP32 CUDA-core peak (no tensor cores); "
            "time = max of the two. " + "; ".join(f"{k}: {v['source']}" for k, v in gpu_bench.GPU_SPECS.items() if k in gpus),
            "The attention also runs a softmax over the (N, H+W-1, H, W) energy between the two kernels (not in the roofline).",
            *(f"{gpu}, {name}: the simple kernels at 97x97 are bounded below by {part.loc[part.op.str.contains('forward'), f'{gpu}_us'].sum():.1f} us "
              f"forward (2 kernels) and {part[f'{gpu}_us'].sum():.1f} us forward+backward (6 kernels)."
              for gpu in gpus for name, part in roof.groupby("dtype")),
        ],
    )
    csvs = {path.with_name("gpu.csv"): bench, path.with_name("gpu_roofline.csv"): roof,
            path.with_name("gpu_efficiency.csv"): efficiency, path.with_name("gpu_steps.csv"): pd.DataFrame(steps)}
    written = render(report, path, csvs)
    from cca.profiling import gpu_model

    gpu_model.write(path.parent, path.with_name("gpu.csv"))  # measured beside predicted
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"the {TOTAL_LIMIT_S['quick'] // 60}-minute version")
    parser.add_argument("--dry-run", action="store_true", help="list the steps and their budgets; run nothing")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    steps = plan(mode)
    if args.dry_run:
        print(f"gpu_check ({mode}): {len(steps)} steps, {steps[-1]['deadline_s']} s planned, limit {TOTAL_LIMIT_S[mode]} s")
        for row in steps:
            print(f"  {row['step']:<11s} budget {row['budget_s']:>4d} s  (done by {row['deadline_s']:>4d} s)  {row['what']}")
        for line in bench_plan(mode):
            print(f"  {line}")
        return 0
    import torch

    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (torch.cuda.is_available() is False); `--dry-run` lists the steps")
    start, results, done = time.monotonic(), {}, []
    runners = {"build": step_build, "tests": step_tests, "bench": step_bench, "efficiency": step_efficiency}
    for row in steps:
        if row["step"] == "report":
            break
        began = time.monotonic()
        # build may use the time of later steps (nothing works without it); the others stop at their deadline
        limit = TOTAL_LIMIT_S[mode] - 30 if row["step"] == "build" else row["deadline_s"]
        remaining = start + limit - began
        print(f"[gpu_check] {row['step']}: budget {row['budget_s']} s ...", flush=True)
        runner = runners[row["step"]]
        status, detail = runner(remaining, mode, results) if row["step"] in ("bench", "efficiency") else runner(remaining, mode)
        elapsed = time.monotonic() - began
        over = " OVER BUDGET" if elapsed > row["budget_s"] else ""
        print(f"[gpu_check] {row['step']}: {status} in {elapsed:.1f} s (budget {row['budget_s']} s){over}; {detail}", flush=True)
        done.append({"step": row["step"], "status": status, "elapsed_s": round(elapsed, 1), "budget_s": row["budget_s"], "detail": detail})
    from cca.provenance import provenance

    prov = provenance("cuda")
    path = write_report(results, done, mode, time.monotonic() - start, torch.cuda.get_device_name(), prov)
    total = time.monotonic() - start
    print(f"[gpu_check] report: {path} ; total {total:.1f} s (limit {TOTAL_LIMIT_S[mode]} s)", flush=True)
    return 0 if all(row["status"] == "ok" for row in done) else 1


if __name__ == "__main__":
    sys.exit(main())
