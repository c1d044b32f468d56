"""Named settings, one per full-scale setup, in mmsegmentation's naming style.

``<model>_<backbone>-d8_<gpus>xb<per-gpu batch>-<iterations>_<dataset>-<crop>`` tells the whole setup:
``ccnet_r101-d8_4xb2-60k_cityscapes-769x769`` is CCNet on a dilated ResNet-101 (output stride 8), 4 GPUs x
2 images (global batch 8), 60k iterations, Cityscapes, 769x769 crops. ``-ccl`` marks the category
consistent loss. Every preset is derived from the Cityscapes one with :func:`dataclasses.replace`
(changing only what differs); every table entry in ``experiments/`` starts from one of them::

    python -m cca train --config smoke
    torchrun --nproc_per_node 4 -m cca train --config ccnet_r101-d8_4xb2-60k_cityscapes-769x769 --set pretrained=PATH
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cca.engine.config import DetectionConfig, ExperimentConfig, VideoConfig, load_config


def derive(base: ExperimentConfig, cls: type | None = None, **changes: Any) -> ExperimentConfig:
    """``base`` with ``changes`` (:func:`dataclasses.replace`), as the config type ``cls`` if given."""
    if cls is None or cls is type(base):
        return dataclasses.replace(base, **changes)
    return cls(**{**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, **changes})


# python -m cca train --config smoke
# CPU, a few seconds: tiny backbone on synthetic Cityscapes-format data written on first use;
# the loss falls, last.pt / best.pt / metrics.jsonl / config.json appear in runs/smoke.
SMOKE = ExperimentConfig(
    name="smoke",
    model="ccnet",
    backbone="resnet18_tiny",
    recurrence=2,
    dataset="cityscapes",
    data_root="data/synthetic/cityscapes",
    synthetic=True,
    synthetic_num_train=8,
    synthetic_num_val=3,
    synthetic_size=(64, 128),
    crop_size=(64, 64),
    num_workers=0,
    batch_size=2,
    iterations=20,
    lr=0.01,
    eval_every=10,
    eval_mode="whole",
    device="cpu",
    checkpoint_every=5,
    deterministic=True,
)

# torchrun --nproc_per_node 4 -m cca train --config ccnet_r101-d8_4xb2-60k_cityscapes-769x769 --set pretrained=PATH
# The paper's Cityscapes setting (TPAMI 2020): ResNet-101 (output stride 8), RCCA R=2, crop 769,
# global batch 8, 60k iterations, SGD lr 0.01 / momentum 0.9 / wd 1e-4, poly 0.9, aux 0.4,
# single-scale sliding-window evaluation on val. Target: the released code's val mIoU in
# experiments/paper/official_code.csv.
CITYSCAPES = ExperimentConfig(
    name="ccnet_r101-d8_4xb2-60k_cityscapes-769x769",
    # model: ResNet-101 (output stride 8) + RCCA with R=2 + auxiliary FCN head on res4
    model="ccnet",
    backbone="resnet101",
    recurrence=2,
    pretrained=None,  # the paper's ImageNet weights: --set pretrained=PATH (never downloaded)
    # data: Cityscapes fine, 769x769 crops, random scale and flip
    dataset="cityscapes",
    data_root="data/cityscapes",
    train_split="train",
    val_split="val",  # test labels are not public
    crop_size=(769, 769),
    scale_range=(0.75, 2.0),  # the paper (settings_tpami.csv); the released code uses 0.5-2.0
    flip=True,
    # optimisation: SGD, lr 0.01, momentum 0.9, weight decay 1e-4, poly 0.9, global batch 8, 60k steps
    batch_size=8,
    iterations=60000,
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
    poly_power=0.9,
    # loss: cross entropy + 0.4 x auxiliary; OHEM and the category consistent loss off
    aux_weight=0.4,
    ohem=False,
    ohem_thresh=0.7,  # the released code's OHEM flags: --ohem-thres 0.7 --ohem-keep 100000
    ohem_min_kept=100000,
    ccl_weight=0.0,
    # evaluation: single-scale sliding 769x769 window, as the released code's val numbers
    eval_every=10000,
    eval_mode="slide",
    eval_crop=(769, 769),
    eval_scales=(1.0,),
    eval_flip=False,
    device="auto",
    checkpoint_every=1000,
)

# Table 1 (TPAMI model): the Cityscapes setting + the category consistent loss (inner weights:
# experiments/paper/ccl.csv; overall weight 1 is our reading of the paper's loss sum).
# The CCL acts on a 1x1-conv projection of the RCCA output to 16 channels (settings_tpami.csv,
# ccl_feature_dim; tests/test_claims.py checks every CCL preset against that file).
CITYSCAPES_CCL = derive(
    CITYSCAPES, name="ccnet-ccl_r101-d8_4xb2-60k_cityscapes-769x769", ccl_weight=1.0, ccl_channels=16
)

# Table 6: ADE20K, crop 512, batch 16 (DESIGN.md); 160k iterations (not found in the paper:
# mmsegmentation's ADE20K schedule for CCNet), whole-image single-scale evaluation (not found), CCL on.
ADE20K = derive(
    CITYSCAPES, name="ccnet-ccl_r101-d8_4xb4-160k_ade20k-512x512", dataset="ade20k", data_root="data/ade20k",
    crop_size=(512, 512), batch_size=16, iterations=160000, ccl_weight=1.0, ccl_channels=16, eval_every=20000,
    eval_mode="whole", eval_crop=None,
)

# Table 7: LIP, crop 473 (DESIGN.md); batch 8 / 60k iterations as Cityscapes (not found in the paper),
# whole-image single-scale evaluation (not found), CCL on; flips swap left/right part labels.
LIP = derive(
    CITYSCAPES, name="ccnet-ccl_r101-d8_4xb2-60k_lip-473x473", dataset="lip", data_root="data/lip",
    crop_size=(473, 473), ccl_weight=1.0, ccl_channels=16, eval_mode="whole", eval_crop=None,
)

# Table 9: CamVid, CCNet3D on clips of 3 labelled frames. Not found in the paper (our choices): crop
# 360x480 (the SegNet release's full frame), clips of 3, batch 8, 20k iterations; whole-frame evaluation.
CAMVID = derive(
    CITYSCAPES, VideoConfig, name="ccnet3d_r101-d8_4xb2-20k_camvid-360x480", model="ccnet3d", clip_length=3,
    dataset="camvid", data_root="data/camvid", synthetic_size=(48, 64), crop_size=(360, 480), iterations=20000, eval_every=0,
    eval_mode="whole", eval_crop=None,
)

# Table 8: Mask R-CNN (FPN) + RCCA on COCO at the standard "1x" schedule (the paper's was not found):
# batch 16 (8 GPUs x 2), 90k iterations, lr 0.02, x0.1 at 60k and 80k, 1k warm-up steps from 0.001.
COCO = derive(
    CITYSCAPES, DetectionConfig, name="mask-rcnn-rcca_r50-fpn_8xb2-90k_coco", model="mask_rcnn", backbone="resnet50",
    rcca=True, min_size=800, max_size=1333, dataset="coco", data_root="data/coco", synthetic_num_val=4,
    synthetic_size=(64, 80), batch_size=16, iterations=90000,
    lr=0.02, lr_steps=(60000, 80000), lr_gamma=0.1, warmup_iters=1000, warmup_ratio=0.001, log_every=20,
    eval_every=0, eval_mode="whole", eval_crop=None,
)

PRESETS: dict[str, ExperimentConfig] = {c.name: c for c in (SMOKE, CITYSCAPES, CITYSCAPES_CCL, ADE20K, LIP, CAMVID, COCO)}


def get_config(name: str) -> ExperimentConfig:
    """The preset called ``name``, or the config saved in a ``.json`` at that path."""
    if not isinstance(name, str):
        raise TypeError(f"config must be a preset name or a path to a config.json, got {type(name).__name__} {name!r}")
    if name in PRESETS:
        return PRESETS[name]
    if name.endswith(".json"):
        return load_config(name)
    raise ValueError(
        f"config must be one of {sorted(PRESETS)} or a path to a config.json, got {name!r}"
    )
