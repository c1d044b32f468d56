"""The private PyTorch APIs that the ops' forward-mode AD needs live behind one function; a PyTorch
upgrade that renames or changes one fails here, loudly, instead of as wrong tangents."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch.autograd import forward_ad

from cca.ops import _torch_private
from cca.ops._torch_private import torch_private


def test_each_private_api_still_behaves_as_the_ops_need():
    private = torch_private()
    assert private.dual_level() == -1  # outside a dual level: no tangent can be carried
    with forward_ad.dual_level():
        assert private.dual_level() >= 0
    assert private.functorch_transforms_active() is False
    seen = []
    torch.func.grad(lambda x: seen.append(private.functorch_transforms_active()) or x.sum())(torch.ones(2))
    assert seen == [True]
    assert isinstance(private.after_autograd_keyset, torch._C.DispatchKeySet)
    with private.below_autograd():
        x = torch.ones(2, requires_grad=True)
        assert not (x * 2).requires_grad  # below autograd: no graph is recorded
    assert private.has_kernel_for_dispatch_key("aten::add.Tensor", "CPU") is True
    assert private.has_kernel_for_dispatch_key("aten::add.Tensor", "XLA") is False


def test_a_renamed_private_api_fails_in_one_line_naming_it(monkeypatch):
    torch_private.cache_clear()
    monkeypatch.delattr(torch._C, "_after_autograd_keyset")
    try:
        with pytest.raises(RuntimeError, match=r"PyTorch .* has no torch._C._after_autograd_keyset"):
            torch_private()
    finally:
        monkeypatch.undo()
        torch_private.cache_clear()
    torch_private.cache_clear()
    monkeypatch.setattr(forward_ad, "_current_level", None)
    try:
        with pytest.raises(RuntimeError, match="forward_ad._current_level"):
            torch_private()
    finally:
        monkeypatch.undo()
        torch_private.cache_clear()
    assert torch_private().dual_level() == -1


PRIVATE_NAMES = {"_current_level", *(attribute for _, attribute in _torch_private._NAMES.values())}


def test_no_other_module_of_cca_touches_these_private_apis():
    root = Path(_torch_private.__file__).resolve().parents[1]
    users = []
    for path in root.rglob("*.py"):
        if path.name == "_torch_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
                users.append(f"{path.relative_to(root)}:{node.lineno} .{node.attr}")
    assert users == []
