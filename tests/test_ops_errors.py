"""Bad input: clear Python exceptions naming the argument (public API), ``RuntimeError`` from
``TORCH_CHECK`` (``torch.ops.cca``), the ``CCA_BACKEND`` switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import cca

F32, F64 = torch.float32, torch.float64


def t(*shape, dtype=F32, device="cpu") -> torch.Tensor:
    return torch.ones(shape, dtype=dtype, device=device)


Q, V = t(2, 4, 5, 6), t(2, 3, 5, 6)  # good 2D query/key and value
Q3, V3 = t(2, 4, 3, 5, 6), t(2, 3, 3, 5, 6)  # good 3D query/key and value
A, A3 = t(2, 10, 5, 6), t(2, 12, 3, 5, 6)  # good 2D/3D attention

# (id, function, args, exception, regex the message must match)
BAD_CALLS = [
    # rank
    (
        "2d-query-rank",
        cca.criss_cross_attention,
        (t(4, 5, 6), Q, V),
        ValueError,
        r"query must be of shape \(N, C', H, W\), got query.shape=\(4, 5, 6\)",
    ),
    (
        "2d-key-rank",
        cca.criss_cross_attention,
        (Q, Q3, V),
        ValueError,
        r"key must be of shape \(N, C', H, W\), got key.shape=\(2, 4, 3, 5, 6\)",
    ),
    (
        "2d-value-rank",
        cca.criss_cross_attention,
        (Q, Q, t(3, 5, 6)),
        ValueError,
        r"value must be of shape \(N, C, H, W\), got value.shape=\(3, 5, 6\)",
    ),
    (
        "3d-query-rank",
        cca.criss_cross_attention_3d,
        (Q, Q, V),
        ValueError,
        r"query must be of shape \(N, C', T, H, W\), got query.shape=\(2, 4, 5, 6\)",
    ),
    (
        "3d-value-rank",
        cca.criss_cross_attention_3d,
        (Q3, Q3, V),
        ValueError,
        r"value must be of shape \(N, C, T, H, W\), got value.shape=\(2, 3, 5, 6\)",
    ),
    (
        "weight-rank",
        cca.ca_weight,
        (t(4, 5, 6), t(4, 5, 6)),
        ValueError,
        r"query must be of shape \(N, C', H, W\) or \(N, C', T, H, W\), got query.shape=\(4, 5, 6\)",
    ),
    (
        "weight-rank-6",
        cca.ca_weight,
        (t(1, 2, 3, 4, 5, 6),) * 2,
        ValueError,
        r"query must be of shape \(N, C', H, W\) or \(N, C', T, H, W\), got query.shape=\(1, 2, 3, 4, 5, 6\)",
    ),
    (
        "weight-key-rank",
        cca.ca_weight,
        (Q, Q3),
        ValueError,
        r"key must be of shape \(N, C', H, W\), got key.shape=\(2, 4, 3, 5, 6\)",
    ),
    (
        "map-value-rank",
        cca.ca_map,
        (A, t(3, 5, 6)),
        ValueError,
        r"value must be of shape \(N, C, H, W\) or \(N, C, T, H, W\), got value.shape=\(3, 5, 6\)",
    ),
    (
        "map-attention-rank",
        cca.ca_map,
        (A3, V),
        ValueError,
        r"attention must be of shape \(N, H\+W-1, H, W\), got attention.shape=\(2, 12, 3, 5, 6\)",
    ),
    (
        "map2d-rank",
        cca.criss_cross_attention_map,
        (Q3, Q3),
        ValueError,
        r"query must be of shape \(N, C', H, W\), got query.shape=\(2, 4, 3, 5, 6\)",
    ),
    (
        "map3d-rank",
        cca.criss_cross_attention_map_3d,
        (Q, Q),
        ValueError,
        r"query must be of shape \(N, C', T, H, W\), got query.shape=\(2, 4, 5, 6\)",
    ),
    # dtype
    (
        "query-int",
        cca.criss_cross_attention,
        (t(2, 4, 5, 6, dtype=torch.int64), Q, V),
        TypeError,
        r"query.*float.*int64",
    ),
    ("value-int", cca.criss_cross_attention, (Q, Q, t(2, 3, 5, 6, dtype=torch.int32)), TypeError, r"value.*int32"),
    ("key-bool", cca.ca_weight, (Q, t(2, 4, 5, 6, dtype=torch.bool)), TypeError, r"key.*bool"),
    ("query-complex", cca.ca_weight, (Q.to(torch.complex64),) * 2, TypeError, r"query.*complex64"),
    ("attention-int", cca.ca_map, (A.long(), V), TypeError, r"attention.*int64"),
    # float8 (floating point, but no kernel): the supported dtypes are named at once
    (
        "query-float8",
        cca.criss_cross_attention,
        (Q.to(torch.float8_e4m3fn),) * 2 + (V.to(torch.float8_e4m3fn),),
        TypeError,
        r"query must be a tensor of dtype torch.float16, torch.bfloat16, torch.float32 or torch.float64, got query.dtype=torch.float8_e4m3fn",
    ),
    (
        "value-float8",
        cca.criss_cross_attention_3d,
        (Q3, Q3, V3.to(torch.float8_e5m2)),
        TypeError,
        r"value must be a tensor of dtype torch.float16, torch.bfloat16, torch.float32 or torch.float64, got value.dtype=torch.float8_e5m2",
    ),
    (
        "key-float8",
        cca.ca_weight,
        (Q, Q.to(torch.float8_e4m3fn)),
        TypeError,
        r"key must be a tensor of dtype .*torch.float64, got key.dtype=torch.float8_e4m3fn",
    ),
    (
        "map-float8",
        cca.ca_map,
        (A.to(torch.float8_e5m2), V),
        TypeError,
        r"attention must be a tensor of dtype .*, got attention.dtype=torch.float8_e5m2",
    ),
    ("map2d-float8", cca.criss_cross_attention_map, (Q.to(torch.float8_e4m3fn),) * 2, TypeError, r"query.*float8"),
    (
        "query-complex128",
        cca.criss_cross_attention,
        (Q.to(torch.complex128),) * 2 + (V,),
        TypeError,
        r"query.*complex128",
    ),
    (
        "value-uint8",
        cca.ca_map,
        (A, V.to(torch.uint8)),
        TypeError,
        r"value must be a tensor of dtype .*torch.float32 or torch.float64, got value.dtype=torch.uint8",
    ),
    ("query-key-dtype", cca.criss_cross_attention, (Q, Q.double(), V), TypeError, r"query and key.*float32.*float64"),
    ("query-value-dtype", cca.criss_cross_attention, (Q, Q, V.double()), TypeError, r"query and value.*float64"),
    ("3d-dtype", cca.criss_cross_attention_3d, (Q3, Q3, V3.half()), TypeError, r"query and value.*float16"),
    ("map-dtype", cca.ca_map, (A, V.double()), TypeError, r"attention and value.*float64"),
    # shapes
    (
        "key-channels",
        cca.criss_cross_attention,
        (Q, t(2, 5, 5, 6), V),
        ValueError,
        r"key.*shape of query.*\(2, 5, 5, 6\)",
    ),
    ("key-spatial", cca.ca_weight, (Q, t(2, 4, 5, 7)), ValueError, r"key.*shape of query"),
    (
        "value-batch",
        cca.criss_cross_attention,
        (Q, Q, t(3, 3, 5, 6)),
        ValueError,
        r"value must match query.*\(3, 3, 5, 6\)",
    ),
    (
        "value-spatial",
        cca.criss_cross_attention,
        (Q, Q, t(2, 3, 6, 5)),
        ValueError,
        r"value must match query.*\(2, 3, 6, 5\)",
    ),
    ("3d-value-time", cca.criss_cross_attention_3d, (Q3, Q3, t(2, 3, 4, 5, 6)), ValueError, r"value must match query"),
    ("map-slots", cca.ca_map, (t(2, 11, 5, 6), V), ValueError, r"attention must have shape \(2, 10, 5, 6\)"),
    ("map-batch", cca.ca_map, (t(1, 10, 5, 6), V), ValueError, r"attention must have shape \(2, 10, 5, 6\)"),
    ("map3d-slots", cca.ca_map, (t(2, 10, 3, 5, 6), V3), ValueError, r"attention must have shape \(2, 12, 3, 5, 6\)"),
    # empty
    (
        "query-empty-batch",
        cca.criss_cross_attention,
        (t(0, 4, 5, 6),) * 2 + (t(0, 3, 5, 6),),
        ValueError,
        r"query must be a non-empty tensor, got query.shape=\(0, 4, 5, 6\)",
    ),
    (
        "value-empty-channels",
        cca.criss_cross_attention,
        (Q, Q, t(2, 0, 5, 6)),
        ValueError,
        r"value must be a non-empty tensor, got value.shape=\(2, 0, 5, 6\)",
    ),
    (
        "query-empty-height",
        cca.ca_weight,
        (t(2, 4, 0, 6),) * 2,
        ValueError,
        r"query must be a non-empty tensor, got query.shape=\(2, 4, 0, 6\)",
    ),
    (
        "3d-empty-time",
        cca.criss_cross_attention_3d,
        (t(2, 4, 0, 5, 6),) * 2 + (t(2, 3, 0, 5, 6),),
        ValueError,
        r"query must be a non-empty tensor, got query.shape=\(2, 4, 0, 5, 6\)",
    ),
    # not tensors
    (
        "query-list",
        cca.criss_cross_attention,
        (Q.tolist(), Q, V),
        TypeError,
        r"query must be a torch.Tensor of shape \(N, C', H, W\), got list",
    ),
    (
        "key-numpy",
        cca.criss_cross_attention,
        (Q, Q.numpy(), V),
        TypeError,
        r"key must be a torch.Tensor of shape \(N, C', H, W\), got ndarray",
    ),
    (
        "value-none",
        cca.criss_cross_attention,
        (Q, Q, None),
        TypeError,
        r"value must be a torch.Tensor of shape \(N, C, H, W\), got NoneType",
    ),
    (
        "3d-query-float",
        cca.criss_cross_attention_3d,
        (1.0, Q3, V3),
        TypeError,
        r"query must be a torch.Tensor of shape \(N, C', T, H, W\), got float",
    ),
    (
        "weight-key-none",
        cca.ca_weight,
        (Q, None),
        TypeError,
        r"key must be a torch.Tensor of shape \(N, C', H, W\), got NoneType",
    ),
    (
        "map-attention-numpy",
        cca.ca_map,
        (np.ones((2, 10, 5, 6)), V),
        TypeError,
        r"attention must be a torch.Tensor of shape \(N, H\+W-1, H, W\), got ndarray",
    ),
    (
        "map-value-none",
        cca.ca_map,
        (A, None),
        TypeError,
        r"value must be a torch.Tensor of shape \(N, C, H, W\) or \(N, C, T, H, W\), got NoneType",
    ),
    (
        "map2d-query-none",
        cca.criss_cross_attention_map,
        (None, Q),
        TypeError,
        r"query must be a torch.Tensor of shape \(N, C', H, W\), got NoneType",
    ),
]


@pytest.mark.parametrize("fn, args, exc, match", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_public_api_rejects_bad_input(backend, fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)


@pytest.mark.parametrize("fn, args, exc, match", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_public_api_rejects_bad_meta_input(monkeypatch, fn, args, exc, match):
    """Validation needs shapes only, so meta tensors get the same errors."""
    monkeypatch.setenv("CCA_BACKEND", "auto")
    meta_args = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises(exc, match=match):
        fn(*meta_args)


@pytest.mark.parametrize("backend_name", ["reference", "auto"])
def test_meta_tensors_give_shapes(monkeypatch, backend_name):
    """Shape inference without data (meta device) through the public API."""
    monkeypatch.setenv("CCA_BACKEND", backend_name)
    q, v, q3, v3 = (x.to("meta") for x in (Q, V, Q3, V3))
    assert cca.criss_cross_attention(q, q, v).shape == (2, 3, 5, 6)
    assert cca.criss_cross_attention_map(q, q).shape == (2, 10, 5, 6)
    assert cca.ca_weight(q3, q3).shape == (2, 12, 3, 5, 6)
    assert cca.criss_cross_attention_3d(q3, q3, v3).shape == (2, 3, 3, 5, 6)
    assert cca.criss_cross_attention_map_3d(q3, q3).device.type == "meta"


@pytest.mark.cuda
def test_device_mix_is_rejected():
    with pytest.raises(ValueError, match=r"query and key must be on the same device.*cpu.*cuda"):
        cca.criss_cross_attention(Q, Q.cuda(), V)
    with pytest.raises(ValueError, match=r"query and value must be on the same device"):
        cca.criss_cross_attention(Q.cuda(), Q.cuda(), V)
    with pytest.raises(ValueError, match=r"attention and value must be on the same device"):
        cca.ca_map(A.cuda(), V)


# --------------------------------------------------------------------------- torch.ops.cca
# (id, op name, args, regex of the TORCH_CHECK message)
BAD_OP_CALLS = [
    ("weight2d-rank", "ca_weight_2d", (t(4, 5, 6), Q), r"query must have 4 dims"),
    ("weight2d-int", "ca_weight_2d", (Q.long(), Q.long()), r"query must be floating point"),
    ("weight2d-dtype", "ca_weight_2d", (Q, Q.double()), r"query and key must have the same dtype"),
    ("weight2d-shape", "ca_weight_2d", (Q, t(2, 4, 5, 7)), r"key must have the shape of query"),
    ("weight2d-batch", "ca_weight_2d", (Q, t(1, 4, 5, 6)), r"key must have the shape of query"),
    ("weight2d-empty", "ca_weight_2d", (t(0, 4, 5, 6), t(0, 4, 5, 6)), r"query must not be empty"),
    ("map2d-slots", "ca_map_2d", (t(2, 9, 5, 6), V), r"attention must have shape"),
    ("map2d-rank", "ca_map_2d", (A, t(3, 5, 6)), r"value must have 4 dims"),
    ("map2d-dtype", "ca_map_2d", (A.double(), V), r"attention and value must have the same dtype"),
    ("weight2d-bwd-grad", "ca_weight_2d_backward", (t(2, 9, 5, 6), Q, Q), r"grad must have shape"),
    ("map2d-bwd-grad", "ca_map_2d_backward", (t(2, 3, 5, 7), A, V), r"grad must have the shape of value"),
    ("map2d-bwd-dtype", "ca_map_2d_backward", (V.double(), A, V), r"grad and value must have the same dtype"),
    ("weight3d-rank", "ca_weight_3d", (Q, Q), r"query must have 5 dims"),
    ("weight3d-shape", "ca_weight_3d", (Q3, t(2, 4, 3, 5, 7)), r"key must have the shape of query"),
    ("map3d-slots", "ca_map_3d", (t(2, 11, 3, 5, 6), V3), r"attention must have shape"),
    ("map3d-int", "ca_map_3d", (A3.int(), V3.int()), r"attention must be floating point"),
    ("weight3d-bwd-grad", "ca_weight_3d_backward", (t(2, 12, 3, 5, 7), Q3, Q3), r"grad must have shape"),
    ("map3d-bwd-grad", "ca_map_3d_backward", (t(2, 3, 2, 5, 6), A3, V3), r"grad must have the shape of value"),
]


@pytest.mark.parametrize("name, args, match", [c[1:] for c in BAD_OP_CALLS], ids=[c[0] for c in BAD_OP_CALLS])
def test_compiled_ops_raise_runtime_error(extension, name, args, match):
    """TORCH_CHECK in the kernels: a Python RuntimeError, never a crash."""
    with pytest.raises(RuntimeError, match=match):
        getattr(torch.ops.cca, name)(*args)


def test_compiled_ops_on_meta_give_shapes(extension):
    """The fake implementations serve the meta device."""
    q, v, q3, v3, a = (x.to("meta") for x in (Q, V, Q3, V3, A))
    assert torch.ops.cca.ca_weight_2d(q, q).shape == (2, 10, 5, 6)
    assert torch.ops.cca.ca_map_2d(a, v).shape == (2, 3, 5, 6)
    assert torch.ops.cca.ca_weight_3d(q3, q3).shape == (2, 12, 3, 5, 6)
    grad_attention, grad_value = torch.ops.cca.ca_map_2d_backward(v, a, v)
    assert grad_attention.shape == a.shape and grad_value.shape == v.shape


# --------------------------------------------------------------------------- CCA_BACKEND
def test_bogus_backend_lists_valid_values(monkeypatch):
    monkeypatch.setenv("CCA_BACKEND", "bogus")
    with pytest.raises(ValueError, match=r"CCA_BACKEND must be one of.*'auto'.*'extension'.*'reference'.*'bogus'"):
        cca.criss_cross_attention(Q, Q, V)


REFERENCE_ONLY_SCRIPT = """
import json, torch, cca
from cca.ops import _extension
q = torch.randn(1, 2, 3, 4, requires_grad=True)
v = torch.randn(1, 3, 3, 4, requires_grad=True)
cca.criss_cross_attention(q, q, v).sum().backward()
cca.ca_map(cca.criss_cross_attention_map(q, q), v).sum().backward()
q3 = torch.randn(1, 2, 2, 3, 4, requires_grad=True)
cca.criss_cross_attention_3d(q3, q3, torch.randn(1, 3, 2, 3, 4)).sum().backward()
with open("/proc/self/maps") as maps:
    mapped = [line.split()[-1] for line in maps if "cca_C" in line or "/cca/_C" in line]
print(json.dumps({
    "state": _extension._state,
    "mapped": mapped,
    "ops": [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("cca::")],
}))
"""


def test_reference_backend_never_builds_or_loads(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "CCA_BACKEND": "reference", "CCA_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", REFERENCE_ONLY_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["state"]["loaded"] is False
    assert report["state"]["path"] is None and report["state"]["how"] is None
    assert report["mapped"] == [], f"a compiled library was mapped: {report['mapped']}"
    assert report["ops"] == [], f"cca ops were registered: {report['ops']}"
    assert "compiling" not in proc.stderr
    assert not cache.exists() or not any(cache.rglob("*")), f"the cache was written: {list(cache.rglob('*'))}"
