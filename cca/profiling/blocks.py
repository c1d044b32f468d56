"""The context blocks the paper compares, and :func:`profile_block` (FLOPs + memory + latency).

Default input, the paper's efficiency setting: ``1 x 512 x 97 x 97``. A 769 x 769 Cityscapes crop
at output stride 8 gives a ``ceil(769 / 8) = 97``-pixel side, and the head's 3 x 3 conv reduces the
backbone's 2048 channels to 512 before the attention. Evidence: the author's answer in the official
repository's issue #2 (speedinghzl/CCNet), as recorded in ``experiments/paper/efficiency.csv``:
both the non-local block and RCCA are measured alone on this same 1 x 512 x 97 x 97 feature map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cca.nn import CONTEXT_BLOCKS, build_context_block
from cca.ops import use_extension
from cca.profiling.flops import count_flops, count_parameters
from cca.profiling.latency import latency
from cca.profiling.memory import peak_memory
from cca.provenance import hardware

__all__ = [
    "ATTENTION_BLOCKS",
    "PAPER_INPUT",
    "REQUIRED_BLOCKS",
    "block_names",
    "build_block",
    "profile_block",
]

PAPER_INPUT = (1, 512, 97, 97)
REQUIRED_BLOCKS = ("nonlocal", "cca", "rcca", "psp", "aspp")
ATTENTION_BLOCKS = ("cca", "rcca")  # blocks whose FLOPs must contain the criss-cross ops


def block_names() -> tuple[str, ...]:
    """Every block that can be profiled: ``cca.nn.CONTEXT_BLOCKS``."""
    return tuple(CONTEXT_BLOCKS)


def build_block(name: str, in_channels: int, recurrence: int = 2) -> nn.Module:
    """``cca.nn.build_context_block(name, in_channels)``; ``recurrence`` is passed to ``"rcca"`` only."""
    names = block_names()
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"unknown block {name!r}; valid blocks: {', '.join(names)}")
    if not isinstance(recurrence, int) or recurrence < 1:
        raise ValueError(f"recurrence must be an int >= 1, got recurrence={recurrence!r}")
    kwargs = {"recurrence": recurrence} if name == "rcca" else {}
    return build_context_block(name, in_channels, **kwargs)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
    if shape is None or len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be 4 positive ints (N, C, H, W), got input_shape={input_shape!r}")
    return shape


def _check_profile_arguments(input_shape: Sequence[int], device: str, repeats: int) -> tuple[int, int, int, int]:
    """The checked ``(N, C, H, W)`` of :func:`profile_block`; ValueError naming a bad device or repeat count."""
    shape = _check_shape(input_shape)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got device={device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False (no GPU here)")
    if not isinstance(repeats, int) or repeats < 0:
        raise ValueError(f"repeats must be an int >= 0, got repeats={repeats!r}")
    return shape


def profile_block(
    name: str,
    input_shape: Sequence[int] = PAPER_INPUT,
    recurrence: int = 2,
    device: str = "cpu",
    *,
    memory_method: str = "auto",
    criss_cross: str = "op",
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    """FLOPs, parameters, peak training memory and latency of one block on ``input_shape``.

    Args:
        name: one of :func:`block_names` (``"nonlocal"``, ``"cca"``, ``"rcca"``, ``"psp"``, ``"aspp"``, ...).
        input_shape: ``(N, C, H, W)``, default :data:`PAPER_INPUT`.
        recurrence: loops of ``"rcca"`` (ignored by the other blocks; reported as ``None`` for them).
        device: ``"cpu"`` or ``"cuda"`` for latency and (``memory_method="auto"``) memory.
        memory_method: see :func:`cca.profiling.memory.peak_memory`.
        criss_cross: ``"op"`` or ``"backend"``, see :func:`cca.profiling.memory.peak_memory`.
        warmup, repeats: latency runs; ``repeats=0`` skips latency (``latency_ms`` is ``None``).

    Returns:
        dict with ``block``, ``input``, ``gflops``, ``params``, ``peak_memory_mib``, ``memory_method``,
        ``latency_ms`` (``{"forward", "forward_backward"}`` medians), ``device`` and the details.
    """
    shape = _check_profile_arguments(input_shape, device, repeats)
    if memory_method == "auto":
        memory_method = "cuda" if device == "cuda" else "fake"
    block = build_block(name, shape[1], recurrence)

    flops = count_flops(block, torch.empty(shape, device="meta"))
    if name in ATTENTION_BLOCKS and not flops["by_operator"].get("criss_cross_affinity"):
        raise RuntimeError(
            f"the FLOP count of {name!r} contains no criss-cross affinity: the block does not call "
            f"cca.criss_cross_attention (or the op routing changed); ops seen: {flops['by_operator']}"
        )
    memory = peak_memory(build_block(name, shape[1], recurrence), shape, method=memory_method, criss_cross=criss_cross)
    times = None
    details = None
    if repeats:
        details = {
            mode: latency(
                build_block(name, shape[1], recurrence), shape, mode=mode, device=device, warmup=warmup, repeats=repeats
            )
            for mode in ("forward", "forward_backward")
        }
        times = {mode: result["median_ms"] for mode, result in details.items()}
    return {
        "block": name,
        "recurrence": recurrence if name == "rcca" else None,
        "input": list(shape),
        "gflops": flops["gflops"],
        "params": count_parameters(block),
        "peak_memory_mib": memory["peak_memory_mib"],
        "memory_method": memory["memory_method"],
        "latency_ms": times,
        "device": device,
        "hardware": hardware(device),
        "flops": flops["flops"],
        "macs": flops["macs"],
        "flops_convention": flops["flops_convention"],
        "flops_method": flops["flops_method"],
        "flops_by_operator": flops["by_operator"],
        "flops_by_module": flops["by_module"],
        "ignored_ops": flops["ignored_ops"],
        "peak_memory_bytes": memory["peak_memory_bytes"],
        "memory_breakdown_mib": memory["memory_breakdown_mib"],
        "memory_includes": memory["memory_includes"],
        "criss_cross_model": memory["criss_cross_model"],
        "nvml_process_memory_mib": memory.get("nvml_process_memory_mib"),
        "latency": details,
        "cca_backend": "extension" if use_extension(torch.device(device)) else "reference",
        "dtype": "float32",
        "torch_version": torch.__version__,
    }
