"""Mask R-CNN (torchvision) with an RCCA block on C5, the paper's COCO instance-segmentation setup:
the recurrent criss-cross attention is inserted after the last backbone stage (res5 / C5), before
the FPN. ``rcca=False`` gives the plain Mask R-CNN baseline."""

from __future__ import annotations

import os
from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from cca._checks import int_in_range
from cca.models.backbone import load_pretrained
from cca.nn import RCCA

__all__ = ["MASK_RCNN_BACKBONES", "RCCABody", "build_mask_rcnn"]

MASK_RCNN_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


class RCCABody(nn.Module):
    """Wraps a torchvision FPN body (``IntermediateLayerGetter``: image -> ordered dict of C2..C5):
    the last feature map (C5, ``(N, channels, H/32, W/32)``) goes through :class:`cca.nn.RCCA`
    (``gamma = 0`` at init, so training starts from the plain body); the others pass unchanged."""

    def __init__(self, body: nn.Module, channels: int, recurrence: int = 2, reduction: int = 8) -> None:
        super().__init__()
        self.body = body
        self.rcca = RCCA(channels, recurrence=recurrence, reduction=reduction)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        features = OrderedDict(self.body(x))
        last = next(reversed(features))
        features[last] = self.rcca(features[last])
        return features


def _last_stage_channels(body: nn.Module) -> int:
    convs = [m for m in body.layer4.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def build_mask_rcnn(
    num_classes: int,
    backbone: str = "resnet50",
    rcca: bool = True,
    recurrence: int = 2,
    pretrained: str | os.PathLike | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    reduction: int = 8,
    trainable_layers: int | None = None,
    **kwargs,
) -> MaskRCNN:
    """torchvision Mask R-CNN with a ResNet-FPN backbone (no download: ``weights=None``), optionally
    with RCCA on C5 before the FPN.

    Args:
        num_classes: classes including the background (COCO: 81 with torchvision's convention).
        backbone: one of ``MASK_RCNN_BACKBONES`` (the paper: ``resnet50`` and ``resnet101``).
        rcca: insert :class:`RCCABody`'s RCCA on C5, the output of the last ResNet stage (2048 channels on
            R-50/101), before the FPN: the paper adds the block at the end of the backbone (``False``: the baseline).
        recurrence, reduction: of the RCCA block.
        pretrained: local path of ImageNet weights for the ResNet body (:func:`load_pretrained`).
            As torchvision does, a pretrained body uses ``FrozenBatchNorm2d`` and trains its last
            ``trainable_layers`` (default 3) stages; a body from scratch uses ``BatchNorm2d`` and
            trains all 5.
        min_size, max_size: image resizing of ``GeneralizedRCNNTransform`` (COCO: 800, 1333).
        **kwargs: passed to ``torchvision.models.detection.MaskRCNN`` (``box_batch_size_per_image``,
            ``rpn_post_nms_top_n_train``, ...).

    Returns:
        ``MaskRCNN``: ``model(images: list[(3, H, W)], targets)`` -> losses (train) or detections (eval).
    """
    int_in_range("num_classes", num_classes, minimum=2)  # background included
    if backbone not in MASK_RCNN_BACKBONES:
        raise ValueError(f"unknown Mask R-CNN backbone {backbone!r}; expected one of {MASK_RCNN_BACKBONES}")
    if trainable_layers is None:
        trainable_layers = 3 if pretrained is not None else 5
    int_in_range("trainable_layers", trainable_layers, 0, 5)
    norm_layer = FrozenBatchNorm2d if pretrained is not None else nn.BatchNorm2d
    fpn_backbone = resnet_fpn_backbone(
        backbone_name=backbone, weights=None, norm_layer=norm_layer, trainable_layers=trainable_layers
    )
    if pretrained is not None:
        load_pretrained(fpn_backbone.body, pretrained)
    if rcca:
        channels = _last_stage_channels(fpn_backbone.body)
        fpn_backbone.body = RCCABody(fpn_backbone.body, channels, recurrence=recurrence, reduction=reduction)
    return MaskRCNN(fpn_backbone, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs)
