"""Non-finite inputs and arguments of the losses: NaN/inf logits are never hidden (OHEM included, so
a training run's non-finite guard stops it), NaN/inf/negative weights and margins are refused at
construction with the argument's name, value and range."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cca.losses import (
    IGNORE_INDEX,
    CategoryConsistentLoss,
    CCLParams,
    CCNetCriterion,
    OhemCrossEntropy,
    cross_entropy,
    ohem_mask,
)

NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------------- NaN through OHEM
def test_ohem_of_all_nan_logits_is_nan():
    """First reproducer (was 0)."""
    loss = OhemCrossEntropy()(torch.full((1, 19, 4, 4), NAN), torch.zeros(1, 4, 4, dtype=torch.long))
    assert math.isnan(loss.item())


def test_ohem_with_one_nan_pixel_and_fewer_valid_than_min_kept_is_nan(make_tensor):
    """Second reproducer: the k-th value was NaN, so nothing was kept (loss 0)."""
    logits = make_tensor((1, 19, 4, 4), dtype=torch.float32)
    logits[0, :, 2, 1] = NAN
    target = torch.randint(0, 19, (1, 4, 4), generator=torch.Generator().manual_seed(0))
    assert target.numel() < OhemCrossEntropy().min_kept
    assert math.isnan(OhemCrossEntropy()(logits, target).item())
    # with a small min_kept too: the NaN pixel is the hardest, always kept
    assert math.isnan(OhemCrossEntropy(thresh=0.0, min_kept=1)(logits, target).item())
    keep = ohem_mask(logits, target, thresh=0.0, min_kept=1)
    assert keep[0, 2, 1] and int(keep.sum()) == 1


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("where", ["true class", "other class", "every class"])
def test_ohem_is_non_finite_exactly_when_cross_entropy_is(bad, where, make_tensor):
    """OHEM with every pixel kept equals plain cross entropy, non-finite values included."""
    logits = make_tensor((2, 5, 3, 4))
    target = torch.randint(0, 5, (2, 3, 4), generator=torch.Generator().manual_seed(1))
    cls = {"true class": int(target[1, 0, 2]), "other class": (int(target[1, 0, 2]) + 1) % 5}.get(where)
    if cls is None:
        logits[1, :, 0, 2] = bad
    else:
        logits[1, cls, 0, 2] = bad
    expected = F.cross_entropy(logits, target)
    loss = OhemCrossEntropy(min_kept=target.numel())(logits, target)
    assert math.isfinite(expected.item()) == math.isfinite(loss.item())
    torch.testing.assert_close(loss, expected, equal_nan=True)
    if not math.isfinite(expected.item()):  # and whatever min_kept / thresh
        assert not math.isfinite(OhemCrossEntropy(thresh=0.0, min_kept=0)(logits, target).item())


def test_nan_at_an_ignored_pixel_is_ignored_as_in_cross_entropy(make_tensor):
    logits = make_tensor((1, 3, 4, 4))
    target = torch.randint(0, 3, (1, 4, 4), generator=torch.Generator().manual_seed(2))
    logits[0, :, 1, 1] = NAN
    target[0, 1, 1] = IGNORE_INDEX
    plain = cross_entropy(logits, target)
    assert math.isfinite(plain.item())
    torch.testing.assert_close(OhemCrossEntropy(min_kept=16)(logits, target), plain)


def test_criterion_with_ohem_reports_nan_main_and_zero_unused_terms(make_tensor):
    outputs = {"out": make_tensor((1, 19, 4, 4)), "feat": make_tensor((1, 8, 2, 2))}
    outputs["out"][0, :, 0, 0] = NAN
    loss, terms = CCNetCriterion(ohem=True, aux_weight=0.0)(outputs, torch.zeros(1, 4, 4, dtype=torch.long))
    assert math.isnan(loss.item()) and math.isnan(terms["main"].item())
    assert terms["aux"].item() == 0.0 and terms["ccl"].item() == 0.0  # not NaN * 0


def test_ohem_run_with_an_overflowing_lr_stops_through_the_non_finite_guard(tmp_path, capsys):
    """Training level: ``cca train --set lr=inf ohem=true aux_weight=0`` exited 0 with
    loss 0.0 and NaN weights; now the engine's non-finite guard stops it (``lr=inf`` itself is refused at
    parse now, so a finite rate large enough to overflow the weights drives the run to a NaN loss)."""
    from cca.__main__ import main
    from cca.engine import runlog

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "run"
        settings = [
            f"data_root={tmp_path / 'data'}",
            "synthetic_size=32,64",
            "crop_size=32,32",
            "num_workers=0",
            "lr=1e30",
            "iterations=6",
            "eval_every=0",
            "ohem=true",
            "aux_weight=0",
        ]
        rc = main(["train", "--config", "smoke", "--out", str(out), "--set", *settings])
    finally:
        torch.set_num_threads(saved)
    err = capsys.readouterr().err
    assert rc != 0 and "loss is not finite at iteration" in err and "main=nan" in err, err
    rows = runlog.read_jsonl(out / "metrics.jsonl")
    assert rows[-1]["type"] == "error" and rows[-1]["error"] == "non-finite loss"
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows if r["type"] == "train")


# ------------------------------------------------------------------------- weights and margins
@pytest.mark.parametrize("bad", [NAN, INF, -INF, -0.5])
@pytest.mark.parametrize("name", ["main_weight", "aux_weight", "ccl_weight"])
def test_criterion_rejects_non_finite_or_negative_weights(name, bad):
    with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0, got {name}={bad!r}"):
        CCNetCriterion(**{name: bad})


@pytest.mark.parametrize("bad", [NAN, INF, -INF, -0.5])
@pytest.mark.parametrize("name", ["delta_v", "delta_d", "alpha", "beta", "gamma"])
def test_ccl_rejects_non_finite_or_negative_margins_and_weights(name, bad):
    pattern = rf"{name} must be a finite number >= 0, got {name}={bad!r}"
    with pytest.raises(ValueError, match=pattern):
        CategoryConsistentLoss(**{name: bad})
    with pytest.raises(ValueError, match=pattern):
        CCLParams(**{name: bad})


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"thresh": NAN}, ValueError, r"thresh must be a finite number in \[0, 1\], got thresh=nan"),
        ({"thresh": INF}, ValueError, r"thresh must be a finite number in \[0, 1\], got thresh=inf"),
        ({"thresh": -0.1}, ValueError, r"thresh must be a finite number in \[0, 1\], got thresh=-0.1"),
        ({"thresh": "0.7"}, TypeError, r"thresh must be a number, got thresh='0.7' \(str\)"),
        ({"min_kept": -1}, ValueError, r"min_kept must be an int >= 0, got min_kept=-1"),
        ({"min_kept": 1.5}, TypeError, r"min_kept must be an int, got min_kept=1.5 \(float\)"),
    ],
)
def test_ohem_rejects_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        OhemCrossEntropy(**kwargs)
    criterion_kwargs = {f"ohem_{key}": value for key, value in kwargs.items()}
    with pytest.raises(error, match=pattern):
        CCNetCriterion(ohem=True, **criterion_kwargs)


def test_weights_of_the_wrong_type_are_type_errors():
    with pytest.raises(TypeError, match=r"aux_weight must be a number, got aux_weight=True \(bool\)"):
        CCNetCriterion(aux_weight=True)
    with pytest.raises(TypeError, match=r"alpha must be a number, got alpha='1' \(str\)"):
        CategoryConsistentLoss(alpha="1")
