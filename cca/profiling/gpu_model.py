"""A performance model of 2D criss-cross attention on GPUs: HBM bytes, FLOPs and roofline time per backend.

A **model, not a measurement**: each backend is written as its sequence of kernels, each kernel as the bytes it
reads and writes in HBM (every tensor it touches read or written once) and the FLOPs it does (2 per multiply-add),
on tensor cores or CUDA cores. Time on a GPU = ``max(bytes / peak HBM bandwidth, matmul FLOPs / peak matmul rate
+ CUDA-core FLOPs / FP32 peak)`` summed over kernels, with peaks from the datasheets in ``gpu_peaks.csv``. Launch
overheads, softmax arithmetic, caches and occupancy are left out, so every time is a lower bound.

Notation (elements): ``P = N H W`` pixels, ``Q = N C' H W`` (query or key), ``V = N C H W`` (value, output),
``Lw = P W`` and ``Lh = P H`` (row and full-column energies), ``Lm = P (H + W - 1)`` (the map),
``Lb = P (W + H)`` (the GEMM backend's slot buffer); ``e`` bytes per element of the dtype.

* ``einsum`` (:func:`cca.ops.reference.criss_cross_attention_2d` under autograd): row energies ``2 C' Lw`` FLOPs;
  column energies after copying q and k into a column-batched layout (the column is their unit-stride axis:
  cuBLAS needs a unit-stride matrix axis, so ``bmm`` copies them); the time energies of its 3D code at
  ``T = 1`` (a ``bmm`` of ``P`` 1x1 products, reading q and k again);
  the self entry dropped by a gather, ``cat`` into the map, softmax (half dtypes: cast to float32 and back),
  the pixel's weight shared (``*0.5``, ``where``), the column weights scattered back to full lines
  (``eye * diag``, copy, scatter), row aggregation ``2 C Lw``, column aggregation after copying the weights and
  the value (``2 C Lh``), and the sum of the two outputs. Backward, as autograd runs it: each matmul
  ``out = a b`` becomes two matmuls (read ``out``'s gradient and one operand, write the other's gradient,
  same FLOPs each), each copy/gather/scatter/cast moves its forward bytes again, softmax reads two maps and
  writes one, the sum passes its gradient through.
* ``gemm`` (:mod:`cca.ops.gemm_backend`): q, k, v transposed to channels-last (read + write each); energies
  written into the slot buffer (``2 C' (Lw + Lh)``); mask, in-place softmax (``Lb`` read + write) and sharing of
  the self weight (``P`` entries); aggregation: row ``bmm`` (reads ``Lw + V``, writes ``V``) and column
  ``baddbmm`` (reads ``Lh + 2 V``, writes ``V``), ``2 C (Lw + Lh)``; the output transposed back. Backward:
  the output gradient and v transposed, ``dv`` by the adjoint products (as the aggregation), ``dP`` by the
  energy products of g and v (``2 C (Lw + Lh)``, writes ``Lb``), the softmax backward (reads 2, writes 1
  buffer), ``dq`` and ``dk`` by the products with k and q (``2 C' (Lw + Lh)`` each), with their transposes.
* ``simple`` (``csrc/cuda/kernels.h``): one thread per output element, scalar FMAs on CUDA cores in float32.
  ``weight_fwd`` (energy: reads ``2 Q``, writes ``Lm``), softmax as in einsum, ``map_fwd`` (reads ``Lm + V``,
  writes ``V``); backward: softmax backward, ``weight_fwd(g, v)``, ``map_bwd_v(A, g)``, ``map_fwd(dS, k)``,
  ``map_bwd_v(dS, q)``. Each thread re-reads its operands once per channel or slot: ``2 ch Lm`` element
  loads per kernel of ``ch`` channels, listed as ``l2_mib`` (served by L1/L2, not HBM, and not in the
  roofline: the time shown is far below what these loads allow).
* ``fused`` (the Triton design: FlashAttention-2 over lines): a row pass and a column pass, each reading q, k,
  v once and writing a float32 partial output and its log-sum-exp (``P`` float32), merged by one kernel (reads
  both partials and log-sum-exps, writes ``V``); energies recomputed per block of ``VALUE_BLOCK`` value
  channels (``2 C' (Lw + Lh) ceil(C / VALUE_BLOCK)``), aggregation ``2 C (Lw + Lh)``. Backward:
  ``D = sum(g * out)`` (reads ``2 V``, writes ``P`` float32), then per pass reads q, k, v, g, lse and D,
  recomputes the energies and forms ``dP``, ``dv``, ``dq``, ``dk`` (``2 C' + 2 C + 2 C + 2 C' + 2 C'`` FLOPs per
  energy entry), writing ``dq, dk, dv``; the column pass adds into the row pass's gradients (reads them too).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

PEAKS_CSV = Path(__file__).with_name("gpu_peaks.csv")
BACKENDS = ("einsum", "gemm", "fused", "simple")
PASSES = ("forward", "backward")
# precision -> (bytes per element, which peak the matmuls run at)
PRECISIONS = {"float32": (4, "fp32_tflops"), "tf32": (4, "tf32_tensor_tflops"), "bfloat16/float16": (2, "bf16_tensor_tflops")}
VALUE_BLOCK = 128  # value channels per program of the fused kernel (an assumption of the model)


@dataclass(frozen=True)
class Shape:
    n: int
    cq: int
    c: int
    h: int
    w: int


@dataclass(frozen=True)
class Step:
    """One kernel: HBM bytes read and written, FLOPs and where they run (``gemm``: the precision's matmul
    peak; ``cuda``: the FP32 CUDA-core peak), and loads served by L1/L2 beyond its HBM traffic."""

    name: str
    read_bytes: float
    write_bytes: float
    flops: float = 0.0
    unit: str = ""
    l2_bytes: float = 0.0


def gpu_peaks(path: Path = PEAKS_CSV) -> dict[str, dict]:
    """``{gpu: {hbm_gb_s, fp32_tflops, tf32_tensor_tflops, bf16_tensor_tflops, source}}`` from the CSV."""
    with open(path, newline="") as handle:
        return {row["gpu"]: {k: (v if k == "source" else float(v)) for k, v in row.items() if k != "gpu"}
                for row in csv.DictReader(handle)}


def _sizes(s: Shape) -> dict[str, int]:
    p = s.n * s.h * s.w
    return {"P": p, "Q": s.n * s.cq * s.h * s.w, "V": s.n * s.c * s.h * s.w, "Lw": p * s.w, "Lh": p * s.h,
            "Lm": p * (s.h + s.w - 1), "Lb": p * (s.w + s.h)}


# --------------------------------------------------------------------------- einsum (autograd of the reference)
def _einsum_ops(s: Shape, e: int) -> list[tuple]:
    """The reference's forward as ``(kind, name, ...)``: ``gemm a b out flops`` (elements), ``move read write``
    (bytes), ``softmax elements bytes_each``, ``sum out`` (elements)."""
    z = _sizes(s)
    q, v, lw, lh, lm = z["Q"], z["V"], z["Lw"], z["Lh"], z["Lm"]
    drop = lm - lw  # the column entries other than the pixel itself
    ops = [
        ("gemm", "row energies", q, q, lw, 2 * s.cq * lw),
        ("move", "copy q, k (column layout)", 2 * q * e, 2 * q * e),
        ("gemm", "column energies", q, q, lh, 2 * s.cq * lh),
        ("gemm", "time energies (T = 1: the reference runs its 3D code)", q, q, z["P"], 2 * s.cq * z["P"]),
        ("move", "gather: drop the pixel itself", lh * e, drop * e),
        ("move", "cat into the map", lm * e, lm * e),
    ]
    if e == 2:
        ops += [("move", "cast to float32", lm * e, lm * 4), ("softmax", "softmax", lm, 4),
                ("move", "cast back", lm * 4, lm * e)]
    else:
        ops += [("softmax", "softmax", lm, e)]
    ops += [
        ("move", "share the pixel's weight (*0.5, where)", 3 * lw * e, 2 * lw * e),
        ("move", "column weights to full lines (eye*diag, scatter)", (lh + drop) * e, (2 * lh + drop) * e),
        ("gemm", "row aggregation", lw, v, v, 2 * s.c * lw),
        ("move", "copy weights, value (column layout)", (lh + v) * e, (lh + v) * e),
        ("gemm", "column aggregation", lh, v, v, 2 * s.c * lh),
        ("sum", "sum of the two", v),
    ]
    return ops


def einsum_steps(s: Shape, e: int, which: str) -> list[Step]:
    steps = []
    for op in _einsum_ops(s, e):
        kind, name = op[0], op[1]
        if kind == "gemm":
            a, b, out, flops = op[2:]
            if which == "forward":
                steps.append(Step(name, (a + b) * e, out * e, flops, "gemm"))
            else:
                steps.append(Step(f"{name}: grad of first", (out + b) * e, a * e, flops, "gemm"))
                steps.append(Step(f"{name}: grad of second", (out + a) * e, b * e, flops, "gemm"))
        elif kind == "move":
            steps.append(Step(name, op[2], op[3]))
        elif kind == "softmax":
            n, size = op[2:]
            steps.append(Step(name, n * size, n * size) if which == "forward" else Step(name, 2 * n * size, n * size))
        elif kind == "sum" and which == "forward":
            steps.append(Step(name, 2 * op[2] * e, op[2] * e))
    return steps


# --------------------------------------------------------------------------- gemm backend
def gemm_steps(s: Shape, e: int, which: str) -> list[Step]:
    z = _sizes(s)
    p, q, v, lw, lh, lb = z["P"], z["Q"], z["V"], z["Lw"], z["Lh"], z["Lb"]

    def energies(name, ch, a, b):  # a, b: elements of the two channels-last operands
        return [Step(f"{name} (row bmm)", (a + b) * e, lw * e, 2 * ch * lw, "gemm"),
                Step(f"{name} (column bmm)", (a + b) * e, lh * e, 2 * ch * lh, "gemm")]

    def aggregate(name, ch, x):  # rows written, columns accumulated (baddbmm reads its output)
        return [Step(f"{name} (row bmm)", (lw + x) * e, x * e, 2 * ch * lw, "gemm"),
                Step(f"{name} (column baddbmm)", (lh + 2 * x) * e, x * e, 2 * ch * lh, "gemm")]

    def transpose(name, x):
        return Step(f"transpose {name}", x * e, x * e)

    if which == "forward":
        return [transpose("q", q), transpose("k", q), *energies("energies", s.cq, q, q),
                Step("mask the pixel in its column", 0, p * e), Step("softmax (in place)", lb * e, lb * e),
                Step("share the pixel's weight", p * e, 2 * p * e), transpose("v", v),
                *aggregate("aggregation", s.c, v), transpose("output back", v)]
    return [transpose("grad", v), *aggregate("dv (adjoint)", s.c, v), transpose("dv back", v), transpose("v", v),
            *energies("dP", s.c, v, v), Step("softmax backward", 2 * lb * e, lb * e),
            transpose("k", q), *aggregate("dq", s.cq, q), transpose("dq back", q),
            transpose("q", q), *aggregate("dk (adjoint)", s.cq, q), transpose("dk back", q)]


# --------------------------------------------------------------------------- simple kernels
def simple_steps(s: Shape, e: int, which: str) -> list[Step]:
    z = _sizes(s)
    q, v, lm = z["Q"], z["V"], z["Lm"]

    def weight(name, ch, a):  # reads two (ch)-channel tensors, writes the map
        return Step(f"weight_fwd {name}", 2 * a * e, lm * e, 2 * ch * lm, "cuda", 2 * ch * lm * e)

    def map_(name, ch, x):  # reads the map and a (ch)-channel tensor, writes (ch) channels
        return Step(f"{name}", (lm + x) * e, x * e, 2 * ch * lm, "cuda", 2 * ch * lm * e)

    f = 4 if e == 2 else e  # softmax in float32 for half dtypes (position_softmax)
    casts = [Step("cast to float32", lm * e, lm * 4), Step("cast back", lm * 4, lm * e)] if e == 2 else []
    if which == "forward":
        return [weight("(energies)", s.cq, q), *casts[:1], Step("softmax", lm * f, lm * f), *casts[1:],
                map_("map_fwd (aggregation)", s.c, v)]
    return [weight("(dA = g . v)", s.c, v), map_("map_bwd_v (dv)", s.c, v), *casts,
            Step("softmax backward", 2 * lm * f, lm * f), map_("map_fwd (dq)", s.cq, q), map_("map_bwd_v (dk)", s.cq, q)]


# --------------------------------------------------------------------------- fused (Triton) design
def fused_steps(s: Shape, e: int, which: str) -> list[Step]:
    z = _sizes(s)
    p, q, v, lw, lh = z["P"], z["Q"], z["V"], z["Lw"], z["Lh"]
    blocks = math.ceil(s.c / VALUE_BLOCK)
    if which == "forward":
        passes = [Step(f"{name} pass", (2 * q + v) * e, v * 4 + p * 4, (2 * s.cq * blocks + 2 * s.c) * lines, "gemm")
                  for name, lines in (("row", lw), ("column", lh))]
        return [*passes, Step("merge by log-sum-exp", 2 * v * 4 + 2 * p * 4, v * e)]
    per_entry = 2 * s.cq + 2 * s.c + 2 * s.c + 2 * s.cq + 2 * s.cq  # energies, dP, dv, dq, dk
    reads = (2 * q + 2 * v) * e + 2 * p * 4
    return [Step("D = sum(g * out)", 2 * v * e, p * 4),
            Step("row pass", reads, (2 * q + v) * e, per_entry * lw, "gemm"),
            Step("column pass (adds into the row pass's gradients)", reads + (2 * q + v) * e, (2 * q + v) * e,
                 per_entry * lh, "gemm")]


STEPS = {"einsum": einsum_steps, "gemm": gemm_steps, "simple": simple_steps, "fused": fused_steps}


def steps(backend: str, which: str, shape: Shape, precision: str) -> list[Step]:
    """The kernels of ``backend``'s ``which`` pass (``forward`` or ``backward``) at ``shape``."""
    if backend not in STEPS or which not in PASSES or precision not in PRECISIONS:
        raise ValueError(f"expected backend in {BACKENDS}, pass in {PASSES}, precision in {tuple(PRECISIONS)}; "
                         f"got {backend!r}, {which!r}, {precision!r}")
    return STEPS[backend](shape, PRECISIONS[precision][0], which)


def step_time_us(step: Step, gpu: dict, precision: str) -> float:
    """``max(bytes / bandwidth, FLOPs / rate)`` of one kernel, in microseconds."""
    memory_us = (step.read_bytes + step.write_bytes) / (gpu["hbm_gb_s"] * 1e3)
    rate = gpu[PRECISIONS[precision][1]] if step.unit == "gemm" else gpu["fp32_tflops"]
    return max(memory_us, step.flops / (rate * 1e6) if step.unit else 0.0)


def summary(backend: str, which: str, shape: Shape, precision: str, gpus: dict[str, dict]) -> dict:
    """Totals of one backend and pass: MiB, L2 MiB, GFLOP (tensor core or CUDA core) and µs per GPU."""
    parts = steps(backend, which, shape, precision)
    tensor_cores = precision != "float32"
    matmul = sum(st.flops for st in parts if st.unit == "gemm")
    cuda = sum(st.flops for st in parts if st.unit == "cuda") + (0 if tensor_cores else matmul)
    row = {"backend": backend, "pass": which, "n": shape.n, "size": f"{shape.h}x{shape.w}", "precision": precision,
           "kernels": len(parts), "hbm_mib": sum(st.read_bytes + st.write_bytes for st in parts) / 2**20,
           "l2_mib": sum(st.l2_bytes for st in parts) / 2**20,
           "gflop_tensor_core": (matmul if tensor_cores else 0) / 1e9, "gflop_cuda_core": cuda / 1e9}
    for name, gpu in gpus.items():
        row[f"{name}_us"] = sum(step_time_us(st, gpu, precision) for st in parts)
    return row


# --------------------------------------------------------------------------- the paper's shapes, the report
PAPER_SHAPES = tuple(Shape(n, 64, 512, size, size) for n in (1, 2) for size in (97, 194))  # 97x97 map and 2x


def table(shapes=PAPER_SHAPES, gpus: dict[str, dict] | None = None) -> list[dict]:
    """Every backend x pass (forward, backward, forward+backward) x shape x precision, with the predicted
    ratio ``einsum time / backend time`` per GPU (> 1: faster than einsum)."""
    gpus = gpu_peaks() if gpus is None else gpus
    rows = []
    for shape in shapes:
        for precision in PRECISIONS:
            block = {}
            for backend in BACKENDS:
                fwd, bwd = (summary(backend, which, shape, precision, gpus) for which in PASSES)
                both = {**fwd, "pass": "forward+backward", "kernels": fwd["kernels"] + bwd["kernels"]}
                for key in ("hbm_mib", "l2_mib", "gflop_tensor_core", "gflop_cuda_core", *(f"{g}_us" for g in gpus)):
                    both[key] = fwd[key] + bwd[key]
                block[backend] = (fwd, bwd, both)
            for backend in BACKENDS:
                for row, base in zip(block[backend], block["einsum"], strict=True):
                    for gpu in gpus:
                        row[f"{gpu}_x_einsum"] = base[f"{gpu}_us"] / row[f"{gpu}_us"]
                    rows.append(row)
    return rows


def gpu_key(device_name: str, gpus=None) -> str | None:
    """The ``gpu_peaks.csv`` row named in a device name ("NVIDIA H200" -> "H200"), or ``None``."""
    return next((key for key in (gpus or gpu_peaks()) if key in device_name.upper()), None)


def precision_of(dtype: str) -> str:
    """The model's precision for a measured dtype name (float32 measured without TF32, torch's default)."""
    return "float32" if dtype == "float32" else "tf32" if dtype == "tf32" else "bfloat16/float16"


def measured_beside_predicted(predicted: list[dict], measured: list[dict]) -> list[dict]:
    """``reports/gpu.csv`` rows (gpu_check: ``formulation, size, dtype, device, forward_ms,
    forward_backward_ms``) beside the model's time at N = 1 on the GPU each row names."""
    index = {(r["backend"], r["pass"], r["n"], r["size"], r["precision"]): r for r in predicted}
    rows = []
    for m in measured:
        gpu = gpu_key(str(m.get("device", "")))
        for which, column in (("forward", "forward_ms"), ("forward+backward", "forward_backward_ms")):
            model = index.get((m.get("formulation"), which, 1, m.get("size"), precision_of(str(m.get("dtype")))))
            value = m.get(column)
            if gpu is None or model is None or value is None or value != value:  # NaN: not measured
                continue
            predicted_us = model[f"{gpu}_us"]
            rows.append({"gpu": gpu, "backend": m["formulation"], "size": m["size"], "dtype": m["dtype"], "pass": which,
                         "predicted_us": predicted_us, "measured_us": 1e3 * float(value),
                         "measured_over_predicted": 1e3 * float(value) / predicted_us})
    return rows


def write(out_dir: Path, measured_csv: Path | None = None) -> Path:
    """``gpu_model.md`` and ``gpu_model.csv`` (+ ``gpu_model_measured.csv`` when measurements exist)."""
    import pandas as pd

    from cca.provenance import provenance
    from cca.reports.render import Report, write_report

    gpus = gpu_peaks()
    rows = table(gpus=gpus)
    frame = pd.DataFrame(rows).round(3)
    measured = []
    if measured_csv is not None and measured_csv.is_file():
        measured = measured_beside_predicted(rows, pd.read_csv(measured_csv).to_dict("records"))
    shown = ["backend", "pass", "n", "size", "hbm_mib", "l2_mib", "gflop_tensor_core", "gflop_cuda_core",
             *(f"{g}_{k}" for g in gpus for k in ("us", "x_einsum"))]
    tables = [(f"Precision {precision}", frame[frame.precision == precision][shown]) for precision in PRECISIONS]
    csvs = {out_dir / "gpu_model.csv": frame}
    if measured:
        tables.insert(0, ("Measured (reports/gpu.md) beside predicted", pd.DataFrame(measured).round(3)))
        csvs[out_dir / "gpu_model_measured.csv"] = pd.DataFrame(measured)
    report = Report(
        title="GPU performance model of criss-cross attention",
        provenance=provenance("cpu", "python -m cca.profiling.gpu_model"),
        regenerate="python -m cca.profiling.gpu_model (nox -s gpu_model)",
        scale="**A model, not a measurement.** Bytes and FLOPs are counted from each backend's algorithm; times "
        "are roofline lower bounds on the named GPUs' datasheet peaks; no GPU ran to make the predicted columns."
        + (" Measured times are in the first table." if measured else " No `reports/gpu.csv` yet: nothing measured."),
        summary=f"Shapes: the paper's C' = 64, C = 512, N = 1 and 2 crops, the 97x97 map and the 2x map 194x194. "
        "`x_einsum` = einsum's predicted time / the backend's (> 1: faster than einsum). Precisions: float32 "
        "(matmuls on CUDA cores), tf32 (float32 tensors, matmuls on TF32 tensor cores when "
        "`torch.backends.cuda.matmul.allow_tf32` is set), bfloat16/float16 (tensor cores). The `simple` kernels "
        "run scalar FMAs on CUDA cores at every precision; their `l2_mib` are the re-reads of the map and of the "
        f"channels from L1/L2, which the roofline leaves out, so their predicted time is far too low. `fused` "
        f"assumes {VALUE_BLOCK} value channels per program (energies recomputed per block).",
        tables=tables,
        notes=[f"{g}: {spec['hbm_gb_s']:g} GB/s, FP32 {spec['fp32_tflops']:g}, TF32 {spec['tf32_tensor_tflops']:g}, "
               f"BF16 {spec['bf16_tensor_tflops']:g} TFLOP/s ({spec['source']})" for g, spec in gpus.items()]
        + ["Formulas for each backend's bytes and FLOPs: the docstring of `cca/profiling/gpu_model.py`."],
    )
    return write_report(report, out_dir / "gpu_model.md", csvs)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cca.profiling.gpu_model", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports"), help="directory of gpu_model.md (default reports)")
    parser.add_argument("--measured", type=Path, default=None, help="gpu_check's CSV (default <out>/gpu.csv)")
    args = parser.parse_args(argv)
    path = write(args.out, args.measured or args.out / "gpu.csv")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
