"""The private PyTorch APIs the criss-cross ops' autograd kernel needs, behind one function.

Forward-mode AD through a custom op needs an ``Autograd`` kernel of our own (``torch.library`` has
no forward mode), and that kernel needs four private names: whether a dual level is entered
(``torch.autograd.forward_ad._current_level``), redispatch below autograd
(``torch._C._AutoDispatchBelowAutograd``, ``torch._C._after_autograd_keyset``) and whether a
``torch.func`` transform is active (``torch._C._are_functorch_transforms_active``); loading the
kernels checks their registration with ``torch._C._dispatch_has_kernel_for_dispatch_key``. Nothing
else in ``cca`` touches them: :func:`torch_private` resolves them once and fails in one line, naming
the missing name and the PyTorch version, when an upgrade renames one (tests/test_ops_autodiff.py
exercises each).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch
from torch.autograd import forward_ad

# name in the namespace -> (owner, attribute)
_NAMES = {
    "below_autograd": (torch._C, "_AutoDispatchBelowAutograd"),
    "after_autograd_keyset": (torch._C, "_after_autograd_keyset"),
    "functorch_transforms_active": (torch._C, "_are_functorch_transforms_active"),
    "has_kernel_for_dispatch_key": (torch._C, "_dispatch_has_kernel_for_dispatch_key"),
}


@functools.cache
def torch_private() -> SimpleNamespace:
    """The private PyTorch objects above, plus ``dual_level()`` (the current forward-AD level, -1 outside
    ``forward_ad.dual_level()``); ``RuntimeError`` naming what is missing when PyTorch no longer has it."""
    found = {}
    for name, (owner, attribute) in _NAMES.items():
        if not hasattr(owner, attribute):
            raise RuntimeError(
                f"PyTorch {torch.__version__} has no {owner.__name__}.{attribute}, which the criss-cross ops' "
                "autograd kernel needs (cca/ops/_torch_private.py): this PyTorch version is not supported yet"
            )
        found[name] = getattr(owner, attribute)
    if not isinstance(getattr(forward_ad, "_current_level", None), int):
        raise RuntimeError(
            f"PyTorch {torch.__version__} has no integer torch.autograd.forward_ad._current_level, which the "
            "criss-cross ops' forward-mode AD needs (cca/ops/_torch_private.py): this PyTorch version is not supported yet"
        )
    return SimpleNamespace(dual_level=lambda: forward_ad._current_level, **found)
