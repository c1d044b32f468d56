"""Models: dilated ResNet backbones, CCNet and the baseline segmentors, 3D CCNet for video, Mask
R-CNN with RCCA for COCO, and the factory :func:`build`."""

from __future__ import annotations

import os

from torch import nn

from cca._checks import positive_int
from cca.models.backbone import BACKBONES, DilatedResNet, build_backbone, load_pretrained
from cca.models.heads import (
    ASPPHead,
    AuxHead,
    ContextHead,
    FCNHead,
    NonLocalHead,
    PSPHead,
    RCCAHead,
    RCCAHead3d,
)
from cca.models.mask_rcnn import MASK_RCNN_BACKBONES, RCCABody, build_mask_rcnn
from cca.models.segmentor import CCNet, Segmentor, assemble
from cca.models.video import CCNet3d

__all__ = [
    "ASPPHead",
    "AuxHead",
    "BACKBONES",
    "CCNet",
    "CCNet3d",
    "ContextHead",
    "DilatedResNet",
    "FCNHead",
    "MASK_RCNN_BACKBONES",
    "MODELS",
    "NonLocalHead",
    "PSPHead",
    "RCCABody",
    "RCCAHead",
    "RCCAHead3d",
    "Segmentor",
    "build",
    "build_backbone",
    "build_mask_rcnn",
    "load_pretrained",
]

# Segmentation models by name. "ccnet_horizontal"/"ccnet_vertical": RCCA over the row / column only.
MODELS = ("ccnet", "fcn", "nonlocal", "psp", "aspp", "ccnet3d", "ccnet_horizontal", "ccnet_vertical")

_BASELINE_HEADS = {"fcn": FCNHead, "nonlocal": NonLocalHead, "psp": PSPHead, "aspp": ASPPHead}


def build(
    name: str,
    num_classes: int,
    backbone: str = "resnet101",
    recurrence: int = 2,
    pretrained: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """A segmentation model by name (see ``MODELS``) with ``num_classes`` outputs.

    * ``ccnet``: :class:`CCNet` (RCCA head, ``recurrence`` loops; 0 = no attention);
    * ``ccnet_horizontal`` / ``ccnet_vertical``: CCNet whose attention covers the row / column only;
    * ``fcn`` / ``nonlocal`` / ``psp`` / ``aspp``: :class:`Segmentor` with CCNet's head around another
      context block (identity, non-local, pyramid pooling, ASPP: :class:`FCNHead`, :class:`NonLocalHead`,
      :class:`PSPHead`, :class:`ASPPHead`), the paper's context-module comparison (``recurrence`` is ignored);
    * ``ccnet3d``: :class:`CCNet3d` for clips ``(N, 3, T, H, W)`` (the paper's "CCNet3D").

    ``backbone``: one of ``BACKBONES`` (``resnet18_tiny`` for CPU smoke runs); ``pretrained``: local
    path of ImageNet backbone weights (never downloaded). Extra keyword arguments go to the model
    or head (``aux``, ``reduction``, ``mid_channels``, ``dropout``, ``ccl_channels``, ...).
    Segmentors return ``{"out"}`` in eval mode and ``{"out", "aux", "feat"}`` in training mode.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    positive_int("num_classes", num_classes)
    if name == "ccnet":
        return CCNet(num_classes, backbone, recurrence, pretrained, **kwargs)
    if name in ("ccnet_horizontal", "ccnet_vertical"):
        return CCNet(num_classes, backbone, recurrence, pretrained, direction=name.split("_")[1], **kwargs)
    if name == "ccnet3d":
        return CCNet3d(num_classes, backbone, recurrence, pretrained, **kwargs)
    ccl_channels = kwargs.pop("ccl_channels", None)
    return Segmentor(*assemble(_BASELINE_HEADS[name], num_classes, backbone, pretrained, **kwargs), ccl_channels)
