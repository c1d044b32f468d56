"""cca.losses: cross entropy with ignore index, OHEM, the category consistent loss (against a loop
implementation and gradcheck) and the combined CCNetCriterion."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cca.losses import (
    CategoryConsistentLoss,
    CCLParams,
    CCNetCriterion,
    OhemCrossEntropy,
    category_consistent_loss,
    cross_entropy,
    ohem_mask,
)
from cca.losses import variance_distance as phi_var

IGNORE = 255
CCL_CSV = Path(__file__).resolve().parents[1] / "experiments" / "paper" / "ccl.csv"


# ------------------------------------------------------------------------------ cross entropy
def test_cross_entropy_matches_torch_and_ignores(make_tensor):
    logits = make_tensor((2, 4, 5, 6))
    target = torch.randint(0, 4, (2, 5, 6), generator=torch.Generator().manual_seed(0))
    target[0, :2] = IGNORE
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(cross_entropy(logits, target), expected)


def test_cross_entropy_all_ignored_is_zero_not_nan(make_tensor):
    logits = make_tensor((1, 3, 4, 4), requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE)
    loss = cross_entropy(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_cross_entropy_rejects_bad_targets(make_tensor):
    logits = make_tensor((1, 3, 4, 4))
    with pytest.raises(
        TypeError, match=r"target must be a tensor of dtype torch.int64, got target.dtype=torch.float32"
    ):
        cross_entropy(logits, torch.zeros(1, 4, 4))
    with pytest.raises(TypeError, match=r"logits must be a torch.Tensor of shape \(N, K, H, W\), got list"):
        cross_entropy(logits.tolist(), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target must be of shape \(N, H, W\), got target.shape=\(4, 4\)"):
        cross_entropy(logits, torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="must agree in N, H, W"):
        cross_entropy(logits, torch.zeros(1, 4, 5, dtype=torch.long))


# ------------------------------------------------------------------------------ OHEM
def _two_class_logits(true_prob: torch.Tensor) -> torch.Tensor:
    """Logits ``(1, 2, H, W)`` whose class-0 probability is ``true_prob`` (labels are all 0)."""
    return torch.stack([true_prob.log(), (1 - true_prob).log()]).unsqueeze(0).double()


def test_ohem_keeps_the_pixels_below_the_threshold():
    p = torch.tensor([[0.1, 0.5, 0.65, 0.71], [0.9, 0.95, 0.3, 0.99]], dtype=torch.float64)
    logits, target = _two_class_logits(p), torch.zeros(1, 2, 4, dtype=torch.long)
    target[0, 1, 2] = IGNORE  # a hard pixel, but ignored
    keep = ohem_mask(logits, target, thresh=0.7, min_kept=2)
    assert not keep[0, 1, 2], "the ignored pixel (p=0.3) must not be kept"
    expected = (p <= 0.7) & (target[0] != IGNORE)
    assert torch.equal(keep[0], expected)
    loss = OhemCrossEntropy(thresh=0.7, min_kept=2)(logits, target)
    torch.testing.assert_close(loss, -p[expected].log().mean())


def test_ohem_keeps_at_least_min_kept_hardest():
    p = torch.tensor([[0.8, 0.9, 0.75, 0.99, 0.85, 0.6]], dtype=torch.float64)
    logits, target = _two_class_logits(p), torch.zeros(1, 1, 6, dtype=torch.long)
    keep = ohem_mask(logits, target, thresh=0.7, min_kept=3)
    # below 0.7: only 0.6; the 3 hardest are 0.6, 0.75, 0.8
    assert torch.equal(keep[0, 0], torch.tensor([True, False, True, False, False, True]))
    loss = OhemCrossEntropy(thresh=0.7, min_kept=3)(logits, target)
    torch.testing.assert_close(loss, -torch.tensor([0.8, 0.75, 0.6], dtype=torch.float64).log().mean())


def test_ohem_keeps_everything_valid_when_min_kept_exceeds_it():
    p = torch.tensor([[0.8, 0.9, 0.99, 0.6]], dtype=torch.float64)
    logits, target = _two_class_logits(p), torch.zeros(1, 1, 4, dtype=torch.long)
    target[0, 0, 1] = IGNORE
    keep = ohem_mask(logits, target, thresh=0.7, min_kept=100000)
    assert torch.equal(keep[0, 0], torch.tensor([True, False, True, True]))
    all_ignored = torch.full_like(target, IGNORE)
    assert OhemCrossEntropy(min_kept=10)(logits, all_ignored).item() == 0.0
    with pytest.raises(ValueError, match=r"thresh must be a finite number in \[0, 1\], got thresh=1.5"):
        OhemCrossEntropy(thresh=1.5)


# ------------------------------------------------------------------------------ CCL
def loop_ccl(feat, target, params, ignore=IGNORE, variance="piecewise"):
    """The CCL by plain loops: per image, per class, per pixel (float64)."""
    n, _, h, w = feat.shape
    label = F.interpolate(target[:, None].double(), size=(h, w), mode="nearest")[:, 0].long()
    totals = {"var": 0.0, "dis": 0.0, "reg": 0.0}
    images, distances = 0, []
    for b in range(n):
        members: dict[int, list[torch.Tensor]] = {}
        for y in range(h):
            for x in range(w):
                c = int(label[b, y, x])
                if c != ignore:
                    members.setdefault(c, []).append(feat[b, :, y, x])
        if not members:
            continue
        images += 1
        centres = {c: torch.stack(v).mean(0) for c, v in members.items()}
        var = 0.0
        for c, pixels in members.items():
            per_class = 0.0
            for f in pixels:
                d = (centres[c] - f).norm()
                distances.append(float(d))
                if variance == "hinge":
                    phi = max(d - params.delta_v, d * 0) ** 2
                elif d <= params.delta_v:
                    phi = d * 0
                elif d <= params.delta_d:
                    phi = (d - params.delta_v) ** 2
                else:
                    phi = d - params.delta_d + (params.delta_d - params.delta_v) ** 2
                per_class = per_class + phi
            var = var + per_class / len(pixels)
        classes = list(centres)
        dis = 0.0
        for a in classes:
            for c in classes:
                if a != c:
                    gap = (centres[a] - centres[c]).norm()
                    dis = dis + torch.clamp(2 * params.delta_d - gap, min=0) ** 2
        if len(classes) > 1:
            dis = dis / (len(classes) * (len(classes) - 1))
        reg = sum(centres[c].norm() for c in classes) / len(classes)
        totals["var"] += var / len(classes)
        totals["dis"] += dis
        totals["reg"] += reg
    out = {k: torch.as_tensor(v / max(images, 1), dtype=torch.float64) for k, v in totals.items()}
    out["loss"] = params.alpha * out["var"] + params.beta * out["dis"] + params.gamma * out["reg"]
    out["distances"] = torch.tensor(distances, dtype=torch.float64)
    return out


def _ccl_inputs(make_tensor):
    """Features ``(3, 4, 3, 4)`` and labels at twice the resolution ``(3, 6, 8)``: ignore pixels, a
    class absent from an image, an image with a single class, an image with nothing labelled."""
    feat = make_tensor((3, 4, 3, 4), scale=0.8)
    generator = torch.Generator().manual_seed(7)
    target = torch.randint(0, 4, (3, 6, 8), generator=generator)
    target[0, :2] = IGNORE
    target[0][target[0] == 2] = 1  # class 2 absent from image 0
    target[1] = torch.where(target[1] == IGNORE, IGNORE, 3)
    target[1, :, :2] = IGNORE
    target[2] = IGNORE
    return feat, target


@pytest.mark.parametrize("variance", ["piecewise", "hinge"])
def test_ccl_matches_the_loop_implementation(variance, make_tensor):
    feat, target = _ccl_inputs(make_tensor)
    # margins at quantiles of the pixel-to-centre distances, so every piece of phi_var is exercised
    d = loop_ccl(feat, target, CCLParams())["distances"]
    delta_v, delta_d = (float(q) for q in d.quantile(torch.tensor([0.3, 0.7], dtype=torch.float64)))
    params = CCLParams(delta_v=delta_v, delta_d=delta_d, alpha=1.0, beta=0.7, gamma=0.01)
    got = category_consistent_loss(feat, target, params, variance=variance)
    expected = loop_ccl(feat, target, params, variance=variance)
    for key in ("var", "dis", "reg", "loss"):
        torch.testing.assert_close(got[key].double(), expected[key], rtol=1e-6, atol=1e-7, msg=key)
    assert (d <= params.delta_v).any() and ((d > params.delta_v) & (d <= params.delta_d)).any()
    assert (d > params.delta_d).any() and got["dis"] > 0


def test_ccl_gradcheck(make_tensor):
    feat, target = _ccl_inputs(make_tensor)
    feat = feat.double().requires_grad_(True)
    params = CCLParams(delta_v=0.3, delta_d=0.9, alpha=1.0, beta=0.7, gamma=0.01)
    for variance in ("piecewise", "hinge"):
        loss_fn = CategoryConsistentLoss(params=params, variance=variance)
        assert loss_fn(feat, target).dtype == torch.float64
        assert torch.autograd.gradcheck(lambda f, fn=loss_fn: fn(f, target), (feat,), eps=1e-6, atol=1e-5)


def test_phi_var_pieces_and_continuity():
    d = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.5], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.0, 0.25, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(phi_var(d, 0.5, 1.5), expected)
    hinge = torch.tensor([0.0, 0.0, 0.25, 1.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(phi_var(d, 0.5, 1.5, "hinge"), hinge)
    eps = 1e-9
    for knot in (0.5, 1.5):
        below, above = phi_var(torch.tensor([knot - eps, knot + eps], dtype=torch.float64), 0.5, 1.5)
        assert abs(float(above - below)) < 1e-8


def test_ccl_without_labels_or_classes_is_finite(make_tensor):
    feat = make_tensor((2, 4, 3, 3), requires_grad=True)
    loss = CategoryConsistentLoss()(feat, torch.full((2, 3, 3), IGNORE))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(feat.grad).all()
    # one class, one labelled pixel: zero distance to its own centre, no pairs
    feat.grad = None
    single = torch.full((2, 3, 3), IGNORE)
    single[0, 1, 1] = 5
    terms = CategoryConsistentLoss().terms(feat, single)
    assert terms["var"].item() == 0.0 and terms["dis"].item() == 0.0
    terms["loss"].backward()
    assert torch.isfinite(feat.grad).all()


def test_ccl_defaults_come_from_the_paper_csv():
    with open(CCL_CSV, newline="") as f:
        rows = {row["parameter"]: float(row["value"]) for row in csv.DictReader(f)}
    defaults = dataclasses.asdict(CCLParams())
    assert defaults == {k: rows[k] for k in defaults}
    assert dataclasses.asdict(CategoryConsistentLoss().params) == defaults
    assert CategoryConsistentLoss(delta_v=0.2).params.delta_v == 0.2
    with pytest.raises(TypeError):
        CategoryConsistentLoss(delta_x=1.0)
    with pytest.raises(ValueError, match="variance must be one of"):
        CategoryConsistentLoss(variance="l1")
    with pytest.raises(ValueError, match="delta_d must be >= delta_v"):
        CCLParams(delta_v=2.0, delta_d=1.0)


# ------------------------------------------------------------------------------ criterion
def _outputs(make_tensor, k=3, size=(8, 8)):
    return {
        "out": make_tensor((2, k, *size), requires_grad=True),
        "aux": make_tensor((2, k, *size), requires_grad=True),
        "feat": make_tensor((2, 5, size[0] // 2, size[1] // 2), requires_grad=True),
    }


def test_criterion_combines_the_terms(make_tensor):
    outputs = _outputs(make_tensor)
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    target[1, 0] = IGNORE
    criterion = CCNetCriterion(aux_weight=0.4, ccl_weight=0.5)
    loss, terms = criterion(outputs, target)
    main = F.cross_entropy(outputs["out"], target, ignore_index=IGNORE)
    aux = F.cross_entropy(outputs["aux"], target, ignore_index=IGNORE)
    ccl = CategoryConsistentLoss()(outputs["feat"], target)
    torch.testing.assert_close(loss, main + 0.4 * aux + 0.5 * ccl)
    assert set(terms) == {"main", "aux", "ccl"} and not any(t.requires_grad for t in terms.values())
    torch.testing.assert_close(terms["ccl"], ccl.detach())
    loss.backward()
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in outputs.values())


def test_criterion_options(make_tensor):
    outputs = _outputs(make_tensor)
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(2))
    ohem = CCNetCriterion(ohem=True, ohem_thresh=0.7, ohem_min_kept=10, aux_weight=0.0)
    loss, terms = ohem(outputs, target)
    torch.testing.assert_close(loss, OhemCrossEntropy(thresh=0.7, min_kept=10)(outputs["out"], target))
    assert terms["aux"].item() == 0.0 and terms["ccl"].item() == 0.0
    # eval-mode outputs (no aux, no feat) with the default criterion
    loss, terms = CCNetCriterion()({"out": outputs["out"]}, target)
    torch.testing.assert_close(loss, F.cross_entropy(outputs["out"], target))
    # logits at another size are resized to the target
    small = {"out": outputs["out"][:, :, ::2, ::2]}
    loss, _ = CCNetCriterion()(small, target)
    resized = F.interpolate(small["out"], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(loss, F.cross_entropy(resized, target))
    with pytest.raises(ValueError, match="needs outputs\\['feat'\\]"):
        CCNetCriterion(ccl_weight=1.0)({"out": outputs["out"]}, target)
    with pytest.raises(ValueError, match="outputs must be a dict with 'out'"):
        CCNetCriterion()(outputs["out"], target)
    with pytest.raises(ValueError, match="aux_weight must be a finite number >= 0, got aux_weight=-1"):
        CCNetCriterion(aux_weight=-1)


def test_ohem_positional_order_and_bad_arguments():
    ohem = OhemCrossEntropy(0.6, 50, 0)
    assert (ohem.thresh, ohem.min_kept, ohem.ignore_index) == (0.6, 50, 0)
    with pytest.raises(ValueError, match="min_kept must be an int >= 0"):
        OhemCrossEntropy(min_kept=-1)


def test_criterion_scores_video_as_frames(make_tensor):
    """Video outputs (N, K, T, H, W) with target (N, T, H, W) equal the loss of the N * T frames."""
    n, k, t, size = 2, 3, 3, (6, 8)
    outputs = {
        "out": make_tensor((n, k, t, *size), requires_grad=True),
        "aux": make_tensor((n, k, t, *size)),
        "feat": make_tensor((n, 5, t, 3, 4)),
    }
    target = torch.randint(0, k, (n, t, *size), generator=torch.Generator().manual_seed(3))
    target[0, 1, :2] = IGNORE
    criterion = CCNetCriterion(aux_weight=0.4, ccl_weight=0.5)
    loss, terms = criterion(outputs, target)
    frames = {key: v.transpose(1, 2).flatten(0, 1) for key, v in outputs.items()}
    flat = target.flatten(0, 1)
    main = F.cross_entropy(frames["out"], flat, ignore_index=IGNORE)
    aux = F.cross_entropy(frames["aux"], flat, ignore_index=IGNORE)
    ccl = CategoryConsistentLoss()(frames["feat"], flat)
    torch.testing.assert_close(loss, main + 0.4 * aux + 0.5 * ccl)
    torch.testing.assert_close(terms["main"], main.detach())
    loss.backward()
    assert outputs["out"].grad.shape == outputs["out"].shape
    with pytest.raises(ValueError, match=r"need target \(N, T, H, W\)"):
        criterion(outputs, flat)


def test_criterion_takes_a_configured_ccl(make_tensor):
    outputs = _outputs(make_tensor)
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(4))
    custom = CategoryConsistentLoss(delta_v=0.1, delta_d=0.2, gamma=0.5, variance="hinge")
    loss, terms = CCNetCriterion(aux_weight=0.0, ccl_weight=2.0, ccl=custom)(outputs, target)
    torch.testing.assert_close(terms["ccl"], custom(outputs["feat"], target).detach())
    assert terms["ccl"] != CategoryConsistentLoss()(outputs["feat"], target)
    params = CCLParams(delta_v=0.1, delta_d=0.2)
    assert CCNetCriterion(ccl=params).ccl.params == params
    with pytest.raises(TypeError, match="ccl must be None, a CCLParams or a CategoryConsistentLoss"):
        CCNetCriterion(ccl={"delta_v": 0.1})


def test_criterion_all_ignored_batch_is_finite(make_tensor):
    outputs = _outputs(make_tensor)
    target = torch.full((2, 8, 8), IGNORE)
    loss, terms = CCNetCriterion(ohem=True, ccl_weight=1.0)(outputs, target)
    assert math.isfinite(loss.item()) and loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(v.grad).all() for v in outputs.values())


def test_ignore_index_has_one_home():
    """``IGNORE_INDEX`` is defined in ``cca/data/common.py`` and imported everywhere else (the losses too)."""
    import ast

    import cca
    from cca.data import common

    root = Path(cca.__file__).parent
    homes = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == "IGNORE_INDEX" for t in targets):
                homes.add(path.relative_to(root).as_posix())
    assert "data/common.py" in homes and IGNORE == common.IGNORE_INDEX
    assert homes == {"data/common.py"}, homes  # nothing else may define it
