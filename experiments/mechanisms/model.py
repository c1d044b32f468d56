"""The tiny segmenter of the mechanism experiments and its context blocks.

``stem (3x3 convs, full resolution, per frame) -> context block -> 1x1 classifier``. Images
``(N, 3, H, W)`` give ``{"out": (N, K, H, W), "feat": (N, C, H, W)}``; clips ``(N, 3, T, H, W)``
give the centre frame's ``out`` / ``feat`` (the temporal-cue task labels the centre frame only), the
context block seeing the whole clip ``(N, C, T, H, W)`` (3D criss-cross) or each frame alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from experiments.mechanisms.settings import MechanismSettings, Variant


class RowColumnStack(nn.Module):
    """Row attention then column attention (``"hv"``), the reverse (``"vh"``), or both orders with their
    own weights, summed (``"hv_vh"``: ``V1(H1(x)) + H2(V2(x))``): the context table's +HV / +HV&VH rows.
    Each step is a one-direction :class:`cca.nn.DirectionalAttention` (``x + gamma * attention``)."""

    def __init__(self, channels: int, order: str, reduction: int) -> None:
        super().__init__()
        from cca.nn import DirectionalAttention

        if order not in ("hv", "vh", "hv_vh"):
            raise ValueError(f"order must be 'hv', 'vh' or 'hv_vh', got order={order!r}")
        self.order = order
        names = {"h": "horizontal", "v": "vertical"}
        paths = ["hv", "vh"] if order == "hv_vh" else [order]
        self.paths = nn.ModuleList(
            nn.Sequential(*(DirectionalAttention(channels, names[step], reduction) for step in path)) for path in paths
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.paths[0](x)
        for path in self.paths[1:]:
            out = out + path(x)
        return out

    def extra_repr(self) -> str:
        return f"order={self.order!r}"


class TinySegmenter(nn.Module):
    """``stem -> context -> classifier``; ``forward`` returns ``{"out", "feat"}`` (see the module docstring).

    ``clip_context``: the context block takes ``(N, C, T, H, W)`` (3D); otherwise clips are run frame by frame.
    """

    def __init__(
        self, context: nn.Module, num_classes: int, channels: int = 32, stem_convs: int = 2, clip_context: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(stem_convs):
            layers += [
                nn.Conv2d(3 if i == 0 else channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.stem = nn.Sequential(*layers)
        self.context = context
        self.clip_context = clip_context
        self.classifier = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() == 4:
            feat = self.context(self.stem(x))
            return {"out": self.classifier(feat), "feat": feat}
        if x.dim() != 5:
            raise ValueError(
                f"TinySegmenter expects (N, 3, H, W) images or (N, 3, T, H, W) clips, got x.shape={tuple(x.shape)}"
            )
        n, _, t, h, w = x.shape
        frames = self.stem(x.transpose(1, 2).flatten(0, 1))  # (N*T, C, H, W)
        if self.clip_context:
            clips = frames.unflatten(0, (n, t)).transpose(1, 2)  # (N, C, T, H, W)
            feat = self.context(clips)[:, :, t // 2]
        else:
            feat = self.context(frames).unflatten(0, (n, t))[:, t // 2]
        return {"out": self.classifier(feat), "feat": feat}


def set_gamma(module: nn.Module, value: float) -> int:
    """Fill every parameter named ``gamma`` (attention residual weights) with ``value``; returns how many."""
    found = [p for name, p in module.named_parameters() if name.split(".")[-1] == "gamma"]
    if not found and any(True for _ in module.parameters()):
        raise RuntimeError(f"{type(module).__name__} has no parameter named 'gamma' to initialise")
    with torch.no_grad():
        for p in found:
            p.fill_(value)
    return len(found)


def gamma_values(module: nn.Module) -> list[float]:
    """The current ``gamma`` parameters of the context block (in module order)."""
    return [float(p.detach()) for name, p in module.named_parameters() if name.split(".")[-1] == "gamma"]


def build_context(settings: MechanismSettings, variant: Variant) -> nn.Module:
    """The variant's context block on ``settings.channels`` channels, gamma initialised."""
    from cca.nn import RCCA, NonLocal2d, RCCA3d

    c = settings.channels
    video = settings.task == "temporal_cue" and not variant.per_frame
    if variant.block == "none":
        return nn.Identity()
    if variant.block == "nonlocal":
        return NonLocal2d(c)
    if variant.block == "rcca":
        context: nn.Module = (RCCA3d if video else RCCA)(c, recurrence=variant.recurrence, reduction=settings.reduction)
    else:
        context = RowColumnStack(c, variant.block, settings.reduction)
    set_gamma(context, settings.gamma_init if variant.gamma_init is None else variant.gamma_init)
    return context


def build_model(settings: MechanismSettings, variant: Variant) -> TinySegmenter:
    """The tiny segmenter of ``variant`` (parameters drawn from torch's global generator)."""
    video = settings.task == "temporal_cue" and not variant.per_frame and variant.block != "none"
    if video and variant.block != "rcca":
        raise ValueError(
            f"clips with time context support block 'rcca' (3D criss-cross) only, got block={variant.block!r}"
        )
    return TinySegmenter(
        build_context(settings, variant),
        settings.num_colours + 1,
        channels=settings.channels,
        stem_convs=settings.stem_convs,
        clip_context=video,
    )
