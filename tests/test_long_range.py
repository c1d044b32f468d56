"""The long-range task: labels need evidence outside every blob pixel's row and column."""

from __future__ import annotations

import pytest
import torch

from cca.data.long_range import LongRangeDataset, LongRangeTask, cross_content, make_sample


def _rows(box):
    top, _, h, _ = box
    return set(range(top, top + h))


def _cols(box):
    _, left, _, w = box
    return set(range(left, left + w))


def test_samples_are_deterministic_and_shaped():
    data = LongRangeDataset(5, LongRangeTask(size=32, num_colours=4), seed=3)
    image, label = data[2]
    again, label_again = data[2]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label.shape == (32, 32) and label.dtype == torch.long
    assert torch.equal(image, again) and torch.equal(label, label_again)
    other, _ = LongRangeDataset(5, LongRangeTask(size=32, num_colours=4), seed=4)[2]
    assert not torch.equal(image, other)
    assert data.num_classes == 5 and len(data.class_names) == 5 and data.ignore_index == 255


@pytest.mark.parametrize("size,margin", [(32, 4), (24, 2)])
def test_cue_shares_no_row_or_column_with_the_blob_band(size, margin):
    task = LongRangeTask(size=size, margin=margin)
    data = LongRangeDataset(200, task, seed=0)
    for i in range(len(data)):
        s = data.sample(i)
        band_rows = set(range(s.blob[0] - margin, s.blob[0] + s.blob[2] + margin))
        band_cols = set(range(s.blob[1] - margin, s.blob[1] + s.blob[3] + margin))
        assert not (_rows(s.cue) & band_rows), f"sample {i}: cue rows meet the blob's band"
        assert not (_cols(s.cue) & band_cols), f"sample {i}: cue columns meet the blob's band"
        # labels: exactly the blob carries the class, the cue is background
        top, left, h, w = s.blob
        expected = torch.zeros(size, size, dtype=torch.long)
        expected[top : top + h, left : left + w] = s.cls
        assert torch.equal(s.label, expected)


def test_row_and_column_do_not_determine_the_label():
    """Same image except the cue's colour: every blob pixel's row/column band is identical, the label is not."""
    task = LongRangeTask(size=32, num_colours=4, margin=4)
    data = LongRangeDataset(50, task, seed=1)
    for i in range(len(data)):
        a, b = data.sample(i, cls=1), data.sample(i, cls=2)
        assert a.blob == b.blob and a.cue == b.cue
        assert not torch.equal(a.image, b.image), "the cue colour must differ"
        top, left, h, w = a.blob
        for y in range(top, top + h):
            for x in range(left, left + w):
                # the criss-cross set widened by the margin (a receptive field of that radius)
                assert torch.equal(cross_content(a.image, y, x, band=task.margin), cross_content(b.image, y, x, band=task.margin))
                assert a.label[y, x] != b.label[y, x]


def test_classes_cover_the_palette_and_are_balanced():
    data = LongRangeDataset(400, LongRangeTask(num_colours=4), seed=0)
    counts = torch.bincount(torch.tensor([data.sample(i).cls for i in range(len(data))]), minlength=5)[1:]
    assert (counts > 60).all(), f"class counts {counts.tolist()} are far from uniform (100 each)"


def test_fixed_class_keeps_everything_but_the_cue():
    task = LongRangeTask()
    a = make_sample(task, torch.Generator().manual_seed(7), cls=3)
    b = make_sample(task, torch.Generator().manual_seed(7), cls=4)
    differ = (a.image != b.image).any(0)
    cy, cx, ch, cw = a.cue
    inside = torch.zeros_like(differ)
    inside[cy : cy + ch, cx : cx + cw] = True
    assert differ.any() and not (differ & ~inside).any()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_colours"):
        LongRangeTask(num_colours=0)
    with pytest.raises(ValueError, match="too small"):
        LongRangeTask(size=10, blob_max=8, margin=4)
    with pytest.raises(ValueError, match="length"):
        LongRangeDataset(0)
    with pytest.raises(ValueError, match="cls"):
        make_sample(LongRangeTask(num_colours=4), torch.Generator().manual_seed(0), cls=5)
    with pytest.raises(IndexError):
        LongRangeDataset(3).sample(3)
