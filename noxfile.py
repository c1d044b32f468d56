"""Sessions of cca: `nox -l` lists them.

All sessions share one virtual environment, `.nox/cca-env` (PyTorch is 5.5 GB: one copy, not one
per session). It is created on first use and re-installed when `pyproject.toml` or the pins below
change. PyTorch 2.14.1 is the CUDA 13 build; it runs on CPU-only machines too.

    nox -s reproduce_table1              # main job: table 1 at smoke scale on CPU
    nox -s tests                         # the test suite
    nox -s reproduce_table1 -- --scale full --data-root PATH --pretrained PATH --device cuda --nproc 4
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

ROOT = Path(__file__).resolve().parent
ENV_DIR = ROOT / ".nox" / "cca-env"
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
CUDA_ARCHS = "8.0;9.0"


def _python(session: nox.Session) -> str:
    """Create/refresh the shared environment and return its interpreter."""
    python = ENV_DIR / "bin" / "python"
    stamp = ENV_DIR / ".cca-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + " ".join(TORCH_PINS).encode()).hexdigest()
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(ENV_DIR), external=True)
    if not stamp.exists() or stamp.read_text() != want:
        session.run(str(python), "-m", "pip", "install", "--upgrade", "pip", external=True)
        session.run(str(python), "-m", "pip", "install", *TORCH_PINS, external=True)
        session.run(str(python), "-m", "pip", "install", "-e", f"{ROOT}[dev]", external=True)
        stamp.write_text(want)
    return str(python)


def _run(session: nox.Session, *args: str, env: dict | None = None) -> None:
    session.run(_python(session), *args, external=True, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest; benchmarks run once as tests, untimed)."""
    _run(session, "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session(default=False)
def lint(session: nox.Session) -> None:
    """ruff check of the package, tests, experiments and this file."""
    _run(session, "-m", "ruff", "check", "cca", "tests", "experiments", "noxfile.py", "setup.py")


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Compile the C++ (and, where a CUDA toolkit + GPU torch is present, CUDA) kernels ahead of time."""
    _run(session, "setup.py", "build_ext", "--inplace", env={"CCA_BUILD_EXT": "1"})
    _run(session, "-m", "cca.info")


@nox.session(default=False)
def build_cuda(session: nox.Session) -> None:
    """Compile + link the CUDA kernels for sm_80 and sm_90 with the local nvcc (no GPU needed), then import."""
    env = {"CCA_BUILD_EXT": "1", "FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": CUDA_ARCHS}
    env["MAX_JOBS"] = os.environ.get("MAX_JOBS", "2")
    _run(session, "setup.py", "build_ext", "--inplace", env=env)
    _run(
        session,
        "-c",
        "from cca.ops import _extension as e; s = e.status(); print(s); "
        "assert s['loaded'] and s['how'] == 'ahead-of-time build', 'AOT library not loaded'; "
        "assert s['cuda_kernels'], 'CUDA kernels not registered'",
    )


@nox.session(default=False)
def cuda_emulation(session: nox.Session) -> None:
    """The CUDA kernels' own source run on the CPU (csrc/testing/cuda_emulation.h): their numerical tests, no GPU needed."""
    _run(session, "-m", "pytest", "tests/test_cuda_emulated.py", *(session.posargs or ["-q"]))


@nox.session(default=False)
def triton_interpret(session: nox.Session) -> None:
    """The fused Triton kernels on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1) against the float64 reference."""
    _run(session, "-m", "pytest", "tests/test_triton_interpret.py", *(session.posargs or ["-q"]), env={"TRITON_INTERPRET": "1"})


@nox.session(default=False)
def triton_compile(session: nox.Session) -> None:
    """Compile the fused Triton kernels for sm_80/sm_90 without a GPU: registers, spills, shared memory (`-- --arch 90`)."""
    _run(session, "-m", "experiments.triton_compile", *session.posargs)


@nox.session(default=False)
def gpu_check(session: nox.Session) -> None:
    """On a CUDA machine: build, CUDA tests, every CUDA backend + auto vs einsum, table 5 on CUDA -> reports/gpu.md (<= 8 min; --quick, --dry-run)."""
    _run(session, "-m", "experiments.gpu_check", *session.posargs)


@nox.session(default=False)
def gpu_model(session: nox.Session) -> None:
    """GPU performance model (no GPU needed): bytes, FLOPs, roofline per CUDA backend -> reports/gpu_model.md."""
    _run(session, "-m", "cca.profiling.gpu_model", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """pytest-benchmark: ours vs einsum vs reference, interleaved (results/benchmarks/; `-- --full`: the long sweep)."""
    _run(session, "-m", "pytest", "tests/benchmarks", "--benchmark-only", *session.posargs)


@nox.session(default=False)
def profile(session: nox.Session) -> None:
    """Profiling harness: regenerate reports/efficiency.* and the scaling plots."""
    _run(session, "-m", "experiments.reports.efficiency", *session.posargs)


@nox.session(default=False)
def report(session: nox.Session) -> None:
    """Rebuild reports/operator.md (from the last `nox -s bench` results), gpu_model.md, claims.md and README.md from what is on disk."""
    if (ROOT / "results" / "benchmarks").is_dir():
        _run(session, "-m", "cca.reports.operator")
    _run(session, "-m", "cca.profiling.gpu_model")
    _run(session, "-m", "experiments.reports.index", *session.posargs)


def _tables() -> list[tuple[int, str]]:
    found = []
    for path in sorted((ROOT / "experiments").glob("table*_*.py")):
        match = re.fullmatch(r"table(\d+)_(\w+)\.py", path.name)
        if match:
            found.append((int(match.group(1)), match.group(2).replace("_", " ")))
    return found


def _reproduce(number: int, topic: str):
    def session_fn(session: nox.Session) -> None:
        _run(session, "-m", "experiments.run", str(number), *session.posargs)

    session_fn.__doc__ = f"Table {number} ({topic}): smoke scale by default; `-- --scale full ...` for the paper's."
    return session_fn


for _number, _topic in _tables():
    nox.session(name=f"reproduce_table{_number}", default=False)(_reproduce(_number, _topic))


@nox.session(default=False)
def reproduce_all(session: nox.Session) -> None:
    """Every table at smoke scale (pass `-- --scale full ...` for the paper's setting)."""
    _run(session, "-m", "experiments.run", "all", *session.posargs)


@nox.session(default=False)
def reproduce_longrange(session: nox.Session) -> None:
    """Beyond the paper: the long-range context ablation (R=0/1/2, non-local, CCL) on CPU."""
    _run(session, "-m", "experiments.longrange", *session.posargs)


def _mechanism(module: str, topic: str):
    def session_fn(session: nox.Session) -> None:
        _run(session, "-m", f"experiments.mechanisms.{module}", *session.posargs)

    session_fn.__doc__ = f"Mechanism test on CPU ({topic}): reports/mechanism_*.md; `-- --dry-run` for the plan."
    return session_fn


for _name, _module, _topic in (
    ("mechanism_ccl", "ccl_stability", "CCL stability, piecewise vs quadratic distance, 10 seeds"),
    ("mechanism_video", "video_context", "3D criss-cross context for video, T=1 vs T=5"),
    ("mechanism_stacking", "stacking", "row/column stacking vs criss-cross R=2"),
    ("mechanism_gamma", "gamma_init", "gamma initialised to 0 vs 1, curves"),
):
    nox.session(name=_name, default=False)(_mechanism(_module, _topic))


@nox.session(default=False)
def mechanisms(session: nox.Session) -> None:
    """All four mechanism tests on CPU in one worker pool (runs they share are trained once)."""
    _run(session, "-m", "experiments.mechanisms", *session.posargs)


@nox.session(default=False)
def attention_maps(session: nox.Session) -> None:
    """Attention-map figures (R=1 and composed R=2) from a trained smoke model."""
    _run(session, "-m", "experiments.attention_maps", *session.posargs)
