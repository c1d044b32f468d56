"""3D CCNet for video clips (the paper's CamVid experiment, "CCNet3D" there): a 2D backbone applied
to every frame, the frames' features stacked to ``(N, C, T, h, w)`` and a recurrent 3D criss-cross
attention head, so each position attends to its row, its column and the same pixel in the other frames."""

from __future__ import annotations

from torch import Tensor

from cca._checks import check_tensor
from cca.models.heads import RCCAHead3d
from cca.models.segmentor import CCNet, upsample

__all__ = ["CCNet3d"]


def _to_clips(frames: Tensor, clips: int) -> Tensor:
    """``(N * T, C, h, w)`` frames (clip-major) -> ``(N, C, T, h, w)``."""
    return frames.unflatten(0, (clips, -1)).transpose(1, 2)


class CCNet3d(CCNet):
    """CCNet with 3D criss-cross attention on clips (model ``ccnet3d``; the paper's "CCNet3D"): the
    same network as :class:`cca.models.CCNet` (same arguments) with :class:`~cca.models.heads.RCCAHead3d`.

    ``forward(x (N, 3, T, H, W))`` returns ``{"out": (N, K, T, H, W)}`` and, in training mode,
    ``"aux"`` ``(N, K, T, H, W)`` (per-frame auxiliary FCN head on res4) and ``"feat"``
    ``(N, mid, T, h, w)`` (features after the 3D RCCA, per frame through the ``ccl_channels`` projection
    when set).
    """

    head_type = RCCAHead3d

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        check_tensor("x", x, "(N, 3, T, H, W)", channels=3, owner=type(self).__name__)
        n, _, t, h, w = x.shape
        features = self.backbone(x.transpose(1, 2).flatten(0, 1))  # frames (N * T, 3, H, W)
        logits, feat = self.head(features["res5"], frames=t)
        outputs = {"out": _to_clips(upsample(logits, (h, w)), n)}
        if self.training:
            if self.aux_head is not None:
                outputs["aux"] = _to_clips(upsample(self.aux_head(features["res4"]), (h, w)), n)
            outputs["feat"] = _to_clips(feat if self.ccl_projection is None else self.ccl_projection(feat), n)
        return outputs
