"""Semantic segmentors: a dilated backbone, a main head on res5 and an auxiliary FCN head on res4,
logits upsampled (bilinear, ``align_corners=False``) to the input size."""

from __future__ import annotations

import os

import torch.nn.functional as F
from torch import Tensor, nn

from cca._checks import positive_int
from cca.models.backbone import DilatedResNet, build_backbone
from cca.models.heads import AuxHead, RCCAHead

__all__ = ["CCNet", "Segmentor", "assemble", "upsample"]


def upsample(logits: Tensor, size: tuple[int, int] | list[int]) -> Tensor:
    """Bilinear resize of ``(N, K, h, w)`` to ``(N, K, *size)`` with ``align_corners=False``."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def assemble(
    head_type: type[nn.Module],
    num_classes: int,
    backbone: str,
    pretrained: str | os.PathLike | None = None,
    aux: bool = True,
    dropout: float = 0.1,
    **head_kwargs,
) -> tuple[DilatedResNet, nn.Module, nn.Module | None]:
    """``(backbone, head, aux_head)``: the dilated ``backbone``, ``head_type`` on its res5 (``head_kwargs``)
    and, when ``aux``, the auxiliary FCN head on its res4."""
    trunk = build_backbone(backbone, pretrained)
    head = head_type(trunk.out_channels, num_classes, dropout=dropout, **head_kwargs)
    aux_head = AuxHead(trunk.aux_channels, num_classes, dropout=dropout) if aux else None
    return trunk, head, aux_head


class Segmentor(nn.Module):
    """``backbone -> head(res5)`` (+ ``aux_head(res4)`` while training).

    ``forward(x (N, 3, H, W))`` returns a dict:

    * ``"out"``: main logits ``(N, K, H, W)``;
    * training mode only: ``"aux"``, auxiliary logits ``(N, K, H, W)`` (when there is an aux head),
      and ``"feat"``, the features after the context module ``(N, mid, h, w)`` at output stride 8
      (projected by a 1x1 conv to ``ccl_channels`` when that is set), for the category consistent loss.

    ``head`` returns ``(logits, feat)`` on ``(N, C5, h, w)`` (see :mod:`cca.models.heads`).
    """

    def __init__(
        self,
        backbone: DilatedResNet,
        head: nn.Module,
        aux_head: nn.Module | None = None,
        ccl_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.ccl_projection: nn.Module | None = None
        if ccl_channels is not None:
            self.ccl_projection = nn.Conv2d(head.mid_channels, positive_int("ccl_channels", ccl_channels), 1)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.backbone(x)
        logits, feat = self.head(features["res5"])
        size = x.shape[-2:]
        outputs = {"out": upsample(logits, size)}
        if self.training:
            if self.aux_head is not None:
                outputs["aux"] = upsample(self.aux_head(features["res4"]), size)
            outputs["feat"] = feat if self.ccl_projection is None else self.ccl_projection(feat)
        return outputs


class CCNet(Segmentor):
    """CCNet (Huang et al.): dilated ResNet (output stride 8), :class:`~cca.models.heads.RCCAHead`
    with ``recurrence`` loops of shared criss-cross attention, auxiliary FCN head on res4.

    ``forward(x (N, 3, H, W))`` -> ``{"out": (N, K, H, W)}`` (+ ``"aux"``, ``"feat"`` in training), see
    :class:`Segmentor`. ``backbone``: a name of :data:`cca.models.backbone.BACKBONES`; ``pretrained``:
    local path of ImageNet backbone weights; ``aux=False`` drops the auxiliary head.
    """

    head_type: type[RCCAHead] = RCCAHead

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        recurrence: int = 2,
        pretrained: str | os.PathLike | None = None,
        reduction: int = 8,
        aux: bool = True,
        mid_channels: int | None = None,
        dropout: float = 0.1,
        ccl_channels: int | None = None,
        direction: str = "both",
    ) -> None:
        trunk, head, aux_head = assemble(
            self.head_type,
            num_classes,
            backbone,
            pretrained,
            aux,
            dropout,
            recurrence=recurrence,
            reduction=reduction,
            mid_channels=mid_channels,
            direction=direction,
        )
        super().__init__(trunk, head, aux_head, ccl_channels)
