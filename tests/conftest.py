"""Shared fixtures: backends, per-test random inputs, dtype tolerances, the ``cuda`` marker.

* ``@pytest.mark.cuda`` (or ``needs_cuda``) skips a test, with the reason, when no GPU is visible.
* ``backend``: runs a test twice, with ``CCA_BACKEND=reference`` and ``CCA_BACKEND=extension``.
  The extension variant fails loudly when the kernels do not build; it is skipped only when they
  cannot exist here (no C++ compiler, no ``csrc/``), with the loader's error as the reason.
* ``make_tensor(shape, dtype=..., scale=...)``: fresh random inputs from a seed derived from the
  test's node id (different per test, reproducible per test).
* ``check_close(actual, expected)``: compare to a float64 reference with ``TOLERANCE[actual.dtype]``.
"""

from __future__ import annotations

import os
import shutil
import zlib

import pytest
import torch

# Tolerance of each dtype against a float64 reference computed from the same (cast-up) inputs:
# relative, and absolute relative to the largest reference value. bfloat16 keeps 8 significant
# bits (one ulp at 1 is 7.8e-3) and the attention passes through two bfloat16 roundings.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 2e-2,
}

needs_cuda = pytest.mark.cuda
HAS_CUDA = torch.cuda.is_available()


BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full", action="store_true", default=False,
        help="timed benchmarks: also run the long sweep (cases marked bench_full; see README, 'Speed and memory')",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Benchmarks run once, untimed, in an ordinary test run; `--benchmark-only` or
    `--benchmark-enable` times them (so `pytest --benchmark-only` works as typed)."""
    option = config.option
    config.addinivalue_line("markers", "bench_full: a long benchmark case, timed only with --full")
    if hasattr(option, "benchmark_disable") and not (option.benchmark_only or option.benchmark_enable):
        option.benchmark_disable = True


def pytest_ignore_collect(collection_path, config: pytest.Config) -> bool | None:
    """``--benchmark-only`` collects tests/benchmarks/ only (every benchmark lives there)."""
    if not getattr(config.option, "benchmark_only", False) or collection_path.suffix != ".py":
        return None
    path = str(collection_path)
    if path.startswith(BENCHMARKS_DIR + os.sep) or not collection_path.name.startswith("test_"):
        return None
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A timed run skips the long sweep (``bench_full``) unless ``--full`` asks for it."""
    if getattr(config.option, "benchmark_disable", True) or config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="long benchmark sweep: pass --full (nox -s bench -- --full)")
    for item in items:
        if item.get_closest_marker("bench_full") is not None:
            item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is not None and not HAS_CUDA:
        pytest.skip("needs a CUDA GPU: torch.cuda.is_available() is False")


def seed_for(nodeid: str) -> int:
    """A stable seed per test (crc32 of its node id)."""
    return zlib.crc32(nodeid.encode())


@pytest.fixture
def make_tensor(request: pytest.FixtureRequest):
    """``make_tensor(shape, dtype=torch.float64, device="cpu", scale=1.0, requires_grad=False)``:
    standard normal times ``scale``, drawn in float64 from the test's own generator, then cast."""
    generator = torch.Generator().manual_seed(seed_for(request.node.nodeid))

    def make(shape, dtype=torch.float64, device="cpu", scale=1.0, requires_grad=False):
        data = torch.randn(tuple(shape), generator=generator, dtype=torch.float64) * scale
        return data.to(device=device, dtype=dtype).requires_grad_(requires_grad)

    return make


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, tol: float | None = None) -> None:
    """``actual`` (any dtype) against a float64 ``expected``: ``|a - e| <= tol * (max|e| + |e|)``."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), "result has non-finite values"
    tol = TOLERANCE[actual.dtype] if tol is None else tol
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=tol, atol=tol * scale)


@pytest.fixture
def check_close():
    """The function :func:`assert_close_to_reference`."""
    return assert_close_to_reference


def _require_extension() -> None:
    """Load the compiled kernels; skip only when they cannot exist here, else fail loudly."""
    from cca.ops import _extension

    state = _extension._state
    if state["tried"] and not state["loaded"] and state["error"] == "CCA_BACKEND=reference":
        state["tried"] = False  # an earlier import ran with CCA_BACKEND=reference: try for real now
    try:
        loaded = _extension.load()
    except RuntimeError as exc:
        loaded, error = False, str(exc)
    else:
        error = state["error"]
    if loaded and _extension.has_kernel("cpu"):
        return
    compiler = os.environ.get("CXX", "c++")
    first_line = error.splitlines()[0][:300] if error else "no error recorded"
    if _extension._aot_library() is None and _extension.csrc_dir() is None:
        pytest.skip(f"compiled kernels cannot exist here: no AOT build and no csrc/ ({first_line})")
    if _extension._aot_library() is None and shutil.which(compiler) is None:
        pytest.skip(f"compiled kernels cannot exist here: no C++ compiler {compiler!r} ({first_line})")
    pytest.fail(f"the compiled kernels did not load although they could: {error}", pytrace=False)


@pytest.fixture
def extension(monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with ``CCA_BACKEND=extension`` (compiled kernels loaded, or fail/skip as above)."""
    monkeypatch.setenv("CCA_BACKEND", "extension")
    _require_extension()
    return "extension"


@pytest.fixture
def compiled_kernels() -> None:
    """The compiled kernels, loaded (fails loudly when they do not build; see ``backend``)."""
    _require_extension()


@pytest.fixture(params=["reference", "extension"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per backend; returns its name."""
    monkeypatch.setenv("CCA_BACKEND", request.param)
    if request.param == "extension":
        _require_extension()
    return request.param


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def device(request: pytest.FixtureRequest) -> str:
    """``"cpu"``, and ``"cuda"`` (skipped with the reason when no GPU is visible)."""
    return request.param
