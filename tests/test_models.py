"""cca.models: backbones (output stride 8, deep stem, tiny), pretrained loading, heads, the
segmentors of every name, 3D CCNet, Mask R-CNN + RCCA, torch.compile of the CCNet head."""

from __future__ import annotations

import time

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from cca import models
from cca.losses import CCNetCriterion
from cca.models import (
    BACKBONES,
    MODELS,
    ASPPHead,
    AuxHead,
    CCNet,
    CCNet3d,
    ContextHead,
    FCNHead,
    NonLocalHead,
    PSPHead,
    RCCABody,
    RCCAHead,
    RCCAHead3d,
    build,
    build_backbone,
    build_mask_rcnn,
    load_pretrained,
)
from cca.nn import ASPP, RCCA, NonLocal2d, PyramidPooling

TINY = "resnet18_tiny"


def _image(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ backbones
@pytest.mark.parametrize("name", ["resnet50", "resnet101", "resnet101_deepstem", TINY])
def test_backbone_is_output_stride_8(name):
    backbone = build_backbone(name).eval()
    with torch.no_grad():
        features = backbone(_image((1, 3, 33, 49)))  # ceil(33 / 8), ceil(49 / 8) = 5, 7
    assert backbone.channels == (backbone.aux_channels, backbone.out_channels)
    for key, channels in zip(("res4", "res5"), backbone.channels, strict=True):
        assert features[key].shape == (1, channels, 5, 7), key
    assert backbone.channels == ((64, 128) if name == TINY else (1024, 2048))
    blocks = {"resnet50": 6, "resnet101": 23, "resnet101_deepstem": 23, TINY: 2}[name]
    assert len(backbone.layer3) == blocks
    if name.endswith("deepstem"):
        assert backbone.stem[:4] == ("conv1", "bn1", "relu1", "conv2")
        assert backbone.conv3.out_channels == 128 and backbone.layer1[0].conv1.in_channels == 128
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 3, H, W\)"):
        backbone(_image((1, 4, 8, 8)))


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'segformer'.*'ccnet'.*'ccnet3d'"):
        build("segformer", 3)
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'.*'resnet101'.*'resnet18_tiny'"):
        build("ccnet", 3, backbone="vgg16")
    with pytest.raises(ValueError, match="unknown Mask R-CNN backbone 'resnet18_tiny'"):
        build_mask_rcnn(3, backbone="resnet18_tiny")
    with pytest.raises(ValueError, match="num_classes must be an int >= 1, got num_classes=0"):
        build("ccnet", 0, backbone=TINY)
    with pytest.raises(TypeError, match=r"num_classes must be an int, got num_classes=3.0 \(float\)"):
        build("fcn", 3.0, backbone=TINY)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got num_classes=1"):
        build_mask_rcnn(1)
    with pytest.raises(ValueError, match=r"trainable_layers must be an int in \[0, 5\], got trainable_layers=6"):
        build_mask_rcnn(3, trainable_layers=6)
    assert set(BACKBONES) >= {"resnet50", "resnet101", "resnet101_deepstem", TINY}
    assert set(MODELS) >= {"ccnet", "fcn", "nonlocal", "psp", "aspp", "ccnet3d"}


# ------------------------------------------------------------------------------ pretrained
def test_pretrained_weights_load_from_a_local_file(tmp_path):
    source = build_backbone(TINY)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 128)  # the ImageNet classifier: ignored
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": state}, path)
    loaded = build_backbone(TINY, pretrained=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    report = load_pretrained(build_backbone(TINY), str(path))
    assert report["ignored"] == ["fc.weight"] and "layer4.1.conv2.weight" in report["loaded"]
    model = build("ccnet", 3, backbone=TINY, pretrained=path)
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)


def test_pretrained_errors_are_clear(tmp_path):
    missing = tmp_path / "nowhere" / "resnet101-imagenet.pth"
    with pytest.raises(FileNotFoundError, match="resnet101-imagenet.pth.*never downloaded"):
        build("ccnet", 3, backbone=TINY, pretrained=missing)
    state = build_backbone(TINY).state_dict()
    state.pop("layer2.0.conv1.weight")
    state["layer9.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(16, 3, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError) as info:
        build_backbone(TINY, pretrained=bad)
    message = str(info.value)
    for part in (
        "bad.pth",
        "1 missing keys (layer2.0.conv1.weight)",
        "1 unexpected keys (layer9.weight)",
        "conv1.weight: file (16, 3, 3, 3) vs model (16, 3, 7, 7)",
    ):
        assert part in message, message
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth.*not a readable PyTorch state dict"):
        build_backbone(TINY, pretrained=junk)
    with pytest.raises(TypeError, match="pretrained must be a path"):
        load_pretrained(build_backbone(TINY), 3)


# ------------------------------------------------------------------------------ heads
def test_heads_adapt_channels_and_match_the_paper_layout():
    head = RCCAHead(2048, 19)
    assert head.mid_channels == 512 and head.conv_in[0].in_channels == 2048 and head.conv_in[0].out_channels == 512
    assert head.conv_in[0].kernel_size == (3, 3) and isinstance(head.conv_in[1], torch.nn.BatchNorm2d)
    assert head.conv_out[0].in_channels == head.conv_out[0].out_channels == 512
    assert head.bottleneck[0].in_channels == 2048 + 512 and head.bottleneck[0].kernel_size == (3, 3)
    assert isinstance(head.context, RCCA) and head.context.cca.query.out_channels == 64
    assert head.context.recurrence == 2
    assert isinstance(head.classifier[0], torch.nn.Dropout2d) and head.classifier[0].p == 0.1
    assert head.classifier[1].kernel_size == (1, 1) and head.classifier[1].out_channels == 19
    aux = AuxHead(1024, 19)
    assert aux.conv[0].out_channels == 512 and aux.classifier[1].out_channels == 19
    tiny = RCCAHead(128, 5)
    assert tiny.mid_channels == 32
    logits, feat = tiny(_image((2, 128, 5, 6)))
    assert logits.shape == (2, 5, 5, 6) and feat.shape == (2, 32, 5, 6)


@pytest.mark.parametrize(
    ("cls", "block"),
    [(FCNHead, torch.nn.Identity), (NonLocalHead, NonLocal2d), (PSPHead, PyramidPooling), (ASPPHead, ASPP)],
)
def test_baseline_heads_swap_only_the_context_block(cls, block):
    """The paper's context comparison: CCNet's head with another block between the same convolutions."""
    head, reference = cls(128, 5), RCCAHead(128, 5)
    assert isinstance(head, ContextHead) and type(head.context) is block
    for part in ("conv_in", "conv_out", "bottleneck", "classifier"):
        shapes = [p.shape for p in getattr(head, part).parameters()]
        assert shapes == [p.shape for p in getattr(reference, part).parameters()], part
    if block in (PyramidPooling, ASPP):
        assert head.context.out_channels == head.mid_channels == 32
    x = _image((1, 128, 6, 7))
    logits, feat = head.eval()(x)
    assert logits.shape == (1, 5, 6, 7) and feat.shape == (1, 32, 6, 7)
    if block is torch.nn.Identity:  # no context: feat is the reduced input itself
        torch.testing.assert_close(feat, head.conv_in(x))
    with pytest.raises(ValueError, match="unknown context block 'transformer'"):
        ContextHead(128, 5, "transformer")


def test_heads_check_arguments_and_features_with_one_policy():
    with pytest.raises(TypeError, match=r"in_channels must be an int, got in_channels=128.0 \(float\)"):
        FCNHead(128.0, 5)
    with pytest.raises(ValueError, match="mid_channels must be an int >= 1, got mid_channels=0"):
        RCCAHead(128, 5, mid_channels=0)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1, got num_classes=0"):
        AuxHead(64, 0)
    with pytest.raises(TypeError, match=r"AuxHead expects x a torch.Tensor of shape \(N, C, h, w\), got list"):
        AuxHead(64, 5)([0.0])
    with pytest.raises(
        ValueError, match=r"RCCAHead3d expects x of shape \(N, C, h, w\) with C=128, got x.shape=\(1, 64, 4, 4\)"
    ):
        RCCAHead3d(128, 5)(_image((1, 64, 4, 4)), frames=1)
    assert not hasattr(models, "AttentionHead"), "the former alias of ContextHead is gone: one name"
    assert type(FCNHead(128, 5).context) is type(ContextHead(128, 5, "fcn").context) is torch.nn.Identity


# ------------------------------------------------------------------------------ segmentors
@pytest.mark.parametrize("name", [m for m in MODELS if m != "ccnet3d"])
def test_every_segmentor_outputs_the_contract(name):
    torch.manual_seed(0)
    model = build(name, 4, backbone=TINY, recurrence=2)
    x = _image((2, 3, 37, 45))
    outputs = model.train()(x)
    assert set(outputs) == {"out", "aux", "feat"}
    assert outputs["out"].shape == outputs["aux"].shape == (2, 4, 37, 45)
    assert outputs["feat"].shape == (2, 32, 5, 6)
    assert all(v.dtype == torch.float32 for v in outputs.values())
    model.eval()
    with torch.no_grad():
        evaluated = model(x)
    assert set(evaluated) == {"out"} and evaluated["out"].shape == (2, 4, 37, 45)
    contexts = {"fcn": torch.nn.Identity, "nonlocal": NonLocal2d, "psp": PyramidPooling, "aspp": ASPP}
    assert isinstance(model.head.context, contexts.get(name, RCCA))


def test_model_options():
    model = build("ccnet", 3, backbone=TINY, recurrence=0, aux=False, ccl_channels=8).train()
    outputs = model(_image((2, 3, 32, 32)))
    assert set(outputs) == {"out", "feat"} and outputs["feat"].shape == (2, 8, 4, 4)
    assert model.head.context.recurrence == 0
    assert build("ccnet_vertical", 3, backbone=TINY).head.context.cca.direction == "vertical"
    assert isinstance(build("fcn", 3, backbone=TINY, aux=False).aux_head, type(None))
    with pytest.raises(TypeError):
        build("psp", 3, backbone=TINY, recurrences=2)


def test_ccnet_tiny_trains_on_cpu_in_seconds(capsys):
    """Forward + backward of a tiny CCNet with the full criterion (OHEM + CCL) on CPU (time printed)."""
    torch.manual_seed(0)
    model = CCNet(5, backbone=TINY, recurrence=2).train()
    with torch.no_grad():
        model.head.context.cca.gamma.fill_(0.5)
    criterion = CCNetCriterion(ohem=True, ohem_min_kept=1000, ccl_weight=1.0)
    x, target = _image((2, 3, 128, 128)), torch.randint(0, 5, (2, 128, 128))
    model(x)  # warm-up
    start = time.perf_counter()
    loss, terms = criterion(model(x), target)
    loss.backward()
    elapsed = time.perf_counter() - start
    assert torch.isfinite(loss) and set(terms) == {"main", "aux", "ccl"}
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["head.context.cca.query.weight"].abs().sum() > 0
    with capsys.disabled():
        print(f"\n[tiny CCNet, 2x3x128x128, forward+backward on CPU: {elapsed:.3f} s]")


# ------------------------------------------------------------------------------ video
def test_ccnet3d_shapes_and_temporal_context():
    torch.manual_seed(0)
    model = build("ccnet3d", 4, backbone=TINY, recurrence=1)
    assert isinstance(model, CCNet3d) and isinstance(model.head, RCCAHead3d)
    clips = _image((2, 3, 3, 24, 32))
    outputs = model.train()(clips)
    assert outputs["out"].shape == outputs["aux"].shape == (2, 4, 3, 24, 32)
    assert outputs["feat"].shape == (2, 32, 3, 3, 4)
    model.eval()
    with torch.no_grad():
        model.head.context.cca.gamma.fill_(1.0)

    def frame_gradient(m):
        x = clips.clone().requires_grad_(True)
        m(x)["out"][0, :, 0].sum().backward()  # clip 0, frame 0
        return x.grad[0, :, 1].abs().sum(), x.grad[1].abs().sum()

    across_frames, across_clips = frame_gradient(model)
    assert across_frames > 0, "frame 0 must see frame 1 through the 3D attention"
    assert across_clips == 0, "clips must stay independent"
    model.head.context.recurrence = 0
    across_frames, _ = frame_gradient(model)
    assert across_frames == 0, "without attention the frames are independent"
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\)"):
        model(_image((2, 3, 24, 32)))
    projected = build("ccnet3d", 4, backbone=TINY, ccl_channels=5).train()(clips)["feat"]
    assert projected.shape == (2, 5, 3, 3, 4), "the CCL projection applies to every frame's features"
    with pytest.raises(NotImplementedError, match="direction='horizontal'"):
        CCNet3d(4, backbone=TINY, direction="horizontal")


# ------------------------------------------------------------------------------ torch.compile
def test_ccnet_head_compiles():
    torch._dynamo.reset()
    head = RCCAHead(64, 3, recurrence=2).eval()
    with torch.no_grad():
        head.context.cca.gamma.fill_(0.5)
    x = _image((1, 64, 6, 7))
    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for got, expected in zip(compiled(x), head(x), strict=True):
            torch.testing.assert_close(got, expected)
    torch._dynamo.reset()


# ------------------------------------------------------------------------------ Mask R-CNN
def _detection_batch():
    images = [_image((3, 96, 96), seed=1).sigmoid(), _image((3, 96, 96), seed=2).sigmoid()]
    targets = []
    for image in images:
        h, w = image.shape[1:]
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        masks[0, 10:40, 20:50] = 1
        masks[1, 50:90, 30:80] = 1
        boxes = torch.tensor([[20.0, 10.0, 50.0, 40.0], [30.0, 50.0, 80.0, 90.0]])
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
    return images, targets


SMALL_DETECTOR = dict(
    min_size=96,
    max_size=128,
    rpn_pre_nms_top_n_train=50,
    rpn_post_nms_top_n_train=20,
    rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_test=20,
    box_batch_size_per_image=16,
    box_detections_per_img=5,
)


def test_mask_rcnn_with_rcca_on_c5_trains_and_predicts():
    torch.manual_seed(0)
    model = build_mask_rcnn(3, backbone="resnet50", rcca=True, recurrence=2, **SMALL_DETECTOR)
    body = model.backbone.body
    assert isinstance(body, RCCABody) and body.rcca.cca.in_channels == 2048 and body.rcca.recurrence == 2
    assert sum(isinstance(m, RCCA) for m in model.modules()) == 1
    assert model.transform.min_size == (96,) and model.transform.max_size == 128
    seen = []
    body.rcca.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    images, targets = _detection_batch()
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert body.rcca.cca.gamma.grad is not None and body.rcca.cca.gamma.grad.abs() > 0
    assert seen and seen[0][1] == 2048 and seen[0][-1] == 96 // 32, "RCCA must run on C5 (stride 32)"
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for det, image in zip(detections, images, strict=True):
        assert set(det) == {"boxes", "labels", "scores", "masks"}
        assert det["masks"].shape[1:] == (1, *image.shape[1:])


def test_mask_rcnn_baseline_and_pretrained_body(tmp_path):
    from torchvision.models import resnet18

    plain = build_mask_rcnn(3, backbone="resnet18", rcca=False, **SMALL_DETECTOR)
    assert not isinstance(plain.backbone.body, RCCABody)
    assert not any(isinstance(m, RCCA) for m in plain.modules())
    imagenet = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_mask_rcnn(3, backbone="resnet18", rcca=True, pretrained=path, **SMALL_DETECTOR)
    body = model.backbone.body.body
    assert torch.equal(body.layer3[0].conv1.weight, imagenet.layer3[0].conv1.weight)
    assert isinstance(body.bn1, FrozenBatchNorm2d) and not body.conv1.weight.requires_grad
    assert body.layer4[0].conv1.weight.requires_grad and model.backbone.body.rcca.cca.in_channels == 512
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_mask_rcnn(3, backbone="resnet18", pretrained=tmp_path / "missing.pth")


def test_models_package_exports():
    for name in models.__all__:
        assert getattr(models, name) is not None
