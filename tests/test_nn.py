"""cca.nn: criss-cross attention modules (2D, recurrent, 3D, one-direction), non-local block and the
context baselines, against direct float64 loop formulas on tiny inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cca.nn import (
    ASPP,
    CONTEXT_BLOCKS,
    RCCA,
    CrissCrossAttention,
    CrissCrossAttention3d,
    DirectionalAttention,
    NonLocal2d,
    PyramidPooling,
    RCCA3d,
    build_context_block,
    directional_mask,
)


# ------------------------------------------------------------------------------ direct formulas
def _positions_2d(y: int, x: int, height: int, width: int, direction: str = "both") -> list[tuple[int, int]]:
    row = [(y, i) for i in range(width)]
    column = [(j, x) for j in range(height) if j != y]
    if direction == "horizontal":
        return row
    if direction == "vertical":
        return [(y, x)] + column
    return row + column


def direct_cca(q, k, v, direction="both"):
    """``out[:, :, u] = sum_p softmax_p(q_u . k_p) v_p`` over the criss-cross positions of u, by loops."""
    n, _, height, width = q.shape
    out = torch.zeros_like(v)
    for b in range(n):
        for y in range(height):
            for x in range(width):
                pos = _positions_2d(y, x, height, width, direction)
                energy = torch.stack([q[b, :, y, x] @ k[b, :, j, i] for j, i in pos])
                weight = torch.softmax(energy, 0)
                out[b, :, y, x] = sum(w * v[b, :, j, i] for w, (j, i) in zip(weight, pos, strict=True))
    return out


def direct_cca_3d(q, k, v):
    n, _, frames, height, width = q.shape
    out = torch.zeros_like(v)
    for b in range(n):
        for t in range(frames):
            for y in range(height):
                for x in range(width):
                    pos = [(t, y, i) for i in range(width)] + [(t, j, x) for j in range(height) if j != y]
                    pos += [(s, y, x) for s in range(frames) if s != t]
                    energy = torch.stack([q[b, :, t, y, x] @ k[b, :, s, j, i] for s, j, i in pos])
                    weight = torch.softmax(energy, 0)
                    out[b, :, t, y, x] = sum(w * v[b, :, s, j, i] for w, (s, j, i) in zip(weight, pos, strict=True))
    return out


def _conv1x1(conv, x):
    """A 1x1 (or 1x1x1) convolution written out: ``W x + b`` per position."""
    weight = conv.weight.flatten(1)
    return torch.einsum("oc,nc...->no...", weight, x) + conv.bias.view(1, -1, *([1] * (x.dim() - 2)))


def _randomise(module, generator, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    return module


# ------------------------------------------------------------------------------ criss-cross
def test_cca_is_the_identity_at_init_and_not_after(make_tensor):
    module = CrissCrossAttention(8, reduction=4).double()
    assert module.gamma.item() == 0.0
    assert module.query.out_channels == 2 and module.key.out_channels == 2 and module.value.out_channels == 8
    x = make_tensor((2, 8, 5, 6))
    torch.testing.assert_close(module(x), x, rtol=0, atol=0)
    with torch.no_grad():
        module.gamma.fill_(0.8)
    assert not torch.allclose(module(x), x)


def test_cca_matches_the_direct_formula(make_tensor):
    torch.manual_seed(0)
    module = CrissCrossAttention(6, reduction=2).double()
    with torch.no_grad():
        module.gamma.fill_(0.7)
    x = make_tensor((2, 6, 4, 5))
    q, k, v = _conv1x1(module.query, x), _conv1x1(module.key, x), _conv1x1(module.value, x)
    expected = 0.7 * direct_cca(q, k, v) + x
    torch.testing.assert_close(module(x), expected, rtol=1e-10, atol=1e-10)


def test_attention_map_shape_and_normalisation(make_tensor):
    module = CrissCrossAttention(8).double()
    x = make_tensor((2, 8, 5, 7))
    attention = module.attention_map(x)
    assert attention.shape == (2, 5 + 7 - 1, 5, 7) and attention.dtype == torch.float64
    torch.testing.assert_close(attention.sum(1), torch.ones(2, 5, 7, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", CONTEXT_BLOCKS)
def test_every_context_block_keeps_shape_and_dtype(name, dtype, make_tensor):
    block = build_context_block(name, 16).to(dtype).train()
    x = make_tensor((2, 16, 7, 9), dtype=dtype, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_build_context_block_errors():
    with pytest.raises(ValueError, match="unknown context block 'transformer'.*'rcca'.*'aspp'"):
        build_context_block("transformer", 8)
    with pytest.raises(TypeError):
        build_context_block("rcca", 8, recurrences=2)
    assert isinstance(build_context_block("rcca", 8, recurrence=3), RCCA)
    assert build_context_block("rcca", 8, recurrence=3).recurrence == 3
    assert isinstance(build_context_block("fcn", 8), torch.nn.Identity)
    with pytest.raises(ValueError, match="unknown context block 'none'.*'fcn'"):  # one name: the model's
        build_context_block("none", 8)


def test_bad_arguments_and_inputs_are_named(make_tensor):
    with pytest.raises(ValueError, match="recurrence must be an int >= 0, got recurrence=-1"):
        RCCA(8, recurrence=-1)
    with pytest.raises(TypeError, match=r"recurrence must be an int, got recurrence=2.0 \(float\)"):
        RCCA3d(8, recurrence=2.0)
    with pytest.raises(ValueError, match="reduction must be an int >= 1, got reduction=0"):
        CrissCrossAttention(8, reduction=0)
    with pytest.raises(TypeError, match=r"in_channels must be an int, got in_channels=True \(bool\)"):
        CrissCrossAttention(True)
    with pytest.raises(ValueError, match=r"expects x of shape \(N, C, H, W\) with C=8, got x.shape=\(1, 4, 3, 3\)"):
        CrissCrossAttention(8)(make_tensor((1, 4, 3, 3), dtype=torch.float32))
    with pytest.raises(ValueError, match=r"\(N, C, T, H, W\)"):
        CrissCrossAttention3d(8)(make_tensor((1, 8, 3, 3), dtype=torch.float32))
    with pytest.raises(ValueError, match="direction"):
        RCCA(8, direction="diagonal")
    with pytest.raises(
        ValueError, match=r"NonLocal2d expects x of shape \(N, C, H, W\) with C=8, got x.shape=\(1, 8, 3\)"
    ):
        NonLocal2d(8)(make_tensor((1, 8, 3), dtype=torch.float32))
    with pytest.raises(TypeError):
        RCCA(8, video=True)  # one spelling for 3D: RCCA3d


# one exception policy for every module: TypeError for a wrong type, ValueError for a bad value
_MODULES = {
    "CrissCrossAttention": lambda c: CrissCrossAttention(c),
    "CrissCrossAttention3d": lambda c: CrissCrossAttention3d(c),
    "RCCA": lambda c: RCCA(c),
    "RCCA3d": lambda c: RCCA3d(c),
    "DirectionalAttention": lambda c: DirectionalAttention(c),
    "NonLocal2d": lambda c: NonLocal2d(c),
    "PyramidPooling": lambda c: PyramidPooling(c),
    "ASPP": lambda c: ASPP(c),
}


@pytest.mark.parametrize("name", sorted(_MODULES))
def test_every_module_follows_one_exception_policy(name):
    build = _MODULES[name]
    with pytest.raises(TypeError, match=r"in_channels must be an int, got in_channels=8.0 \(float\)"):
        build(8.0)
    with pytest.raises(ValueError, match=r"in_channels must be an int >= 1, got in_channels=0"):
        build(0)
    module = build(8)
    owner = type(module.cca if isinstance(module, RCCA) else module).__name__
    layout = r"\(N, C, T, H, W\)" if name.endswith("3d") else r"\(N, C, H, W\)"
    with pytest.raises(TypeError, match=rf"{owner} expects x a torch.Tensor of shape {layout}, got list"):
        module([[1.0]])
    wrong_channels = torch.zeros(1, 4, 2, 3, 3) if name.endswith("3d") else torch.zeros(1, 4, 3, 3)
    with pytest.raises(ValueError, match=rf"{owner} expects x of shape {layout} with C=8, got x.shape="):
        module(wrong_channels)


# ------------------------------------------------------------------------------ recurrence
def _input_gradient_support(module, x, y0, x0):
    """Which input pixels the output at ``(y0, x0)`` depends on: ``(H, W)`` bool."""
    x = x.clone().requires_grad_(True)
    module(x)[0, :, y0, x0].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def test_rcca_two_loops_reach_every_pixel_one_loop_only_the_cross(make_tensor):
    torch.manual_seed(1)
    rcca = RCCA(8, recurrence=1, reduction=2).double()
    with torch.no_grad():
        rcca.cca.gamma.fill_(1.0)
    x = make_tensor((1, 8, 6, 7))
    y0, x0 = 2, 3
    cross = torch.zeros(6, 7, dtype=torch.bool)
    cross[y0, :] = True
    cross[:, x0] = True
    support = _input_gradient_support(rcca, x, y0, x0)
    assert torch.equal(support, cross), "R=1 must reach exactly the row and column of the pixel"
    rcca.recurrence = 2
    assert _input_gradient_support(rcca, x, y0, x0).all(), "R=2 must reach every pixel"


def test_rcca_shares_weights_and_zero_loops_is_identity(make_tensor):
    rcca = RCCA(8, recurrence=2, reduction=2).double()
    single = CrissCrossAttention(8, reduction=2)
    assert sum(p.numel() for p in rcca.parameters()) == sum(p.numel() for p in single.parameters())
    with torch.no_grad():
        rcca.cca.gamma.fill_(0.5)
    x = make_tensor((2, 8, 4, 5))
    torch.testing.assert_close(rcca(x), rcca.cca(rcca.cca(x)))
    maps = rcca.attention_maps(x)
    assert len(maps) == 2 and all(m.shape == (2, 4 + 5 - 1, 4, 5) for m in maps)
    rcca.recurrence = 0
    torch.testing.assert_close(rcca(x), x, rtol=0, atol=0)
    assert RCCA(8, recurrence=0)(x.float()).shape == x.shape


# ------------------------------------------------------------------------------ 3D
def test_cca_3d_matches_the_direct_formula_and_starts_as_identity(make_tensor):
    torch.manual_seed(2)
    module = CrissCrossAttention3d(4, reduction=2).double()
    x = make_tensor((1, 4, 3, 3, 4))
    torch.testing.assert_close(module(x), x, rtol=0, atol=0)
    with torch.no_grad():
        module.gamma.fill_(0.6)
    q, k, v = _conv1x1(module.query, x), _conv1x1(module.key, x), _conv1x1(module.value, x)
    torch.testing.assert_close(module(x), 0.6 * direct_cca_3d(q, k, v) + x, rtol=1e-10, atol=1e-10)
    assert module.attention_map(x).shape == (1, 3 + 3 + 4 - 2, 3, 3, 4)
    video = RCCA3d(4, recurrence=2, reduction=2).double()
    assert isinstance(video.cca, CrissCrossAttention3d) and video(x).shape == x.shape
    assert len(video.attention_maps(x)) == 2


# ------------------------------------------------------------------------------ one direction
@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_directional_attention_matches_the_direct_formula(direction, make_tensor):
    torch.manual_seed(3)
    module = DirectionalAttention(6, direction, reduction=2).double()
    with torch.no_grad():
        module.gamma.fill_(0.9)
    x = make_tensor((2, 6, 4, 5))
    q, k, v = _conv1x1(module.query, x), _conv1x1(module.key, x), _conv1x1(module.value, x)
    torch.testing.assert_close(module(x), 0.9 * direct_cca(q, k, v, direction) + x, rtol=1e-10, atol=1e-10)
    attention = module.attention_map(x)
    keep = directional_mask(direction, 4, 5).expand(4 + 5 - 1, 4, 5)
    assert (attention[:, ~keep] == 0).all() and (attention[:, keep] > 0).all()
    # gradient support: the row only / the column only
    rcca = RCCA(6, recurrence=2, reduction=2, direction=direction).double()
    with torch.no_grad():
        rcca.cca.gamma.fill_(1.0)
    support = _input_gradient_support(rcca, x, 1, 2)
    expected = torch.zeros(4, 5, dtype=torch.bool)
    if direction == "horizontal":
        expected[1, :] = True
    else:
        expected[:, 2] = True
    assert torch.equal(support, expected)


# ------------------------------------------------------------------------------ non-local
def test_non_local_matches_the_direct_formula(make_tensor):
    generator = torch.Generator().manual_seed(4)
    block = _randomise(NonLocal2d(6, reduction=2).double(), generator)
    with torch.no_grad():
        block.norm.running_mean.copy_(torch.randn(6, generator=generator, dtype=torch.float64))
        block.norm.running_var.copy_(torch.rand(6, generator=generator, dtype=torch.float64) + 0.5)
    block.eval()
    x = make_tensor((2, 6, 3, 4))
    theta, phi, g = _conv1x1(block.theta, x), _conv1x1(block.phi, x), _conv1x1(block.g, x)
    n, _, h, w = x.shape
    y = torch.zeros(n, 3, h, w, dtype=torch.float64)
    for b in range(n):
        for i in range(h * w):
            yi, xi = divmod(i, w)
            energy = torch.stack([theta[b, :, yi, xi] @ phi[b, :, j // w, j % w] for j in range(h * w)])
            weight = energy.exp() / energy.exp().sum()
            y[b, :, yi, xi] = sum(weight[j] * g[b, :, j // w, j % w] for j in range(h * w))
    wz = torch.einsum("oc,nchw->nohw", block.out.weight.flatten(1), y)
    bn = block.norm
    z = (wz - bn.running_mean.view(1, -1, 1, 1)) / (bn.running_var.view(1, -1, 1, 1) + bn.eps).sqrt()
    expected = z * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1) + x
    torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)


def test_non_local_starts_as_identity(make_tensor):
    block = NonLocal2d(8).double().eval()
    x = make_tensor((1, 8, 4, 4))
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


# ------------------------------------------------------------------------------ PSP / ASPP
@pytest.mark.parametrize("cls", [PyramidPooling, ASPP])
def test_pooling_modules_see_the_whole_image_and_train_at_batch_one(cls, make_tensor):
    block = cls(8, out_channels=6).double().train()
    x = make_tensor((1, 8, 9, 10), requires_grad=True)
    out = block(x)
    assert out.shape == (1, 6, 9, 10)
    out[0, :, 0, 0].sum().backward()
    assert (x.grad[0].abs().sum(0) > 0).all(), "image-level pooling must connect every pixel"


def test_pooling_module_channels():
    psp = PyramidPooling(16, out_channels=4, bins=(1, 2))
    assert len(psp.stages) == 2 and psp.bottleneck[0].in_channels == 16 + 2 * 8
    aspp = ASPP(16, out_channels=12, rates=(2, 3), inner_channels=5)
    assert len(aspp.branches) == 3 and aspp.project[0].in_channels == 5 * 4
    with pytest.raises(ValueError, match="bins"):
        PyramidPooling(8, bins=())
    with pytest.raises(ValueError, match=r"bins\[1\] must be an int >= 1, got bins\[1\]=0"):
        PyramidPooling(8, bins=(1, 0))
    with pytest.raises(TypeError, match=r"rates\[0\] must be an int, got rates\[0\]=1.5"):
        ASPP(8, rates=(1.5,))


# ------------------------------------------------------------------------------ torch.compile
@pytest.mark.parametrize("video", [False, True])
def test_rcca_compiles_with_fullgraph(video, make_tensor):
    """``torch.compile(fullgraph=True)`` of RCCA (R=2) traces without graph breaks (aot_eager also
    traces the backward) and matches eager in value and gradient."""
    torch._dynamo.reset()
    module = (RCCA3d if video else RCCA)(8, recurrence=2, reduction=2).double()
    with torch.no_grad():
        module.cca.gamma.fill_(0.5)
    x = make_tensor((2, 8, 3, 4, 5) if video else (2, 8, 5, 6), requires_grad=True)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    got, expected = compiled(x), module(x)
    torch.testing.assert_close(got, expected)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(grad_got, grad_expected)
    torch._dynamo.reset()


def test_half_precision_softmax_is_stable():
    module = DirectionalAttention(8, "vertical", reduction=2).to(torch.bfloat16)
    x = torch.randn(1, 8, 5, 6).to(torch.bfloat16)
    attention = module.attention_map(x)
    assert attention.dtype == torch.bfloat16 and torch.isfinite(attention).all()
    assert F.l1_loss(attention.float().sum(1), torch.ones(1, 5, 6)) < 2e-2
