"""Losses: cross entropy with an ignore index, OHEM cross entropy, the category consistent loss
(CCNet, TPAMI 2020) and :class:`CCNetCriterion`, which combines them term by term.

Every loss computes in float32 at least (float16/bfloat16 inputs, e.g. under autocast, are cast up)
and never returns NaN for a batch whose labels are all ``ignore_index``: the loss is then 0 (with a
graph, so ``backward`` still works). NaN or infinite inputs at labelled pixels give a NaN or
infinite loss (OHEM included), so a training run's non-finite guard sees them. Weights and margins
are checked at construction (finite, in range; :mod:`cca._checks`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cca._checks import check_tensor, finite_number, non_negative_int
from cca.data.common import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "CCLParams",
    "CCNetCriterion",
    "CategoryConsistentLoss",
    "OhemCrossEntropy",
    "VARIANCE_FORMS",
    "category_consistent_loss",
    "cross_entropy",
    "ohem_mask",
    "variance_distance",
]


def _upcast(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_logits_target(logits: Tensor, target: Tensor, name: str = "logits") -> None:
    check_tensor(name, logits, "(N, K, H, W)", floating=True)
    check_tensor("target", target, "(N, H, W)", dtypes=(torch.long,))
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"{name} (N, K, H, W) and target (N, H, W) must agree in N, H, W, got "
            f"{name}.shape={tuple(logits.shape)}, target.shape={tuple(target.shape)}"
        )


def _masked_mean_ce(logits: Tensor, target: Tensor, keep: Tensor, ignore_index: int) -> Tensor:
    """Mean cross entropy over the pixels where ``keep`` is true (0 when there are none)."""
    kept_target = torch.where(keep, target, torch.full_like(target, ignore_index))
    total = F.cross_entropy(_upcast(logits), kept_target, ignore_index=ignore_index, reduction="sum")
    return total / keep.sum().clamp(min=1)


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixel-wise cross entropy averaged over the pixels whose label is not ``ignore_index``.

    ``logits (N, K, H, W)``, ``target (N, H, W)`` long -> scalar (0 when every pixel is ignored).
    """
    _check_logits_target(logits, target)
    return _masked_mean_ce(logits, target, target != ignore_index, ignore_index)


def ohem_mask(
    logits: Tensor, target: Tensor, thresh: float = 0.7, min_kept: int = 100000, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Which pixels online hard example mining keeps: ``(N, H, W)`` bool.

    With ``p`` the softmax probability of the true class, the kept pixels are the valid ones with
    ``p <= max(thresh, p_(min_kept))``, ``p_(k)`` the ``k``-th smallest ``p`` over valid pixels: every
    pixel below ``thresh`` and at least the ``min_kept`` hardest ones (all valid pixels when there
    are no more than ``min_kept``). This is the released CCNet rule, computed exactly at full
    resolution on the logits' device with torch ops (the released code estimates the threshold
    on a 1/8-downsampled copy in NumPy).

    A valid pixel whose ``p`` is NaN (NaN or infinite logits) counts as the hardest (``p = -1``), so it
    is always kept and the loss over the mask is NaN, as plain cross entropy: a diverged model is
    never hidden behind a loss of 0.
    """
    _check_logits_target(logits, target)
    with torch.no_grad():
        valid = target != ignore_index
        prob = torch.softmax(_upcast(logits), dim=1)
        true_prob = prob.gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1).nan_to_num(nan=-1.0)
        threshold = torch.tensor(float(thresh), device=logits.device)
        k = min(int(min_kept), target.numel())
        if k > 0:
            # ignored pixels sort last (2 > any probability): fewer than k valid -> threshold 2 keeps all
            ranked = torch.where(valid, true_prob, torch.full_like(true_prob, 2.0)).flatten()
            threshold = torch.maximum(threshold, torch.kthvalue(ranked, k).values)
        return valid & (true_prob <= threshold)


class OhemCrossEntropy(nn.Module):
    """Cross entropy over the hard pixels of :func:`ohem_mask` (``thresh=0.7``, ``min_kept=100000``
    as in the released code). ``(logits (N, K, H, W), target (N, H, W)) -> scalar``."""

    def __init__(self, thresh: float = 0.7, min_kept: int = 100000, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.thresh = finite_number("thresh", thresh, 0.0, 1.0)
        self.min_kept = non_negative_int("min_kept", min_kept)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        keep = ohem_mask(logits, target, self.thresh, self.min_kept, self.ignore_index)
        return _masked_mean_ce(logits, target, keep, self.ignore_index)

    def extra_repr(self) -> str:
        return f"thresh={self.thresh}, min_kept={self.min_kept}, ignore_index={self.ignore_index}"


# ----------------------------------------------------------------------- category consistent loss
@dataclass(frozen=True)
class CCLParams:
    """Margins and weights of the category consistent loss.

    Defaults: ``experiments/paper/ccl.csv`` (rows ``delta_v``, ``delta_d``, ``alpha``, ``beta``,
    ``gamma``), where they are marked **uncertain** (the discriminative-loss values the CCL builds
    on, quoted by third-party summaries); ``tests/test_losses.py`` checks these defaults against
    that CSV.
    """

    delta_v: float = 0.5  # ccl.csv: delta_v (variance margin)
    delta_d: float = 1.5  # ccl.csv: delta_d (distance margin; centres are pushed to 2 * delta_d)
    alpha: float = 1.0  # ccl.csv: alpha (variance term weight)
    beta: float = 1.0  # ccl.csv: beta (distance term weight)
    gamma: float = 0.001  # ccl.csv: gamma (centre-norm regularisation weight)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            finite_number(field.name, getattr(self, field.name), minimum=0.0)
        if self.delta_d < self.delta_v:
            raise ValueError(f"delta_d must be >= delta_v, got delta_v={self.delta_v}, delta_d={self.delta_d}")


VARIANCE_FORMS = ("piecewise", "hinge")


def variance_distance(distance: Tensor, delta_v: float, delta_d: float, form: str = "piecewise") -> Tensor:
    """The CCL's distance ``phi_var`` of a pixel at ``distance`` from its class centre.

    * ``"piecewise"`` (the TPAMI paper's reading, see :func:`category_consistent_loss`): 0 up to
      ``delta_v``, ``(d - delta_v)^2`` up to ``delta_d``, then linear ``d - delta_d + (delta_d - delta_v)^2``
      (continuous at both knots, bounded gradient for far pixels);
    * ``"hinge"``: the discriminative loss of De Brabandere et al. (2017), ``max(0, d - delta_v)^2``.
    """
    if form == "hinge":
        return (distance - delta_v).clamp(min=0.0).square()
    if form != "piecewise":
        raise ValueError(f"variance form must be one of {VARIANCE_FORMS}, got {form!r}")
    quadratic = (distance - delta_v).clamp(min=0.0, max=delta_d - delta_v)
    return quadratic.square() + (distance - delta_d).clamp(min=0.0)


def _label_at(target: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, H, W)`` labels resized (nearest) to ``size``."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.interpolate(target.unsqueeze(1).float(), size=size, mode="nearest").squeeze(1).long()


def category_consistent_loss(
    feat: Tensor,
    target: Tensor,
    params: CCLParams | None = None,
    ignore_index: int = IGNORE_INDEX,
    variance: str = "piecewise",
) -> dict[str, Tensor]:
    """Category consistent loss terms of features ``feat (N, C, h, w)`` and labels ``target (N, H, W)``.

    Labels are resized (nearest) to ``(h, w)``; ``ignore_index`` pixels are left out. For each image,
    with ``mu_c`` the mean feature of class ``c`` over its ``N_c`` pixels and ``C`` the classes present:

    * ``var = 1/C sum_c 1/N_c sum_i phi_var(||mu_c - h_i||)`` (:func:`variance_distance` of form ``variance``);
    * ``dis = 1/(C(C-1)) sum_{a != b} max(0, 2 delta_d - ||mu_a - mu_b||)^2`` (0 when ``C < 2``);
    * ``reg = 1/C sum_c ||mu_c||``;

    each averaged over the images with at least one labelled pixel (0 when none). Returns
    ``{"var", "dis", "reg", "loss" = alpha var + beta dis + gamma reg}``, scalars (float32 at least).

    Form: the TPAMI paper's loss (Huang et al. 2020, Sec. "category consistent loss") builds on the
    discriminative loss of De Brabandere et al. (2017, arXiv 1708.02551) and replaces its variance
    hinge ``max(0, d - delta_v)^2`` by a piecewise function that becomes linear beyond ``delta_d``
    (bounded gradients for far pixels). We could not re-read the paper's equation here: the search
    tool found the De Brabandere form (e.g. the Chainer docs of
    ``discriminative_margin_based_clustering_loss``) but not the TPAMI text, so the linear piece
    ``d - delta_d + (delta_d - delta_v)^2`` is our reading of it, and the margins/weights are the
    uncertain values of ``experiments/paper/ccl.csv``. ``variance="hinge"`` gives the plain
    De Brabandere form (identical wherever ``||mu_c - h_i|| <= delta_d``). Centres are per image, as
    De Brabandere et al.
    """
    params = CCLParams() if params is None else params
    if variance not in VARIANCE_FORMS:
        raise ValueError(f"variance must be one of {VARIANCE_FORMS}, got variance={variance!r}")
    check_tensor("feat", feat, "(N, C, h, w)", floating=True)
    check_tensor("target", target, "(N, H, W)", dtypes=(torch.long,))
    if feat.shape[0] != target.shape[0]:
        raise ValueError(f"feat and target must have the same batch size, got {feat.shape[0]} and {target.shape[0]}")
    feat = _upcast(feat)
    groups = _class_groups(feat, target, ignore_index)
    images = (groups.classes > 0).sum().clamp(min=1).to(feat.dtype)  # images with a labelled pixel
    anchor = feat.sum() * 0.0  # keeps a graph to feat when nothing is labelled
    var = _variance_per_image(groups, params.delta_v, params.delta_d, variance).sum() / images + anchor
    dis = _distance_per_image(groups, params.delta_d).sum() / images + anchor
    reg = _regularisation_per_image(groups).sum() / images + anchor
    loss = params.alpha * var + params.beta * dis + params.gamma * reg
    return {"loss": loss, "var": var, "dis": dis, "reg": reg}


class _ClassGroups(NamedTuple):
    """The labelled pixels of a batch of ``n`` images grouped by (image, class), ``k`` classes per image."""

    pixels: Tensor  # (P, C) features of the labelled pixels
    image: Tensor  # (P,) the image of each
    group: Tensor  # (P,) its (image, class) index: image * k + class
    counts: Tensor  # (n * k,) pixels per group
    present: Tensor  # (n * k,) groups with at least one pixel
    centres: Tensor  # (n * k, C) mean feature per group (0 when absent)
    classes: Tensor  # (n,) classes present per image
    k: int


def _class_groups(feat: Tensor, target: Tensor, ignore_index: int) -> _ClassGroups:
    """The class centres of ``feat (N, C, h, w)`` under ``target (N, H, W)`` resized to ``(h, w)``."""
    n, c, h, w = feat.shape
    label = _label_at(target, (h, w)).reshape(n, h * w)
    valid = label != ignore_index
    if bool((label[valid] < 0).any()):
        raise ValueError(f"target has negative labels other than ignore_index={ignore_index}")
    k = int(label[valid].max()) + 1 if bool(valid.any()) else 1
    pixels = feat.permute(0, 2, 3, 1).reshape(n * h * w, c)[valid.flatten()]
    image = torch.arange(n, device=feat.device).unsqueeze(1).expand(n, h * w)[valid]
    group = image * k + label[valid]
    counts = torch.bincount(group, minlength=n * k).to(feat.dtype)
    present = counts > 0
    centres = torch.zeros(n * k, c, device=feat.device, dtype=feat.dtype).index_add(0, group, pixels)
    centres = centres / counts.clamp(min=1).unsqueeze(1)
    return _ClassGroups(pixels, image, group, counts, present, centres, present.view(n, k).sum(1).to(feat.dtype), k)


def _variance_per_image(groups: _ClassGroups, delta_v: float, delta_d: float, form: str) -> Tensor:
    """``(n,)``: per image, over its classes, the mean over each class's pixels of ``phi_var(||mu_c - h_i||)``."""
    pixels, image, group, counts, _, centres, classes, _ = groups
    phi = variance_distance(torch.linalg.vector_norm(pixels - centres[group], dim=1), delta_v, delta_d, form)
    return classes.new_zeros(len(classes)).index_add(0, image, phi / counts[group]) / classes.clamp(min=1)


def _distance_per_image(groups: _ClassGroups, delta_d: float) -> Tensor:
    """``(n,)``: per image, the mean over ordered pairs of its classes of ``max(0, 2 delta_d - ||mu_a - mu_b||)^2``."""
    present, centres, classes, k, n = groups.present, groups.centres, groups.classes, groups.k, len(groups.classes)
    distinct = ~torch.eye(k, dtype=torch.bool, device=present.device)
    pair_image, first, second = (present.view(n, k, 1) & present.view(n, 1, k) & distinct).nonzero(as_tuple=True)
    centre_grid = centres.view(n, k, -1)
    gaps = torch.linalg.vector_norm(centre_grid[pair_image, first] - centre_grid[pair_image, second], dim=1)
    push = (2 * delta_d - gaps).clamp(min=0.0).square()
    pairs = (classes * (classes - 1)).clamp(min=1)
    return classes.new_zeros(n).index_add(0, pair_image, push / pairs[pair_image])


def _regularisation_per_image(groups: _ClassGroups) -> Tensor:
    """``(n,)``: per image, the mean norm of its class centres."""
    present, centres, classes, k = groups.present, groups.centres, groups.classes, groups.k
    norms = torch.linalg.vector_norm(centres[present], dim=1)
    image = present.nonzero().squeeze(1) // k
    return classes.new_zeros(len(classes)).index_add(0, image, norms / classes.repeat_interleave(k)[present])


class CategoryConsistentLoss(nn.Module):
    """Category consistent loss (CCNet, TPAMI 2020) on the features after the context block, see
    :func:`category_consistent_loss`. ``(feat (N, C, h, w), target (N, H, W)) -> scalar``.

    The margins and weights default to :class:`CCLParams`, the values of ``experiments/paper/ccl.csv``
    (marked uncertain there); ``params`` replaces them all at once. ``variance``: ``"piecewise"``
    (the paper's reading) or ``"hinge"`` (De Brabandere et al.), see :func:`variance_distance`.
    """

    def __init__(
        self,
        delta_v: float = CCLParams.delta_v,
        delta_d: float = CCLParams.delta_d,
        alpha: float = CCLParams.alpha,
        beta: float = CCLParams.beta,
        gamma: float = CCLParams.gamma,
        ignore_index: int = IGNORE_INDEX,
        variance: str = "piecewise",
        params: CCLParams | None = None,
    ) -> None:
        super().__init__()
        if params is None:
            params = CCLParams(delta_v=delta_v, delta_d=delta_d, alpha=alpha, beta=beta, gamma=gamma)
        elif not isinstance(params, CCLParams):
            raise TypeError(f"params must be a CCLParams or None, got {type(params).__name__}")
        if variance not in VARIANCE_FORMS:
            raise ValueError(f"variance must be one of {VARIANCE_FORMS}, got variance={variance!r}")
        self.params, self.ignore_index, self.variance = params, ignore_index, variance

    def terms(self, feat: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``{"loss", "var", "dis", "reg"}`` (see :func:`category_consistent_loss`)."""
        return category_consistent_loss(feat, target, self.params, self.ignore_index, self.variance)

    def forward(self, feat: Tensor, target: Tensor) -> Tensor:
        return self.terms(feat, target)["loss"]

    def extra_repr(self) -> str:
        return f"{self.params}, variance={self.variance!r}, ignore_index={self.ignore_index}"


# ----------------------------------------------------------------------------------- criterion
def _resized(logits: Tensor, target: Tensor) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(target.shape[-2:]):
        return logits
    return F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)


def _frames(x: Tensor) -> Tensor:
    """Video ``(N, C, T, H, W)`` -> frames ``(N * T, C, H, W)`` (clip-major); 4D passes unchanged."""
    return x.transpose(1, 2).flatten(0, 1) if x.dim() == 5 else x


class CCNetCriterion(nn.Module):
    """CCNet's training loss: ``main_weight * main + aux_weight * aux + ccl_weight * ccl``.

    * main: cross entropy (or OHEM cross entropy with ``ohem=True``, main head only, as the
      released code) on ``outputs["out"]``;
    * aux: cross entropy on ``outputs["aux"]`` (0 when absent or ``aux_weight == 0``);
    * ccl: :class:`CategoryConsistentLoss` on ``outputs["feat"]`` (computed only when ``ccl_weight > 0``);
      ``ccl``: its :class:`CCLParams` or a configured :class:`CategoryConsistentLoss` (default: the paper's).

    ``criterion(outputs: dict, target (N, H, W) long) -> (loss, {"main", "aux", "ccl"})``, the terms
    detached and unweighted (always the three keys). Logits at another size than ``target`` are
    resized (bilinear) to it. Video outputs (``out``/``aux`` ``(N, K, T, H, W)``, ``feat``
    ``(N, C, T, h, w)``) with ``target (N, T, H, W)`` are scored as ``N * T`` frames.
    """

    def __init__(
        self,
        aux_weight: float = 0.4,
        ohem: bool = False,
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100000,
        ccl_weight: float = 0.0,
        ccl: CCLParams | CategoryConsistentLoss | None = None,
        ignore_index: int = IGNORE_INDEX,
        main_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.main_weight = finite_number("main_weight", main_weight, minimum=0.0)
        self.aux_weight = finite_number("aux_weight", aux_weight, minimum=0.0)
        self.ccl_weight = finite_number("ccl_weight", ccl_weight, minimum=0.0)
        self.ignore_index = ignore_index
        self.ohem = OhemCrossEntropy(ohem_thresh, ohem_min_kept, ignore_index) if ohem else None
        if ccl is None or isinstance(ccl, CCLParams):
            ccl = CategoryConsistentLoss(ignore_index=ignore_index, params=ccl)
        elif not isinstance(ccl, CategoryConsistentLoss):
            raise TypeError(f"ccl must be None, a CCLParams or a CategoryConsistentLoss, got {type(ccl).__name__}")
        self.ccl = ccl

    def _check(self, outputs: dict[str, Tensor], target: Tensor) -> None:
        if not isinstance(outputs, dict) or "out" not in outputs:
            got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            raise ValueError(f"outputs must be a dict with 'out' (and 'aux', 'feat'), got {got}")
        video = outputs["out"].dim() == 5
        if isinstance(target, Tensor) and video and target.dim() != 4:
            raise ValueError(
                f"video logits (N, K, T, H, W) need target (N, T, H, W), got out.shape={tuple(outputs['out'].shape)}, "
                f"target.shape={tuple(target.shape)}"
            )

    def forward(self, outputs: dict[str, Tensor], target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        self._check(outputs, target)
        if outputs["out"].dim() == 5:
            outputs = {k: _frames(v) for k, v in outputs.items()}
            target = target.flatten(0, 1)
        logits = _resized(outputs["out"], target)
        main = self.ohem(logits, target) if self.ohem is not None else cross_entropy(logits, target, self.ignore_index)
        zero = main.new_zeros(()).detach()  # an unused term is 0, even when main is NaN
        aux = zero
        if self.aux_weight > 0 and "aux" in outputs:
            aux = cross_entropy(_resized(outputs["aux"], target), target, self.ignore_index)
        ccl = zero
        if self.ccl_weight > 0:
            if "feat" not in outputs:
                raise ValueError(
                    f"ccl_weight > 0 needs outputs['feat'] (the model in training mode), got {sorted(outputs)}"
                )
            ccl = self.ccl(outputs["feat"], target)
        loss = self.main_weight * main + self.aux_weight * aux + self.ccl_weight * ccl
        return loss, {"main": main.detach(), "aux": aux.detach(), "ccl": ccl.detach()}

    def extra_repr(self) -> str:
        return (
            f"main_weight={self.main_weight}, aux_weight={self.aux_weight}, ohem={self.ohem is not None}, "
            f"ccl_weight={self.ccl_weight}, ignore_index={self.ignore_index}"
        )
