"""The operator on CUDA: every backend and the auto choice vs einsum and an axial formulation on PyTorch's
fused attention, and the roofline of the simple kernels (used by ``experiments/gpu_check.py``; the roofline
needs no GPU).

Formulations of criss-cross attention, ``(N, C', H, W) x2, (N, C, H, W) -> (N, C, H, W)``, no 1/sqrt(d)
(CCNet has none):

* ``einsum``: ``cca.ops.reference.criss_cross_attention_2d`` (materialises the (N, H+W-1, H, W) energy);
* ``auto``: ``cca.criss_cross_attention`` (the backend chosen per shape, :mod:`cca.ops.cuda_dispatch`);
* ``gemm``, ``simple``, ``fused``: each CUDA backend called directly (``cca.ops.gemm_backend``, the compiled
  kernels of ``csrc/cuda/``, the Triton kernels of ``cca.ops.triton_kernels``);
* ``axial_sdpa``: attention over each row and over each column with PyTorch's fused attention kernel
  (memory-efficient attention on CUDA; flash, padded to one head size, on CPU; scale=1), merged by their log-sum-exp with the
  pixel itself counted once: ``out = (Z_r O_r + Z_c O_c - e^{s_uu} v_u) / (Z_r + Z_c - e^{s_uu})``.
  PyTorch returns the log-sum-exp without a gradient, so its backward omits the merge weights' term:
  its forward+backward time is a lower bound (its forward is exact; ``tests/test_gpu_check.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

import cca
from cca import _env
from cca.ops import cuda_dispatch, reference
from cca.ops.cuda_dispatch import cuda_event_timer
from cca.profiling import gpu_model

PAPER_SHAPE = (1, 64, 512, 97)  # N, C' (= C / 8), C, H = W: the paper's 97x97 map of 512 channels
SIZES = (97, 194, 388)  # the paper's map and 2x, 4x larger
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Peak DRAM bandwidth (GB/s) and FP32 CUDA-core peak (TFLOP/s) of the simple kernels' roofline (scalar FMAs,
# float32 accumulation): the datasheet figures of cca/profiling/gpu_peaks.csv, named there.
GPU_SPECS = {
    gpu: {"bandwidth_gb_s": peak["hbm_gb_s"], "fp32_tflops": peak["fp32_tflops"], "source": peak["source"]}
    for gpu, peak in gpu_model.gpu_peaks().items()
}


def gpu_key(device_name: str) -> str | None:
    """The ``GPU_SPECS`` key named in ``device_name`` ("NVIDIA H200" -> "H200"), or ``None``."""
    return gpu_model.gpu_key(device_name, GPU_SPECS)


# --------------------------------------------------------------------------- roofline
def kernel_launches(n: int, cq: int, c: int, h: int, w: int) -> list[dict]:
    """The kernels each op launches at (N, C', C, H, W), with FLOPs (2 per multiply-add) and the
    compulsory traffic in elements (each input read once, each output written once)."""
    plane, slots = h * w, h + w - 1
    energy = n * slots * plane
    rows = []

    def add(op, kernel, channels, flops, elements):
        rows.append({"op": op, "kernel": kernel, "channels": channels, "flops": flops, "elements": elements})

    # weight_fwd(a, b): reads a, b (channels each), writes the energy
    add("ca_weight forward", "weight_fwd", cq, 2 * cq * energy, 2 * n * cq * plane + energy)
    # map_fwd(w, v) / map_bwd_v(w, g): reads the map and (channels), writes (channels)
    add("ca_map forward", "map_fwd", c, 2 * c * energy, energy + 2 * n * c * plane)
    add("ca_weight backward", "map_fwd", cq, 2 * cq * energy, energy + 2 * n * cq * plane)
    add("ca_weight backward", "map_bwd_v", cq, 2 * cq * energy, energy + 2 * n * cq * plane)
    add("ca_map backward", "weight_fwd", c, 2 * c * energy, 2 * n * c * plane + energy)
    add("ca_map backward", "map_bwd_v", c, 2 * c * energy, energy + 2 * n * c * plane)
    return rows


def roofline(shape=PAPER_SHAPE, dtype_bytes: int = 4, gpus=tuple(GPU_SPECS)) -> list[dict]:
    """Per kernel: GFLOP, MiB moved and the time they imply on each GPU, ``max(bytes / bandwidth,
    flops / peak)`` in microseconds, with which bound it is."""
    n, cq, c, size = shape
    out = []
    for row in kernel_launches(n, cq, c, size, size):
        bytes_moved = row["elements"] * dtype_bytes
        entry = {
            "op": row["op"],
            "kernel": row["kernel"],
            "channels": row["channels"],
            "gflop": row["flops"] / 1e9,
            "moved_mib": bytes_moved / 2**20,
            "flop_per_byte": row["flops"] / bytes_moved,
        }
        for gpu in gpus:
            spec = GPU_SPECS[gpu]
            memory_us = bytes_moved / (spec["bandwidth_gb_s"] * 1e9) * 1e6
            compute_us = row["flops"] / (spec["fp32_tflops"] * 1e12) * 1e6
            entry[f"{gpu}_us"] = max(memory_us, compute_us)
            entry[f"{gpu}_bound"] = "memory" if memory_us >= compute_us else "compute"
        out.append(entry)
    return out


# --------------------------------------------------------------------------- formulations
def _attention_with_lse(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Fused attention (B, 1, L, E) with scale 1: output (B, 1, L, Ev) and its log-sum-exp (B, 1, L)."""
    if q.is_cuda:  # memory-efficient attention: value may have its own head size Ev
        out, lse, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, scale=1.0)
        return out, lse[..., : q.shape[2]]
    # CPU (checks only): flash needs one head size; zero channels change neither q.k nor the output
    e, ev = q.shape[-1], v.shape[-1]
    pad = torch.nn.functional.pad
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        pad(q, (0, max(ev - e, 0))), pad(k, (0, max(ev - e, 0))), pad(v, (0, max(e - ev, 0))), scale=1.0
    )
    return out[..., :ev], lse


def axial_sdpa(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Criss-cross attention as row + column fused attention merged by log-sum-exp (module doc)."""
    n, cq, h, w = query.shape
    c = value.shape[1]

    def lines(t: Tensor, along_rows: bool) -> Tensor:  # (N, C, H, W) -> (N*H, 1, W, C) or (N*W, 1, H, C)
        t = t.permute(0, 2, 3, 1) if along_rows else t.permute(0, 3, 2, 1)
        return t.reshape(-1, 1, t.shape[2], t.shape[3]).contiguous()  # the fused kernels want a dense last dim

    out_r, lse_r = _attention_with_lse(lines(query, True), lines(key, True), lines(value, True))
    out_c, lse_c = _attention_with_lse(lines(query, False), lines(key, False), lines(value, False))
    acc = torch.promote_types(value.dtype, torch.float32)  # merge in float32 at least
    out_r, lse_r = out_r.reshape(n, h, w, c).to(acc), lse_r.reshape(n, h, w).to(acc)
    out_c = out_c.reshape(n, w, h, c).transpose(1, 2).to(acc)
    lse_c = lse_c.reshape(n, w, h).transpose(1, 2).to(acc)
    self_logit = (query.to(acc) * key.to(acc)).sum(1)  # (N, H, W): the pixel, counted in both lines
    top = torch.maximum(lse_r, lse_c)
    z_r, z_c, z_self = (torch.exp(x - top) for x in (lse_r, lse_c, self_logit))
    numerator = z_r[..., None] * out_r + z_c[..., None] * out_c - z_self[..., None] * value.to(acc).permute(0, 2, 3, 1)
    merged = numerator / (z_r + z_c - z_self)[..., None]
    return merged.permute(0, 3, 1, 2).to(value.dtype)


def _backend(name: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The dispatcher's backend ``name``; a call it cannot serve raises its ``can_run`` reason (the case
    records the error)."""
    candidate = cuda_dispatch.default_candidates()[name]

    def run(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        reason = candidate.can_run(query, key, value)
        if reason is not None:
            raise RuntimeError(f"{name}: {reason}")
        return candidate.run(query, key, value)

    return run


# einsum and auto first: the auto-vs-einsum check needs both when the budget runs out
FORMULATIONS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "einsum": reference.criss_cross_attention_2d,
    "auto": cca.criss_cross_attention,
    "gemm": _backend("gemm"),
    "simple": _backend("simple"),
    "fused": _backend("fused"),
    "axial_sdpa": axial_sdpa,
}
MODELLED = {"einsum", "gemm", "simple", "fused"}  # formulations with bytes in cca.profiling.gpu_model


# --------------------------------------------------------------------------- timing (CUDA)
def _time_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median CUDA-event milliseconds after ``warmup`` runs: the dispatcher's own timer."""
    return cuda_event_timer(fn, warmup=warmup, repeats=repeats)


def bench_case(name: str, size: int, dtype: torch.dtype, repeats: int, device: str = "cuda") -> dict:
    """Median forward and forward+backward time (ms) and peak memory above the inputs (MiB) of one case."""
    n, cq, c, _ = PAPER_SHAPE
    fn = FORMULATIONS[name]
    gen = torch.Generator(device=device).manual_seed(size)
    q, k = (torch.randn(n, cq, size, size, device=device, generator=gen).mul_(cq**-0.5).to(dtype) for _ in range(2))
    v = torch.randn(n, c, size, size, device=device, generator=gen).to(dtype)
    grad = torch.randn_like(v)
    device_name = torch.cuda.get_device_name() if device == "cuda" else device
    row = {"formulation": name, "size": f"{size}x{size}", "dtype": str(dtype).removeprefix("torch."), "error": "",
           "device": device_name}
    try:
        with torch.no_grad():
            row["forward_ms"] = _time_ms(lambda: fn(q, k, v), 2, repeats)
            row["backend_forward"] = _backend_of(name, q, k, v)
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        torch.autograd.grad(fn(*leaves), leaves, grad)  # auto: the choice is timed here, outside the peak
        row["backend_forward_backward"] = _backend_of(name, *leaves)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        row["forward_backward_ms"] = _time_ms(lambda: torch.autograd.grad(fn(*leaves), leaves, grad), 1, repeats)
        row["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    except Exception as exc:  # one failing formulation (e.g. out of memory) must not stop the check
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    row.update(model_columns(row, gpu_model.Shape(n, cq, c, size, size), torch.backends.cuda.matmul.allow_tf32))
    return row


def _backend_of(name: str, query: Tensor, key: Tensor, value: Tensor) -> str:
    """The backend a formulation ran: itself, or for ``auto`` the choice of this call's key."""
    if name != "auto":
        return name
    from cca.ops import cuda_dispatch

    choice = cuda_dispatch.chooser().choices.get(cuda_dispatch.choice_key(query, key, value))
    return choice.winner if choice else _env.cuda_kernel()  # not timed: CCA_CUDA_KERNEL forced one


def model_columns(row: dict, shape: gpu_model.Shape, allow_tf32: bool) -> dict:
    """GB/s (the model's HBM bytes over the measured time) and % of the model's roofline time, per pass,
    for a formulation the model knows (auto: the backend it chose); the GPU from ``row["device"]``."""
    gpu = gpu_model.gpu_key(str(row.get("device", "")))
    precision = gpu_model.precision_of("tf32" if row["dtype"] == "float32" and allow_tf32 else row["dtype"])
    out = {}
    for which, column in (("forward", "forward_ms"), ("forward_backward", "forward_backward_ms")):
        backend, ms = row.get(f"backend_{which}"), row.get(column)
        if backend not in MODELLED or not ms:
            continue
        passes = ("forward",) if which == "forward" else gpu_model.PASSES
        parts = [gpu_model.summary(backend, p, shape, precision, gpu_model.gpu_peaks()) for p in passes]
        out[f"{which}_gb_s"] = sum(p["hbm_mib"] for p in parts) * 2**20 / (ms * 1e-3) / 1e9
        if gpu is not None:
            out[f"{which}_roofline_pct"] = 100 * sum(p[f"{gpu}_us"] for p in parts) / (ms * 1e3)
    return out


def bench(sizes=SIZES, dtypes=DTYPES, repeats: int = 10, log=print) -> list[dict]:
    rows = []
    for size in sizes:
        for dtype in dtypes:
            for name in FORMULATIONS:
                rows.append(bench_case(name, size, dtype, repeats))
                log(f"  {name:10s} {size}x{size} {str(dtype):15s} {rows[-1]}")
                torch.cuda.empty_cache()
    return rows
