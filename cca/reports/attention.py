"""Where a pixel looks: criss-cross attention maps of one loop (R=1) and composed over loops (R=2).

A loop's attention ``A (N, H+W-1, H, W)`` (``CrissCrossAttention.attention_map``) gives, for pixel
``u``, weights over its criss-cross set: slots ``0..W-1`` are the pixels of ``u``'s row, slots
``W..H+W-2`` the other pixels of its column, top to bottom. Two loops compose exactly: the weight
with which ``u`` draws on pixel ``q`` through the two loops is

    M2[u, q] = sum over p in cross(u) of A1[u -> p] * A0[p -> q]

(``A0`` the first loop, on the module's input; ``A1`` the second, on the first loop's output). This is
the paper's R=2 visualisation; it follows the attention paths only (the residual ``+ H`` and the
value projections are not part of it). More loops compose the same way.

::

    maps = attention_maps(model, image, pixels=[(40, 60), (100, 20)])   # image (3, H, W)
    plot_attention(image, maps, "reports/attention.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cca.nn import RCCA, CrissCrossAttention, CrissCrossAttention3d


def cross_indices(height: int, width: int, ys: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns ``(P, H+W-1)`` of the criss-cross slots of the pixels ``(ys[p], xs[p])``."""
    ys, xs = ys.long().view(-1, 1), xs.long().view(-1, 1)
    count = ys.shape[0]
    row_part_y = ys.expand(count, width)
    row_part_x = torch.arange(width).view(1, -1).expand(count, width)
    others = torch.arange(height - 1).view(1, -1)
    col_part_y = others + (others >= ys).long()  # the H-1 rows other than y, top to bottom
    col_part_x = xs.expand(count, height - 1)
    return torch.cat([row_part_y, col_part_y], 1), torch.cat([row_part_x, col_part_x], 1)


def slots_to_dense(weights: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scatter per-pixel slot weights ``(P, H+W-1)`` of pixels ``(ys, xs)`` onto ``(P, H, W)`` maps."""
    if weights.dim() != 2 or weights.shape[1] != height + width - 1:
        raise ValueError(f"weights must be (P, H+W-1) = (P, {height + width - 1}), got {tuple(weights.shape)}")
    rows, cols = cross_indices(height, width, ys, xs)
    dense = weights.new_zeros((weights.shape[0], height * width))
    dense.scatter_(1, rows * width + cols, weights)
    return dense.view(-1, height, width)


def compose(loops: Sequence[torch.Tensor], y: int, x: int, chunk: int = 1024) -> torch.Tensor:
    """The ``(H, W)`` map of pixel ``(y, x)`` through all ``loops`` (each ``(H+W-1, H, W)``, first loop first)."""
    if not loops:
        raise ValueError("loops must hold at least one attention map")
    length, height, width = loops[0].shape
    if length != height + width - 1:
        raise ValueError(f"an attention map must be (H+W-1, H, W), got {tuple(loops[0].shape)}")
    if not (0 <= y < height and 0 <= x < width):
        raise ValueError(f"pixel ({y}, {x}) is outside the {height}x{width} map")
    last = loops[-1]
    current = slots_to_dense(last[:, y, x].unsqueeze(0), torch.tensor([y]), torch.tensor([x]), height, width)[0]
    for attention in reversed(loops[:-1]):
        support = current.nonzero(as_tuple=True)
        weights = current[support]
        composed = current.new_zeros((height, width))
        for start in range(0, weights.numel(), chunk):
            py, px = support[0][start : start + chunk], support[1][start : start + chunk]
            rows = slots_to_dense(attention[:, py, px].t(), py, px, height, width)
            composed += (weights[start : start + chunk].view(-1, 1, 1) * rows).sum(0)
        current = composed
    return current


def _attention_modules():
    return RCCA, CrissCrossAttention, CrissCrossAttention3d


def find_attention(module: nn.Module) -> nn.Module:
    """The first ``RCCA`` (else ``CrissCrossAttention``) in ``module`` (itself included)."""
    rcca_type, cca_type, _ = _attention_modules()
    for kind in (rcca_type, cca_type):
        for sub in module.modules():
            if isinstance(sub, kind):
                return sub
    raise TypeError(f"{type(module).__name__} holds no RCCA or CrissCrossAttention module")


@torch.no_grad()
def loop_attention(attention: nn.Module, features: torch.Tensor) -> list[torch.Tensor]:
    """Per-loop attention maps ``[(N, H+W-1, H, W), ...]`` of an RCCA (``RCCA.attention_maps``) or one CCA."""
    rcca_type, cca_type, cca3d_type = _attention_modules()
    if isinstance(attention, rcca_type):
        if isinstance(attention.cca, cca3d_type):
            raise NotImplementedError("attention maps are drawn for 2D criss-cross attention only, got a video RCCA")
        if attention.recurrence < 1:
            raise ValueError("this RCCA has recurrence=0: it has no attention to show")
        return attention.attention_maps(features)
    if isinstance(attention, cca3d_type):
        raise NotImplementedError("attention maps are drawn for 2D criss-cross attention only, got CrissCrossAttention3d")
    if isinstance(attention, cca_type):
        return [attention.attention_map(features)]
    raise TypeError(f"expected an RCCA or CrissCrossAttention module, got {type(attention).__name__}")


def _as_batch(image: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"{name} must be (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
    return image


@torch.no_grad()
def attention_maps(model_or_rcca: nn.Module, image: torch.Tensor, pixels: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Attention of chosen ``pixels`` after one loop and composed over all loops.

    Args:
        model_or_rcca: a model holding an ``RCCA`` (its input is captured with a hook while the model
            runs on ``image``), or an ``RCCA`` / ``CrissCrossAttention`` module (then ``image`` is its
            input feature map).
        image: ``(3, H, W)`` / ``(1, 3, H, W)`` normalised image for a model; ``(C, h, w)`` /
            ``(1, C, h, w)`` features for a module.
        pixels: ``(y, x)`` in ``image`` coordinates; mapped to the attention grid by scaling.

    Returns:
        dict with ``"maps"`` ``{"R=1": (P, h, w), "R=2": (P, h, w), ...}`` (``R=k``: composed over the
        first ``k`` loops), ``"loops"`` (raw per-loop maps ``(H+W-1, h, w)``), ``"pixels"`` (as given),
        ``"grid_pixels"`` (on the attention grid), ``"image_size"``, ``"grid_size"``.
    """
    if not isinstance(model_or_rcca, nn.Module):
        raise TypeError(f"model_or_rcca must be an nn.Module, got {type(model_or_rcca).__name__}")
    batch = _as_batch(image, "image")
    attention = find_attention(model_or_rcca)
    if attention is model_or_rcca:
        features = batch
    else:
        captured: list[torch.Tensor] = []
        handle = attention.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
        was_training = model_or_rcca.training
        model_or_rcca.eval()
        try:
            device = next(model_or_rcca.parameters()).device
            model_or_rcca(batch.to(device))
        finally:
            handle.remove()
            model_or_rcca.train(was_training)
        if not captured:
            raise RuntimeError(f"the model never called its {type(attention).__name__} module on this input")
        features = captured[0]
    was_training = attention.training
    attention.eval()
    try:
        loops = [a[0].float().cpu() for a in loop_attention(attention, features)]
    finally:
        attention.train(was_training)
    height, width = batch.shape[-2:]
    gh, gw = loops[0].shape[-2:]
    grid_pixels = []
    for y, x in pixels:
        if not (0 <= y < height and 0 <= x < width):
            raise ValueError(f"pixel ({y}, {x}) is outside the {height}x{width} image")
        grid_pixels.append((min(gh - 1, int(y * gh / height)), min(gw - 1, int(x * gw / width))))
    maps = {
        f"R={k}": torch.stack([compose(loops[:k], gy, gx) for gy, gx in grid_pixels]) for k in range(1, len(loops) + 1)
    }
    return {
        "maps": maps,
        "loops": loops,
        "pixels": [tuple(p) for p in pixels],
        "grid_pixels": grid_pixels,
        "image_size": (int(height), int(width)),
        "grid_size": (int(gh), int(gw)),
    }


def _display_image(image: torch.Tensor) -> torch.Tensor:
    """``(H, W, 3)`` in [0, 1]: min-max scaled over all channels (undoes any normalisation for display)."""
    img = _as_batch(image, "image")[0].float().cpu()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    img = img[:3]
    return ((img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)).permute(1, 2, 0)


def plot_attention(image: torch.Tensor, result: dict[str, Any], out_path: str | Path, title: str = "") -> Path:
    """One row per pixel: the image with the pixel marked, then each ``R=k`` map over the image
    (colour = square root of the weight relative to the map's maximum, printed in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cca.reports.plots import DPI
    from cca.reports.render import save_figure

    shown = _display_image(image)
    height, width = shown.shape[:2]
    names = list(result["maps"])
    rows = len(result["pixels"])
    fig, axes = plt.subplots(rows, 1 + len(names), figsize=(2.2 * (1 + len(names)), 2.2 * rows), dpi=DPI, squeeze=False)
    for r, (y, x) in enumerate(result["pixels"]):
        axes[r][0].imshow(shown.numpy())
        axes[r][0].plot([x], [y], marker="+", color="lime", markersize=12, markeredgewidth=2)
        axes[r][0].set_title(f"pixel ({y}, {x})", fontsize=8)
        for c, name in enumerate(names, start=1):
            heat = result["maps"][name][r].view(1, 1, *result["grid_size"])
            heat = F.interpolate(heat, size=(height, width), mode="nearest")[0, 0]
            axes[r][c].imshow(shown.mean(-1).numpy(), cmap="gray", vmin=0, vmax=1)  # the image, faint grey
            # square-root colour scale: a map spread over many pixels (R=2) stays visible beside a peaked one
            weight = (heat / heat.max().clamp_min(1e-12)).sqrt().numpy()
            axes[r][c].imshow(weight, cmap="inferno", vmin=0, vmax=1, alpha=0.2 + 0.8 * weight)
            axes[r][c].plot([x], [y], marker="+", color="white", markersize=10, markeredgewidth=1.5)
            axes[r][c].set_title(f"{name} (max {float(heat.max()):.2f})", fontsize=8)
    for ax in [a for row in axes for a in row]:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_path)
