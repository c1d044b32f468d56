"""Autodiff of the criss-cross ops beyond ``backward``: forward mode (``torch.func.jvp``,
``torch.autograd.forward_ad``: never a silent zero tangent), tensors saved by
``ctx.needs_input_grad``, and clear errors for what is not supported. On both backends, and on the
``cca_profiling`` ops (same registration, reference numerics, no compiler needed)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import forward_ad

import cca
from cca.ops import _registration, reference
from cca.profiling.flops import _COUNTED

# name -> (public function, float64 reference, input shapes (N, C'|C|L, *spatial))
CASES = {
    "attention-2d": (
        cca.criss_cross_attention,
        reference.criss_cross_attention_2d,
        [(2, 3, 4, 5)] * 2 + [(2, 2, 4, 5)],
    ),
    "attention-3d": (cca.criss_cross_attention_3d, reference.criss_cross_attention_3d, [(1, 2, 3, 4, 2)] * 3),
    "map-2d": (
        cca.criss_cross_attention_map,
        lambda q, k: reference.position_softmax(reference.ca_weight_2d(q, k)),
        [(1, 3, 5, 4)] * 2,
    ),
    "map-3d": (
        cca.criss_cross_attention_map_3d,
        lambda q, k: reference.position_softmax(reference.ca_weight_3d(q, k)),
        [(1, 2, 2, 3, 4)] * 2,
    ),
    "ca_weight-2d": (cca.ca_weight, reference.ca_weight_2d, [(2, 3, 4, 1)] * 2),
    "ca_weight-3d": (cca.ca_weight, reference.ca_weight_3d, [(1, 2, 3, 2, 4)] * 2),
    "ca_map-2d": (cca.ca_map, reference.ca_map_2d, [(2, 8, 4, 5), (2, 3, 4, 5)]),
    "ca_map-3d": (cca.ca_map, reference.ca_map_3d, [(1, 7, 3, 2, 4), (1, 2, 3, 2, 4)]),
}


def _finite_difference(fn, primals, tangents, eps=1e-6):
    plus = fn(*(p + eps * t for p, t in zip(primals, tangents, strict=True)))
    minus = fn(*(p - eps * t for p, t in zip(primals, tangents, strict=True)))
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("case", list(CASES))
def test_jvp_equals_reference_and_finite_differences(backend, make_tensor, case):
    fn, ref, shapes = CASES[case]
    primals = tuple(make_tensor(s) for s in shapes)
    tangents = tuple(make_tensor(s) for s in shapes)
    out, tangent = torch.func.jvp(fn, primals, tangents)
    expected_out, expected = torch.func.jvp(ref, primals, tangents)
    assert expected.abs().max() > 1e-3  # a zero tangent cannot pass
    torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tangent, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tangent, _finite_difference(ref, primals, tangents), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_ad_dual_tensors(backend, make_tensor, case):
    """``torch.autograd.forward_ad``, with a tangent on one input only (the other a constant)."""
    fn, ref, shapes = CASES[case]
    primals = [make_tensor(s) for s in shapes]
    for dual_index in range(len(shapes)):
        tangent = make_tensor(shapes[dual_index])
        with forward_ad.dual_level():
            args = list(primals)
            args[dual_index] = forward_ad.make_dual(primals[dual_index], tangent)
            got = forward_ad.unpack_dual(fn(*args)).tangent
        partial = [torch.zeros_like(p) for p in primals]
        partial[dual_index] = tangent
        expected = _finite_difference(ref, primals, partial)
        assert got is not None, f"no tangent for input {dual_index}"
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["attention-2d", "attention-3d", "ca_map-2d"])
def test_gradcheck_forward_and_reverse_mode(backend, make_tensor, case):
    fn, _, shapes = CASES[case]
    inputs = tuple(make_tensor(s, requires_grad=True) for s in shapes)
    assert torch.autograd.gradcheck(fn, inputs, check_forward_ad=True, check_backward_ad=True)


def test_jacfwd_and_jvp_of_jvp(backend, make_tensor):
    """Nested forward mode: the Jacobian by ``jacfwd`` and a second directional derivative."""
    q, k, v = (make_tensor(s) for s in CASES["attention-2d"][2])
    dq = make_tensor(q.shape)
    jac = torch.func.jacfwd(cca.criss_cross_attention, argnums=(0, 2))(q, k, v)
    expected = torch.func.jacfwd(reference.criss_cross_attention_2d, argnums=(0, 2))(q, k, v)
    for got, want in zip(jac, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

    def directional(fn):
        return lambda q: torch.func.jvp(lambda q: fn(q, k, v), (q,), (dq,))[1]

    second = torch.func.jvp(directional(cca.criss_cross_attention), (q,), (dq,))[1]
    want = torch.func.jvp(directional(reference.criss_cross_attention_2d), (q,), (dq,))[1]
    torch.testing.assert_close(second, want, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- the op registration
def _ops(namespace: str) -> dict:
    return {name: getattr(getattr(torch.ops, namespace), name) for name in _registration.OPS}


@pytest.fixture(params=["cca_profiling", "cca"])
def namespace(request) -> str:
    """The namespaces registered by :func:`cca.ops._registration.register`."""
    if request.param == "cca":
        request.getfixturevalue("extension")
    return request.param


@pytest.mark.parametrize("name", _registration.OPS)
def test_registered_ops_jvp(namespace, make_tensor, name):
    op = _ops(namespace)[name]
    spatial = (3, 4) if name.endswith("2d") else (2, 3, 4)
    first = (1, 2, *spatial) if name.startswith("ca_weight") else (1, sum(spatial) - len(spatial) + 1, *spatial)
    primals = (make_tensor(first), make_tensor((1, 2, *spatial)))
    tangents = tuple(make_tensor(p.shape) for p in primals)
    _, tangent = torch.func.jvp(op, primals, tangents)
    expected = torch.func.jvp(getattr(reference, name), primals, tangents)[1]
    torch.testing.assert_close(tangent, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("needs", [(True, False), (False, True), (True, True)], ids=["first", "second", "both"])
@pytest.mark.parametrize("name", ["ca_weight_2d", "ca_map_3d"])
def test_saves_only_what_backward_needs(namespace, make_tensor, name, needs):
    """``d first`` needs ``second`` and ``d second`` needs ``first``: nothing else is saved, and the
    gradients still equal the reference's."""
    op = _ops(namespace)[name]
    spatial = (3, 4) if name.endswith("2d") else (2, 3, 4)
    first_shape = (2, 3, *spatial) if name.startswith("ca_weight") else (2, sum(spatial) - len(spatial) + 1, *spatial)
    inputs = [make_tensor(first_shape, requires_grad=needs[0]), make_tensor((2, 3, *spatial), requires_grad=needs[1])]
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(id(t)) or t, lambda t: t):
        out = op(*inputs)
    expected_saved = [inputs[1]] if needs == (True, False) else [inputs[0]] if needs == (False, True) else inputs
    assert len(saved) == len(expected_saved)
    grad_out = make_tensor(out.shape)
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    grads = torch.autograd.grad(out, wanted, grad_out)
    copies = [t.detach().requires_grad_(need) for t, need in zip(inputs, needs, strict=True)]
    expected = torch.autograd.grad(getattr(reference, name)(*copies), [c for c in copies if c.requires_grad], grad_out)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_unsupported_transforms_raise_clear_errors(extension, make_tensor):
    """Reverse-mode ``torch.func`` transforms and double backward through the compiled ops are not
    supported: ``NotImplementedError`` naming the op and the way out, never a wrong number."""
    q, k, v = (make_tensor(s) for s in CASES["attention-2d"][2])
    with pytest.raises(NotImplementedError, match=r"torch.func reverse-mode.*cca::ca_weight_2d.*torch.autograd.grad"):
        torch.func.grad(lambda q: cca.criss_cross_attention(q, k, v).sum())(q)
    for t in (q, k, v):
        t.requires_grad_(True)
    (grad_q, _, _) = torch.autograd.grad(
        cca.criss_cross_attention(q, k, v).square().sum(), (q, k, v), create_graph=True
    )
    with pytest.raises(NotImplementedError, match=r"double backward through cca::ca_\w+_backward"):
        grad_q.sum().backward()


def test_registration_is_idempotent():
    before = dict(_registration._libraries)
    _registration.register("cca_profiling")
    _registration.define_reference_ops("cca_profiling")
    assert _registration._libraries == before
    assert set(_COUNTED) == set(_registration.OPS)
