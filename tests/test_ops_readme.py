"""The README's operator snippet runs as written, in a fresh interpreter, and
``import cca`` gives the submodules on attribute access (``cca.nn.RCCA``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def operator_snippet() -> str:
    """The first ``python`` code block of the README's "The operator" section."""
    section = README.read_text().split("## The operator", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under '## The operator'"
    return match.group(1)


def run_fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_readme_operator_snippet_runs_as_written():
    code = operator_snippet()
    assert "cca.criss_cross_attention_3d(q3, k3, v3)" in code  # the line that raised NameError: q3
    checks = """
assert out.shape == v.shape and attn.shape == (2, 97 + 97 - 1, 97, 97)
assert out3d.shape == v3.shape and y.shape == x.shape
print("README-OK")
"""
    proc = run_fresh(code + checks)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "README-OK" in proc.stdout


def test_import_cca_gives_submodules_lazily():
    code = """
import sys
import cca
assert "cca.nn" not in sys.modules and "cca.models" not in sys.modules  # import cca stays light
block = cca.nn.RCCA(64)
assert type(block).__name__ == "RCCA" and "cca.nn" in sys.modules
assert cca.models.__name__ == "cca.models" and cca.reports.__name__ == "cca.reports"
assert {"nn", "models", "data", "engine", "profiling"} <= set(dir(cca))
try:
    cca.no_such_module
except AttributeError as exc:
    assert "no_such_module" in str(exc)
else:
    raise AssertionError("cca.no_such_module did not raise AttributeError")
print("LAZY-OK")
"""
    proc = run_fresh(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LAZY-OK" in proc.stdout
