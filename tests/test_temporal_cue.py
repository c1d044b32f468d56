"""The temporal-cue clips: the centre frame's label needs another frame at the same pixel."""

from __future__ import annotations

import pytest
import torch

from cca.data.temporal_cue import TemporalCueDataset, TemporalCueTask, make_clip


def test_clips_are_deterministic_and_shaped():
    task = TemporalCueTask(size=12, frames=5, num_colours=3)
    data = TemporalCueDataset(4, task, seed=2)
    clip, label = data[1]
    again, label_again = data[1]
    assert clip.shape == (3, 5, 12, 12) and clip.dtype == torch.float32
    assert label.shape == (12, 12) and label.dtype == torch.long
    assert torch.equal(clip, again) and torch.equal(label, label_again)
    assert not torch.equal(clip, TemporalCueDataset(4, task, seed=3)[1][0])
    assert data.num_classes == 4 and data.class_names[0] == "background" and data.ignore_index == 255
    stacked, labels = data.tensors()
    assert stacked.shape == (4, 3, 5, 12, 12) and labels.shape == (4, 12, 12)


def test_only_the_cue_frame_at_the_blob_tells_the_class():
    """Same clip but the class: the centre frame (and every frame but the cue frame) is identical; the
    cue frame differs exactly on the blob's pixels; the label differs exactly there too."""
    task = TemporalCueTask(size=12, frames=5, num_colours=3)
    for seed in range(30):
        a = make_clip(task, torch.Generator().manual_seed(seed), cls=1)
        b = make_clip(task, torch.Generator().manual_seed(seed), cls=2)
        assert a.blob == b.blob and a.cue_frame == b.cue_frame
        assert a.cue_frame != task.centre and 0 <= a.cue_frame < task.frames
        differ = (a.clip != b.clip).any(0)  # (T, H, W)
        top, left, h, w = a.blob
        blob = torch.zeros(12, 12, dtype=torch.bool)
        blob[top : top + h, left : left + w] = True
        assert torch.equal(differ[a.cue_frame], blob)
        others = [f for f in range(task.frames) if f != a.cue_frame]
        assert not differ[others].any(), "only the cue frame may depend on the class"
        assert torch.equal(a.label != b.label, blob)


def test_one_frame_clips_carry_no_cue_and_classes_are_balanced():
    one = make_clip(TemporalCueTask(size=8, frames=1, blob_min=2, blob_max=3), torch.Generator().manual_seed(0))
    assert one.cue_frame == -1 and one.clip.shape[1] == 1
    data = TemporalCueDataset(300, TemporalCueTask(size=10, num_colours=3), seed=0)
    counts = torch.bincount(torch.tensor([data.sample(i).cls for i in range(len(data))]), minlength=4)[1:]
    assert (counts > 70).all(), f"class counts {counts.tolist()} are far from uniform (100 each)"


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="frames"):
        TemporalCueTask(frames=4)
    with pytest.raises(ValueError, match="num_colours"):
        TemporalCueTask(num_colours=0)
    with pytest.raises(ValueError, match="blob_max"):
        TemporalCueTask(size=4, blob_max=6)
    with pytest.raises(ValueError, match="length"):
        TemporalCueDataset(0)
    with pytest.raises(ValueError, match="cls"):
        make_clip(TemporalCueTask(num_colours=3), torch.Generator().manual_seed(0), cls=4)
    with pytest.raises(IndexError):
        TemporalCueDataset(2).sample(2)
