"""The Python half of the criss-cross custom ops, one registration for every namespace.

A namespace holds eight ops (their schemas in ``csrc/ops.cpp``): ``ca_weight_{2d,3d}(query, key)``,
``ca_map_{2d,3d}(attention, value)`` and their ``*_backward(grad, a, b) -> (d a, d b)``.
:func:`register` adds to them

* fake (meta) implementations, for ``torch.compile`` and the ``meta`` device;
* one autograd kernel per op: reverse mode (a ``torch.autograd.Function`` that saves only what
  the backward needs, by ``ctx.needs_input_grad``) and forward mode (``torch.func.jvp``,
  ``torch.autograd.forward_ad``): each op is bilinear, so the tangent of ``f(a, b)`` is
  ``f(da, b) + f(a, db)``. ``torch.library.register_autograd`` has no forward mode (it would
  return a zero tangent), hence the kernel of our own. Double backward (and forward mode) through
  the ``*_backward`` ops raises ``NotImplementedError``; a backward that needs the first input's
  gradient only runs the partner forward op, which stays differentiable.

Namespaces: ``cca`` (the compiled kernels, registered by :mod:`cca.ops._extension` once the
library is loaded) and any namespace made by :func:`define_reference_ops` (the reference's
numerics with the compiled ops' contract; :mod:`cca.profiling` counts FLOPs with it).
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor
from torch.autograd import forward_ad

from cca.ops import reference
from cca.ops._torch_private import torch_private

__all__ = ["OPS", "define_reference_ops", "register"]

OPS = ("ca_weight_2d", "ca_map_2d", "ca_weight_3d", "ca_map_3d")
_PARTNER = {
    "ca_weight_2d": "ca_map_2d",
    "ca_map_2d": "ca_weight_2d",
    "ca_weight_3d": "ca_map_3d",
    "ca_map_3d": "ca_weight_3d",
}

_lock = threading.Lock()
_libraries: dict[str, torch.library.Library] = {}  # kept alive: dropping one removes its registrations


# --------------------------------------------------------------------------- fake implementations
def _fake_weight(query: Tensor, key: Tensor) -> Tensor:
    n, _, *spatial = query.shape
    return query.new_empty((n, sum(spatial) - len(spatial) + 1, *spatial))


def _fake_map(attention: Tensor, value: Tensor) -> Tensor:
    return value.new_empty(value.shape)


def _fake_backward(grad: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return a.new_empty(a.shape), b.new_empty(b.shape)


# --------------------------------------------------------------------------- forward-mode AD
def _split_duals(args: tuple) -> tuple[tuple, tuple | None]:
    """``(primals, tangents)`` of forward-mode AD at the current level; ``tangents`` is ``None``
    when no argument carries one."""
    if torch_private().dual_level() < 0:  # no dual level entered: nothing can carry a tangent
        return args, None
    unpacked = [forward_ad.unpack_dual(a) for a in args]
    if all(u.tangent is None for u in unpacked):
        return args, None
    return tuple(u.primal for u in unpacked), tuple(u.tangent for u in unpacked)


def _bilinear_jvp(op):
    """Tangent of a bilinear op: ``op(da, b) + op(a, db)`` (a missing tangent is zero)."""

    def jvp(primals: tuple, tangents: tuple) -> Tensor:
        (a, b), (da, db) = primals, tangents
        terms = [op(da, b)] if da is not None else []
        if db is not None:
            terms.append(op(a, db))
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    return jvp


def _no_forward_ad(name: str):
    def jvp(primals: tuple, tangents: tuple) -> Tensor:
        raise NotImplementedError(
            f"forward-mode AD through {name} (forward over reverse) is not supported; "
            "use reverse mode, or CCA_BACKEND=reference"
        )

    return jvp


# --------------------------------------------------------------------------- reverse-mode AD
def _bilinear_backward(ns, name: str):
    """``setup_context`` and ``backward`` of ``ca_weight_*``/``ca_map_*``.

    ``d first = partner(grad, second)`` (``ca_weight``: d query = ca_map(grad, key); ``ca_map``:
    d attention = ca_weight(grad, value)), ``d second`` = an adjoint only the ``*_backward`` op
    computes, from ``first``. So ``second`` is saved only if ``first`` needs a gradient and
    ``first`` only if ``second`` does; the backward op then gets a stand-in of the right shape
    for the tensor it was not given (its half of the result is discarded)."""
    backward_op = getattr(ns, f"{name}_backward").default
    partner_op = getattr(ns, _PARTNER[name]).default
    is_weight = name.startswith("ca_weight")

    def setup_context(ctx, inputs: tuple, output: Tensor) -> None:
        first, second = inputs
        need_first, need_second = ctx.needs_input_grad[-2:]
        ctx.save_for_backward(first if need_second else None, second if need_first else None)

    def backward(ctx, grad: Tensor) -> tuple:
        first, second = ctx.saved_tensors
        need_first, need_second = ctx.needs_input_grad[-2:]
        if not need_second:
            return partner_op(grad, second), None
        stand_in = second if second is not None else (first if is_weight else grad)
        grad_first, grad_second = backward_op(grad, first, stand_in)
        return (grad_first if need_first else None), grad_second

    return setup_context, backward


def _no_double_backward(name: str):
    def setup_context(ctx, inputs: tuple, output) -> None:
        return None

    def backward(ctx, *grads):
        raise NotImplementedError(
            f"double backward through {name} is not supported (create_graph=True over the criss-cross ops' "
            "backward); use CCA_BACKEND=reference for higher-order gradients"
        )

    return setup_context, backward


def _autograd_kernel(op, setup_context, backward, jvp):
    """The ``Autograd`` dispatch kernel of ``op``: reverse mode through a ``torch.autograd.Function``
    (``setup_context``/``backward``), forward mode through ``jvp(primals, tangents)``."""
    name = str(op.name())

    def forward(keyset, *args):
        private = torch_private()
        with private.below_autograd():
            return op.redispatch(keyset & private.after_autograd_keyset, *args)

    function = type(
        f"Autograd_{name.replace('::', '_')}",
        (torch.autograd.Function,),
        {
            "forward": staticmethod(forward),
            "setup_context": staticmethod(lambda ctx, inputs, output: setup_context(ctx, inputs[1:], output)),
            "backward": staticmethod(lambda ctx, *grads: (None, *backward(ctx, *grads))),
        },
    )

    def kernel(keyset, *args):
        primals, tangents = _split_duals(args)
        if torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in primals):
            if torch_private().functorch_transforms_active():
                raise NotImplementedError(
                    f"torch.func reverse-mode transforms (grad, vjp, jacrev) through {name} are not supported; "
                    "use torch.autograd.grad, or CCA_BACKEND=reference"
                )
            out = function.apply(keyset, *primals)
        else:
            out = forward(keyset, *primals)
        if tangents is None:
            return out
        return forward_ad.make_dual(out, jvp(primals, tangents))  # (the *_backward ops' jvp raises)

    return kernel


# --------------------------------------------------------------------------- registration
def register(namespace: str) -> None:
    """Fake impls and autograd (reverse and forward mode) for the eight ops of ``namespace``;
    idempotent. The ops must exist (schemas defined)."""
    with _lock:
        if namespace in _libraries:
            return
        ns = getattr(torch.ops, namespace)
        lib = torch.library.Library(namespace, "IMPL")
        for name in OPS:
            op, backward_op = getattr(ns, name).default, getattr(ns, f"{name}_backward").default
            torch.library.register_fake(op, _fake_weight if name.startswith("ca_weight") else _fake_map, lib=lib)
            torch.library.register_fake(backward_op, _fake_backward, lib=lib)
            kernel = _autograd_kernel(op, *_bilinear_backward(ns, name), _bilinear_jvp(op))
            lib.impl(name, kernel, "Autograd", with_keyset=True)
            qualified = f"{namespace}::{name}_backward"
            backward_kernel = _autograd_kernel(backward_op, *_no_double_backward(qualified), _no_forward_ad(qualified))
            lib.impl(f"{name}_backward", backward_kernel, "Autograd", with_keyset=True)
        _libraries[namespace] = lib


def define_reference_ops(namespace: str) -> None:
    """Define the eight ops in ``namespace`` with the schemas of ``csrc/ops.cpp`` and the numerics of
    :mod:`cca.ops.reference` (any device), then :func:`register` them; idempotent."""
    with _lock:
        defined = f"{namespace}:def" in _libraries
        if not defined:
            lib = torch.library.Library(namespace, "DEF")
            for name in OPS:
                first, second = ("query", "key") if name.startswith("ca_weight") else ("attention", "value")
                lib.define(f"{name}(Tensor {first}, Tensor {second}) -> Tensor")
                lib.define(f"{name}_backward(Tensor grad, Tensor {first}, Tensor {second}) -> (Tensor, Tensor)")
                lib.impl(name, getattr(reference, name), "CompositeExplicitAutograd")
                lib.impl(f"{name}_backward", getattr(reference, f"{name}_backward"), "CompositeExplicitAutograd")
            _libraries[f"{namespace}:def"] = lib
    register(namespace)
