"""3D context for video: a 2D model per frame, CCNet3D-style 3D criss-cross with T=1 and T=5, on the
temporal-cue clips (``cca.data.temporal_cue``: the centre frame's label needs the same pixel in another
frame), 5 seeds each.

    python -m experiments.mechanisms.video_context            # nox -s mechanism_video
    python -m experiments.mechanisms.video_context --dry-run

The paper (CamVid test): CCNet3D T=1 77.9 vs T=5 79.1 mIoU. The model here is the tiny segmenter with
RCCA R=2 (3D: :class:`cca.nn.CrissCrossAttention3d`, each position attends to its row, its column and
the same pixel in the other frames), not the ResNet-101 CCNet3D. Report: ``reports/mechanism_video.md``.
"""

from __future__ import annotations

import sys

from experiments.mechanisms.common import Study
from experiments.mechanisms.reports import write_video
from experiments.mechanisms.settings import MechanismSettings, Variant

STUDY = Study(
    module="video_context",
    name="mechanism_video",
    doc=__doc__,
    settings=MechanismSettings(
        task="temporal_cue",
        size=12,
        frames=5,
        blob_min=3,
        blob_max=5,
        cue_contrast=1.0,
        num_train=512,
        batch_size=8,
        iterations=100,
        seeds=tuple(range(5)),
    ),
    variants={
        "per_frame_2d": Variant("2D RCCA R=2 per frame", per_frame=True),
        "ccnet3d_t1": Variant("3D RCCA R=2, T=1 (centre frame)", clip_frames=1),
        "ccnet3d_t5": Variant("3D RCCA R=2, T=5", clip_frames=5),
    },
    writer=write_video,
    success_miou_pct=90.0,
)

main = STUDY.main

if __name__ == "__main__":
    sys.exit(main())
