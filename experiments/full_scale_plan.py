"""What a full-scale table run needs, known before it starts: printed by ``--dry-run --scale full``.

For a training table's base settings: the GPUs (the preset's ``<gpus>xb<batch per GPU>`` or ``--nproc``),
the memory one GPU needs for one training step at the table's batch per GPU and crop (the fake-tensor
tracker of :mod:`cca.profiling.memory` with the CUDA allocator's rounding, plus SGD's momentum buffer;
no data is allocated), GPU-hours estimated from the FLOPs of the forward pass (fvcore, 2 x multiply-adds;
backward counted as twice the forward) at a named GPU's peak FP32 rate (a lower bound: real runs reach a
fraction of the peak), the checkpoints' disk size and policy, and the pretrained weights the paper used.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from experiments.spec import Options, Table, selected_rows

REFERENCE_GPU = "A100"  # the named GPU of the estimate; its peak from experiments/gpu_bench.py's data-sheet table
PRESET_GPUS = re.compile(r"_(\d+)xb(\d+)-")  # mmsegmentation's "4xb2": 4 GPUs x 2 images
MiB = 2**20


def num_classes(dataset: str) -> int:
    """Classes of a segmentation dataset, from its module (no data read)."""
    from cca.data import ade20k, camvid, cityscapes, lip

    counts = {"cityscapes": len(cityscapes.class_names()), "ade20k": ade20k.NUM_CLASSES, "lip": len(lip.CLASS_NAMES),
              "camvid": len(camvid.CLASS_NAMES)}
    if dataset not in counts:
        raise ValueError(f"no class count for dataset {dataset!r}; known: {', '.join(counts)}")
    return counts[dataset]


def gpus_and_batch(cfg: Any, nproc: int, preset: str) -> tuple[int, int]:
    """``(GPUs, images per GPU)``: ``--nproc`` when given (> 1), else the ``preset`` name's ``<gpus>xb<batch>``."""
    if nproc > 1:
        return nproc, max(1, cfg.batch_size // nproc)
    match = PRESET_GPUS.search(preset)
    if match:
        return int(match.group(1)), int(match.group(2))
    return 1, cfg.batch_size


def _network(cfg: Any):
    """The table's segmentor with CCNet's loss (cross entropy + auxiliary), returning the loss in training mode."""
    from cca.engine import builders
    from cca.profiling.network import _TrainingLoss

    model = builders.build_model(dataclasses.replace(cfg, pretrained=None), num_classes(cfg.dataset))
    return _TrainingLoss(model, aux_weight=cfg.aux_weight)


def estimate(cfg: Any, nproc: int = 1, preset: str = "") -> dict[str, Any]:
    """The figures of the plan for one training setting (see the module docstring)."""
    import torch

    from cca.profiling.flops import count_flops, count_parameters
    from cca.profiling.memory import peak_memory
    from experiments.gpu_bench import GPU_SPECS

    gpus, per_gpu = gpus_and_batch(cfg, nproc, preset or cfg.name)
    height, width = cfg.crop_size
    network = _network(cfg)
    parameters = count_parameters(network)
    memory = peak_memory(network, (per_gpu, 3, height, width), method="fake_cuda", step="training")
    momentum_mib = 4 * parameters / MiB  # SGD momentum: one float32 copy of the parameters
    forward = count_flops(_network(cfg).eval(), torch.empty((1, 3, height, width), device="meta"))["flops"]
    train_flops = 3.0 * forward * cfg.batch_size * cfg.iterations
    peak = GPU_SPECS[REFERENCE_GPU]
    weights_mib = sum(t.numel() * t.element_size() for t in network.state_dict().values()) / MiB  # + BN buffers
    return {
        "gpus": gpus,
        "batch_per_gpu": per_gpu,
        "memory_per_gpu_mib": memory["peak_memory_mib"] + momentum_mib,
        "parameters": parameters,
        "forward_gflops_per_image": forward / 1e9,
        "train_pflops": train_flops / 1e15,
        "gpu": f"{REFERENCE_GPU} ({peak['fp32_tflops']} TFLOP/s FP32 peak, {peak['source']})",
        "gpu_hours_at_peak": train_flops / (peak["fp32_tflops"] * 1e12) / 3600,
        "last_checkpoint_mib": 2 * weights_mib,  # weights + momentum (+ small RNG/optimiser bookkeeping)
        "best_checkpoint_mib": weights_mib,
        "checkpoints_mib": 2 * (2 * weights_mib) + weights_mib,  # last.pt, last.pt.prev, best.pt
    }


def plan_lines(table: Table, options: Options, base: Any) -> list[str]:
    """The ``--dry-run --scale full`` plan of ``table`` (its base settings), as indented lines."""
    if table.kind != "train" or getattr(base, "model", None) == "ccnet3d" or getattr(base, "dataset", None) is None:
        return [f"  full-scale plan: not estimated for a {table.kind!r} table ({getattr(base, 'model', '')})"]
    rows = selected_rows(table, options)
    fig = estimate(base, options.nproc, preset=getattr(table.full, "name", ""))
    hours = fig["gpu_hours_at_peak"]
    lines = [
        "  full-scale plan (base settings; rows change little: see table 2's increments):",
        f"    GPUs: {fig['gpus']} x {fig['batch_per_gpu']} images (global batch {base.batch_size}); "
        f"--device cuda --nproc {fig['gpus']}",
        f"    memory per GPU: {fig['memory_per_gpu_mib']:.0f} MiB for one training step at {fig['batch_per_gpu']}x3x"
        f"{base.crop_size[0]}x{base.crop_size[1]} (fake-tensor tracker, CUDA allocator rounding, + SGD momentum; "
        "CUDA context and cuDNN workspaces not included)",
        f"    GPU-hours (estimate): >= {hours:.0f} GPU-hours on {fig['gpu']} = {hours / fig['gpus']:.1f} h on "
        f"{fig['gpus']} GPUs at peak, from {fig['forward_gflops_per_image']:.0f} GFLOPs per image forward x 3 "
        f"(forward + backward) x {base.batch_size} x {base.iterations} iterations = {fig['train_pflops']:.0f} PFLOPs; "
        f"a lower bound: real training reaches a fraction of the peak; per row, x {len(rows)} rows = "
        f">= {hours * len(rows):.0f} GPU-hours for the rows selected",
        f"    checkpoints: last.pt {fig['last_checkpoint_mib']:.0f} MiB (weights + optimiser) every "
        f"{base.checkpoint_every} iterations, the one it replaces kept as last.pt.prev, best.pt "
        f"{fig['best_checkpoint_mib']:.0f} MiB at each better evaluation: about {fig['checkpoints_mib']:.0f} MiB "
        "on disk per row",
        f"    pretrained weights: {_weights_line(base)}",
    ]
    return lines


def _weights_line(base: Any) -> str:
    backbone = getattr(base, "backbone", "")
    given = f"--pretrained {base.pretrained}" if getattr(base, "pretrained", None) else "none given yet (--pretrained PATH)"
    return (
        f"{given}; the paper's official code starts from its deep-stem ImageNet ResNet-101 (three 3x3 stem convs), "
        f"our backbone 'resnet101_deepstem' (--set backbone=resnet101_deepstem --pretrained PATH); the preset's "
        f"backbone {backbone!r} takes torchvision's ImageNet ResNet state dict"
    )
