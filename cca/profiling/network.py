"""The paper's efficiency methodology: what a context block adds to the whole segmentation network.

The paper's efficiency table (ResNet-50, 769 x 769 crop, output stride 8) prints the GFLOPs and GPU
memory that +NL, +NL x2 and +RCCA add **over the baseline network**. :func:`network_increment`
measures exactly that: the same segmentor twice, once with the context block in the head and once
with the identity there (the dilated FCN baseline), and subtracts.

* The network: :class:`cca.models.Segmentor`, a dilated ResNet (output stride 8) with CCNet's head
  (:class:`cca.models.heads.ContextHead`: 3x3 conv 2048 -> 512, the block, 3x3 conv, concatenation,
  bottleneck, classifier) and the auxiliary FCN head on res4, 19 classes (Cityscapes).
* FLOPs: :func:`cca.profiling.flops.count_flops` of one forward (eval mode: the main branch; the
  auxiliary head only trains) on a meta input of the full shape: exact, no allocation.
* Memory: :func:`cca.profiling.memory.peak_memory` of one training step (forward, CCNet's loss:
  cross entropy + 0.4 x auxiliary cross entropy, backward), or of a forward alone with
  ``step="inference"``. Without a GPU: the fake-tensor tracker with the CUDA allocator's 512-byte
  rounding (``fake_cuda``: no data is allocated, so the full 769 x 769 network runs on a laptop);
  with ``device="cuda"``: ``torch.cuda.max_memory_allocated`` of a real run.

Memory is reported in MiB (2^20 bytes) and, as the paper prints it, in MB (10^6 bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from cca.losses import CCNetCriterion
from cca.models import AuxHead, ContextHead, Segmentor, build_backbone
from cca.profiling.blocks import build_block
from cca.profiling.flops import count_flops
from cca.profiling.memory import MEMORY_STEPS, peak_memory

__all__ = [
    "NETWORK_INPUT",
    "NETWORKS",
    "build_network",
    "measure_network",
    "network_increment",
]

NETWORK_INPUT = (1, 3, 769, 769)  # one 769 x 769 Cityscapes crop: the paper's efficiency setting
NETWORKS = ("resnet50", "resnet101", "resnet18_tiny")
NUM_CLASSES = 19  # Cityscapes
MiB = 2**20
MB = 10**6


class _TrainingLoss(nn.Module):
    """A segmentor with its loss: training mode returns CCNet's loss on an all-zero label map
    (the label values do not change what is allocated), eval mode the main logits ``(N, K, H, W)``."""

    def __init__(self, network: nn.Module, aux_weight: float = 0.4) -> None:
        super().__init__()
        self.network = network
        self.criterion = CCNetCriterion(aux_weight=aux_weight)

    def forward(self, x: Tensor) -> Tensor:
        outputs = self.network(x)
        if not self.training:
            return outputs["out"]
        target = torch.zeros((x.shape[0], *x.shape[-2:]), dtype=torch.long, device=x.device)
        loss, _ = self.criterion(outputs, target)
        return loss


def build_network(
    backbone: str = "resnet50",
    block: str | None = None,
    recurrence: int = 2,
    count: int = 1,
    context: Callable[[int], nn.Module] | None = None,
) -> nn.Module:
    """The segmentor of the paper's efficiency table with ``count`` copies of ``block`` in sequence
    in its head (``block=None`` or ``"fcn"``: the baseline network). ``context``, if given, builds the
    block from the head's channel count instead (e.g. a non-local variant). Returns the segmentor
    wrapped with its loss (see :class:`_TrainingLoss`)."""
    if backbone not in NETWORKS:
        raise ValueError(f"unknown network {backbone!r}; valid networks: {', '.join(NETWORKS)}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1 (blocks in sequence), got count={count!r}")
    trunk = build_backbone(backbone)
    mid = max(1, min(512, trunk.out_channels // 4))
    if context is not None:
        blocks = [context(mid) for _ in range(count)]
    elif block in (None, "fcn"):
        blocks = [nn.Identity()]
    else:
        blocks = [build_block(block, mid, recurrence) for _ in range(count)]
    module = blocks[0] if len(blocks) == 1 else nn.Sequential(*blocks)
    head = ContextHead(trunk.out_channels, NUM_CLASSES, context=module, mid_channels=mid)
    aux = AuxHead(trunk.aux_channels, NUM_CLASSES)
    return _TrainingLoss(Segmentor(trunk, head, aux))


def _check_input(input_shape: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else ()
    if len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape) or shape[1] != 3:
        raise ValueError(f"input_shape must be (N, 3, H, W) of positive ints, got input_shape={input_shape!r}")
    return shape


def measure_network(
    factory: Callable[[], nn.Module],
    input_shape: Sequence[int] = NETWORK_INPUT,
    *,
    step: str = "training",
    memory_method: str = "fake_cuda",
) -> dict:
    """GFLOPs of one forward and peak memory of one ``step`` of the network ``factory()`` builds."""
    shape = _check_input(input_shape)
    if step not in MEMORY_STEPS:
        raise ValueError(f"step must be one of {MEMORY_STEPS}, got step={step!r}")
    flops = count_flops(factory(), torch.empty(shape, device="meta"))
    memory = peak_memory(factory(), shape, method=memory_method, step=step)
    return {
        "flops": flops["flops"],
        "gflops": flops["gflops"],
        "flops_by_operator": flops["by_operator"],
        "memory_bytes": memory["peak_memory_bytes"],
        "memory_mib": memory["peak_memory_mib"],
        "memory_method": memory["memory_method"],
        "memory_includes": memory["memory_includes"],
        "memory_breakdown_mib": memory["memory_breakdown_mib"],
        "memory_reserved_mib": memory.get("reserved_memory_mib"),
        "memory_device": memory.get("memory_device"),
    }


def network_increment(
    block: str | None,
    recurrence: int = 2,
    *,
    backbone: str = "resnet50",
    input_shape: Sequence[int] = NETWORK_INPUT,
    count: int = 1,
    step: str = "training",
    device: str = "cpu",
    memory_method: str = "auto",
    context: Callable[[int], nn.Module] | None = None,
    label: str | None = None,
    baseline: dict | None = None,
) -> dict:
    """What ``count`` x ``block`` add to the ``backbone`` segmentor: the network with the block(s)
    minus the same network without (both measured here, or ``baseline`` from an earlier call).

    Returns a dict with ``block``, ``network``, ``input``, ``step``, ``gflops_increment``,
    ``memory_increment_mb`` (10^6 B), ``memory_increment_mib``, ``memory_method``,
    ``baseline_gflops``, ``baseline_memory_mib``, ``gflops``, ``memory_mib`` (the network with the
    block) and the details of both measurements.
    """
    shape = _check_input(input_shape)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got device={device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False (no GPU here)")
    if memory_method == "auto":
        memory_method = "cuda" if device == "cuda" else "fake_cuda"
    if baseline is None:
        baseline = measure_network(lambda: build_network(backbone), shape, step=step, memory_method=memory_method)
    with_block = measure_network(
        lambda: build_network(backbone, block, recurrence, count, context),
        shape,
        step=step,
        memory_method=memory_method,
    )
    memory_bytes = with_block["memory_bytes"] - baseline["memory_bytes"]
    name = label or (block or "fcn")
    return {
        "block": name,
        "recurrence": recurrence if block == "rcca" else None,
        "count": count,
        "network": f"{backbone} (dilated, output stride 8) + CCNet head + aux head, {NUM_CLASSES} classes",
        "backbone": backbone,
        "input": list(shape),
        "step": step,
        "gflops_increment": with_block["gflops"] - baseline["gflops"],
        "flops_increment": with_block["flops"] - baseline["flops"],
        "memory_increment_bytes": memory_bytes,
        "memory_increment_mb": memory_bytes / MB,
        "memory_increment_mib": memory_bytes / MiB,
        "memory_method": with_block["memory_method"],
        "memory_includes": with_block["memory_includes"],
        "memory_reserved_increment_mb": (
            None
            if with_block["memory_reserved_mib"] is None or baseline["memory_reserved_mib"] is None
            else (with_block["memory_reserved_mib"] - baseline["memory_reserved_mib"]) * MiB / MB
        ),
        "baseline_gflops": baseline["gflops"],
        "baseline_memory_mib": baseline["memory_mib"],
        "gflops": with_block["gflops"],
        "memory_mib": with_block["memory_mib"],
        "device": device,
        "baseline": baseline,
        "with_block": with_block,
    }
