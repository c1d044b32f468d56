"""Which criss-cross kernels are active on CPU and CUDA, and why: ``python -m cca.info [--json]``.

Loading the kernels may trigger their JIT build (the first time only, cached).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

import cca
from cca import _env
from cca.ops import _extension, cuda_dispatch


def _active(device: str, status: dict, gpu_visible: bool) -> str:
    """What serves tensors on ``device``: compiled kernels, the reference, or nothing."""
    if device == "cuda" and not gpu_visible:
        return "none (no GPU visible)"
    if status.get("backend_requested") is None:
        return "error (see load error)"
    if status.get("backend_requested") == "reference":
        return "reference (CCA_BACKEND=reference)"
    if status.get(f"{device}_kernels"):
        return "compiled kernels"
    if status.get("backend_requested") == "extension":
        return "error (CCA_BACKEND=extension but no compiled kernels)"
    return "reference (no compiled kernels)"


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it is not readable)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return set(next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []))
    except OSError:
        return set()


def _cpu_simd(status: dict) -> tuple[bool, str]:
    """Whether 2D float32/float64 CPU calls run on the vectorised kernels, and why (the C++ test of
    ``csrc/cpu/simd.cpp``'s ``usable()``: AVX2 + FMA on this CPU and ``CCA_CPU_SIMD`` not ``0``)."""
    if not status.get("cpu_kernels") or status.get("backend_requested") == "reference":
        return False, "no (the compiled CPU kernels are not active)"
    if os.environ.get("CCA_CPU_SIMD") == "0":
        return False, "no (CCA_CPU_SIMD=0: the generic kernels)"
    flags = _cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return False, "no (this CPU lacks AVX2 + FMA: the generic kernels)"
    return True, "yes (AVX2 + FMA: 2D float32/float64; 3D and half precision on the generic kernels)"


def collect() -> dict:
    """Versions, devices, the backend switch and the state of the compiled kernels."""
    gpu_visible = torch.cuda.is_available()
    info = {
        "cca_version": cca.__version__,
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "gpu_visible": gpu_visible,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if gpu_visible else [],
        "cca_backend_env": os.environ.get("CCA_BACKEND"),
    }
    try:
        status = _extension.status()
    except Exception as exc:  # bogus CCA_BACKEND, failed build under CCA_BACKEND=extension
        try:
            requested = _env.backend()
        except ValueError:
            requested = None
        status = {
            "backend_requested": requested,
            "loaded": _extension._state["loaded"],
            "how": _extension._state["how"],
            "library": _extension._state["path"],
            "error": f"{type(exc).__name__}: {exc}",
            "cpu_kernels": False,
            "cuda_kernels": False,
            "cache_dir": str(_env.cache_dir()),
            "csrc": str(_extension.csrc_dir()),
        }
    info.update(status)
    info["active_cpu"] = _active("cpu", status, True)
    info["cpu_simd_active"], info["cpu_simd"] = _cpu_simd(status)
    info["active_cuda"] = _active("cuda", status, gpu_visible)
    info.update(cuda_choice())
    if gpu_visible and status.get("backend_requested") not in (None, "reference"):
        simple = "simple" if status.get("cuda_kernels") else "simple (not built)"
        how = "chosen per shape among fused, gemm, " + simple + ", einsum" if info["cuda_kernel"] == "auto" else \
            f"{info['cuda_kernel']} (CCA_CUDA_KERNEL)"
        info["active_cuda"] = f"attention: {how}; ca_weight/ca_map: {info['active_cuda']}"
    return info


def cuda_choice() -> dict:
    """The CUDA backend setting and the backend choices: this process's and the disk cache's."""
    try:
        requested = _env.cuda_kernel()
    except ValueError as exc:
        requested = f"invalid ({exc})"
    try:
        on_disk = _env.cuda_choice_cache()
    except ValueError:
        on_disk = False
    path = _env.cache_dir() / "cuda_choice.json"
    process = cuda_dispatch._chooser.choices if cuda_dispatch._chooser is not None else {}
    disk = cuda_dispatch.Chooser({}, cache_path=path).disk_choices() if path.is_file() else {}
    return {
        "cuda_kernel_env": os.environ.get("CCA_CUDA_KERNEL"),
        "cuda_kernel": requested,
        "cuda_choice_cache_env": os.environ.get("CCA_CUDA_CHOICE_CACHE"),
        "cuda_choice_cache_on": on_disk,
        "cuda_choice_cache_file": str(path),
        "cuda_choices_process": {k: {"winner": c.winner, "times_ms": c.times_ms} for k, c in process.items()},
        "cuda_choices_disk": disk,
    }


def _choice_lines(title: str, choices: dict) -> list[str]:
    if not choices:
        return [f"{title:<18s}none"]
    lines = [f"{title:<18s}{len(choices)}"]
    for key, entry in sorted(choices.items()):
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(entry.get("times_ms", {}).items(), key=lambda kv: kv[1]))
        lines.append(f"  {key} -> {entry['winner']}" + (f" ({times})" if times else ""))
    return lines


def _yes(value) -> str:
    return "yes" if value else "no"


def format_text(info: dict) -> str:
    cuda_build = f"CUDA {info['torch_cuda_version']} build" if info["torch_cuda_version"] else "CPU-only build"
    gpus = ", ".join(info["gpus"]) if info["gpus"] else "none"
    if info["loaded"]:
        library = f"loaded ({info['how']}) from {info['library']}"
    else:
        library = "not loaded"
    lines = [
        f"cca               {info['cca_version']}",
        f"torch             {info['torch_version']} ({cuda_build})",
        f"GPU visible       {_yes(info['gpu_visible'])} ({gpus})",
        f"CCA_BACKEND       {info['cca_backend_env'] or 'unset'} -> {info['backend_requested'] or 'invalid'}",
        f"compiled kernels  {library}",
        f"  CPU kernels     {_yes(info['cpu_kernels'])}",
        f"  CUDA kernels    {_yes(info['cuda_kernels'])}",
        f"active on CPU     {info['active_cpu']}",
        f"vectorised CPU    {info['cpu_simd']}",
        f"active on CUDA    {info['active_cuda']}",
        f"JIT cache         {info['cache_dir']}",
        f"sources (csrc)    {info['csrc']}",
        f"load error        {info['error'] or 'none'}",
        f"CCA_CUDA_KERNEL   {info['cuda_kernel_env'] or 'unset'} -> {info['cuda_kernel']}",
        f"choice cache      {'on' if info['cuda_choice_cache_on'] else 'off (CCA_CUDA_CHOICE_CACHE=1 turns it on)'}: "
        f"{info['cuda_choice_cache_file']}",
        *_choice_lines("choices (process)", info["cuda_choices_process"]),
        *_choice_lines("choices (disk)", info["cuda_choices_disk"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cca.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_text(info), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
