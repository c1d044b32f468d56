"""3D CCNet for video clips (the paper's CamVid experiment, "CCNet3D" there): a 2D backbone applied
to every frame, the frames' features stacked to ``(N, C, T, h, w)`` and a recurrent 3D criss-cross
attention head, so each position attends to its row, its column and the same pixel in the other frames."""

from __future__ import annotations

import os

from torch import Tensor, nn

from cca._checks import check_tensor
from cca.models.backbone import build_backbone
from cca.models.heads import AuxHead, RCCAHead3d
from cca.models.segmentor import upsample

__all__ = ["CCNet3d"]


def _to_clips(frames: Tensor, clips: int) -> Tensor:
    """``(N * T, C, h, w)`` frames (clip-major) -> ``(N, C, T, h, w)``."""
    return frames.unflatten(0, (clips, -1)).transpose(1, 2)


class CCNet3d(nn.Module):
    """CCNet with 3D criss-cross attention on clips (model ``ccnet3d``; the paper's "CCNet3D").

    ``forward(x (N, 3, T, H, W))`` returns ``{"out": (N, K, T, H, W)}`` and, in training mode,
    ``"aux"`` ``(N, K, T, H, W)`` (per-frame auxiliary FCN head on res4) and ``"feat"``
    ``(N, mid, T, h, w)`` (features after the 3D RCCA). Arguments as :class:`cca.models.CCNet`.
    """

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
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, pretrained)
        self.head = RCCAHead3d(
            self.backbone.out_channels,
            num_classes,
            recurrence=recurrence,
            reduction=reduction,
            mid_channels=mid_channels,
            dropout=dropout,
        )
        self.aux_head = AuxHead(self.backbone.aux_channels, num_classes, dropout=dropout) if aux else None

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        check_tensor("x", x, "(N, 3, T, H, W)", channels=3, owner=type(self).__name__)
        n, _, t, h, w = x.shape
        features = self.backbone(x.transpose(1, 2).flatten(0, 1))  # frames (N * T, 3, H, W)
        logits, feat = self.head(features["res5"], frames=t)
        outputs = {"out": _to_clips(upsample(logits, (h, w)), n)}
        if self.training:
            if self.aux_head is not None:
                outputs["aux"] = _to_clips(upsample(self.aux_head(features["res4"]), (h, w)), n)
            outputs["feat"] = _to_clips(feat, n)
        return outputs
