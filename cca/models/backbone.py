"""Dilated ResNet backbones at output stride 8 (torchvision), the official code's deep-stem variant,
a tiny ResNet for CPU smoke runs, and loading ImageNet weights from a local file (never downloaded).

Every backbone maps ``(N, 3, H, W)`` images to ``{"res4": (N, C4, h, w), "res5": (N, C5, h, w)}``
with ``h = ceil(H / 8)``, ``w = ceil(W / 8)`` (layer3 and layer4 dilated instead of strided; the
deep stem's ceil-mode max-pool, as in the official code, can add one for some sizes).
Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1`` ... ``layer4``; the deep
stem adds ``conv2``/``bn2``/``conv3``/``bn3`` as the official CCNet weights do), so ImageNet state
dicts load without renaming.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet

from cca._checks import check_tensor

__all__ = [
    "BACKBONES",
    "DilatedResNet",
    "TinyBasicBlock",
    "build_backbone",
    "load_pretrained",
]

BACKBONES = ("resnet50", "resnet101", "resnet50_deepstem", "resnet101_deepstem", "resnet18_tiny")
TINY_WIDTHS = (16, 32, 64, 128)  # resnet18_tiny: channels of layer1..layer4 (resnet18: 64..512)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class TinyBasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) that, unlike torchvision's ``BasicBlock``, supports
    dilation. ``(N, inplanes, H, W) -> (N, planes, H / stride, W / stride)``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _tiny_layer(inplanes: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    layers = [TinyBasicBlock(inplanes, planes, stride, dilation)]
    layers += [TinyBasicBlock(planes, planes, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DilatedResNet(nn.Module):
    """A ResNet trunk (stem, layer1..layer4) returning its last two stages at output stride 8.

    ``forward(x (N, 3, H, W)) -> {"res4": (N, aux_channels, h, w), "res5": (N, out_channels, h, w)}``;
    ``channels = (aux_channels, out_channels)``.
    Build one with :func:`build_backbone`. ``stem`` names the stem modules in order; they are
    attributes of this module (not a child ``Sequential``) to keep torchvision's parameter names.
    """

    def __init__(
        self,
        name: str,
        stem: Mapping[str, nn.Module],
        layers: tuple[nn.Module, nn.Module, nn.Module, nn.Module],
        aux_channels: int,
        out_channels: int,
    ) -> None:
        super().__init__()
        self.name = name
        self.stem = tuple(stem)
        for key, module in stem.items():
            self.add_module(key, module)
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.aux_channels = aux_channels
        self.out_channels = out_channels
        self.output_stride = 8

    @property
    def channels(self) -> tuple[int, int]:
        """``(C4, C5)``: channels of ``res4`` and ``res5``."""
        return self.aux_channels, self.out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        check_tensor("images", x, "(N, 3, H, W)", channels=3, owner=self.name)
        for key in self.stem:
            x = getattr(self, key)(x)
        x = self.layer2(self.layer1(x))
        res4 = self.layer3(x)
        return {"res4": res4, "res5": self.layer4(res4)}

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, output_stride=8, aux_channels={self.aux_channels}, out_channels={self.out_channels}"
        )


def _torchvision_resnet(depth: int, deep_stem: bool, name: str) -> DilatedResNet:
    net = getattr(resnet, f"resnet{depth}")(weights=None, replace_stride_with_dilation=[False, True, True])
    if not deep_stem:
        stem = {"conv1": net.conv1, "bn1": net.bn1, "relu": net.relu, "maxpool": net.maxpool}
    else:
        # The official CCNet stem: three 3x3 convs (3->64 stride 2, 64->64, 64->128), max-pool with
        # ceil_mode, so layer1 takes 128 channels instead of 64.
        stem = {
            "conv1": _conv3x3(3, 64, stride=2),
            "bn1": nn.BatchNorm2d(64),
            "relu1": nn.ReLU(inplace=True),
            "conv2": _conv3x3(64, 64),
            "bn2": nn.BatchNorm2d(64),
            "relu2": nn.ReLU(inplace=True),
            "conv3": _conv3x3(64, 128),
            "bn3": nn.BatchNorm2d(128),
            "relu3": nn.ReLU(inplace=True),
            "maxpool": nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        }
        first = net.layer1[0]
        first.conv1 = nn.Conv2d(128, first.conv1.out_channels, 1, bias=False)
        first.downsample[0] = nn.Conv2d(128, first.downsample[0].out_channels, 1, bias=False)
        for module in (first.conv1, first.downsample[0]):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    layers = (net.layer1, net.layer2, net.layer3, net.layer4)
    return DilatedResNet(name, stem, layers, aux_channels=1024, out_channels=2048)


def _tiny_resnet(name: str) -> DilatedResNet:
    w1, w2, w3, w4 = TINY_WIDTHS
    stem = {
        "conv1": nn.Conv2d(3, w1, 7, stride=2, padding=3, bias=False),
        "bn1": nn.BatchNorm2d(w1),
        "relu": nn.ReLU(inplace=True),
        "maxpool": nn.MaxPool2d(3, stride=2, padding=1),
    }
    layers = (
        _tiny_layer(w1, w1, 2, stride=1, dilation=1),
        _tiny_layer(w1, w2, 2, stride=2, dilation=1),
        _tiny_layer(w2, w3, 2, stride=1, dilation=2),
        _tiny_layer(w3, w4, 2, stride=1, dilation=4),
    )
    backbone = DilatedResNet(name, stem, layers, aux_channels=w3, out_channels=w4)
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return backbone


def build_backbone(name: str = "resnet101", pretrained: str | os.PathLike | None = None) -> DilatedResNet:
    """A dilated backbone by name (see ``BACKBONES``), optionally with ImageNet weights from a local file.

    * ``resnet50`` / ``resnet101``: torchvision ResNet, ``replace_stride_with_dilation=[False, True, True]``
      (torchvision's dilation schedule), ``res4`` 1024 and ``res5`` 2048 channels;
    * ``resnet50_deepstem`` / ``resnet101_deepstem``: the same with the official CCNet code's stem
      (three 3x3 convs, 128 channels into layer1), which its ImageNet weights expect;
    * ``resnet18_tiny``: resnet18's layout (2, 2, 2, 2 basic blocks) at widths 16/32/64/128, dilated
      the same way, for CPU smoke runs (``res4`` 64, ``res5`` 128 channels).

    ``pretrained``: path of a state dict, see :func:`load_pretrained`.
    """
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}")
    if name == "resnet18_tiny":
        backbone = _tiny_resnet(name)
    else:
        depth = int(name.removeprefix("resnet").removesuffix("_deepstem"))
        backbone = _torchvision_resnet(depth, name.endswith("_deepstem"), name)
    if pretrained is not None:
        load_pretrained(backbone, pretrained)
    return backbone


# ------------------------------------------------------------------------------------ weights
_IGNORED_PREFIXES = ("fc.",)  # the ImageNet classifier
_STRIPPED_PREFIXES = ("module.", "backbone.", "body.")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ValueError(f"pretrained={str(path)!r} is not a readable PyTorch state dict: {reason}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"pretrained={str(path)!r} must hold a state dict (name -> tensor), optionally under "
            f"'state_dict' or 'model'; got {type(obj).__name__}"
        )
    state = {}
    for key, value in obj.items():
        for prefix in _STRIPPED_PREFIXES:
            key = key.removeprefix(prefix)
        state[key] = value
    return state


def _listed(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_pretrained(module: nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Load ImageNet weights from the local file ``path`` into ``module`` (a backbone or a Mask
    R-CNN body). Nothing is downloaded.

    The file holds a state dict (optionally under ``"state_dict"`` or ``"model"``; ``module.``,
    ``backbone.`` and ``body.`` prefixes are stripped). ``fc.*`` (the classifier) is ignored, as is
    ``num_batches_tracked`` where one side lacks it (old checkpoints, FrozenBatchNorm2d).

    Returns ``{"loaded": [...], "ignored": [...]}``. Raises ``FileNotFoundError`` when ``path`` is
    missing and ``ValueError`` naming the path and the missing / unexpected / mismatched keys when the
    file does not fit ``module`` (e.g. a deep-stem checkpoint for a plain-stem backbone).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"pretrained must be a path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights not found: pretrained={str(path)!r} (weights are never downloaded; "
            "put an ImageNet state dict there or pass pretrained=None)"
        )
    source = _read_state_dict(path)
    target = module.state_dict()
    ignored = [k for k in source if k.startswith(_IGNORED_PREFIXES)]
    ignored += [k for k in source if k.endswith("num_batches_tracked") and k not in target]
    missing = [k for k in target if k not in source and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in source if k not in target and k not in ignored]
    mismatched = [
        f"{k}: file {tuple(source[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in source and source[k].shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_listed(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_listed(mismatched)})")
        kind = getattr(module, "name", type(module).__name__)
        raise ValueError(f"pretrained={str(path)!r} does not fit backbone {kind!r}: " + "; ".join(parts))
    loaded = {k: v for k, v in source.items() if k in target}
    module.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "ignored": sorted(ignored)}
