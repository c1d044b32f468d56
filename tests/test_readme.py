"""The README as written: its Python snippets run, its `nox -s` sessions exist, its commands name a Python
that has torch (the project's environment), and the pytest summary is one line, not a list of skip reasons."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def _command_lines() -> list[str]:
    """Lines of the README's indented command blocks and fenced shell blocks."""
    lines = [line.strip() for line in README.splitlines() if line.startswith("    ") and not line.startswith("     ")]
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", README, flags=re.DOTALL):
        lines += [line.strip() for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_readme_has_python_snippets():
    assert PYTHON_BLOCKS, "the README shows the operator as a ```python block"


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(PYTHON_BLOCKS[index], f"README.md python block {index + 1}", "exec")
    exec(code, {"__name__": "__readme__"})  # noqa: S102 - the README's own snippet


def _sessions() -> set[str]:
    import nox.registry

    saved = dict(nox.registry._REGISTRY)
    try:
        nox.registry._REGISTRY.clear()
        runpy.run_path(str(ROOT / "noxfile.py"))
        return set(nox.registry.get())
    finally:
        nox.registry._REGISTRY.clear()
        nox.registry._REGISTRY.update(saved)


def test_every_nox_session_the_readme_names_exists():
    named = set(re.findall(r"nox -s ([A-Za-z0-9_]+)", README))
    assert {"tests", "reproduce_table1"} <= named
    missing = named - _sessions()
    assert not missing, f"README names nox sessions that noxfile.py does not define: {sorted(missing)}"


def test_readme_commands_name_a_python_with_torch():
    """A bare `python ...` is the user's Python (no torch): only `python -m pip install nox` may use it."""
    bare = [line for line in _command_lines() if re.match(r"(python3?|torchrun)\b", line)
            and not line.startswith("python -m pip install nox")]
    assert not bare, f"README commands run with the user's Python, which has no torch: {bare}"


def test_readme_commands_that_name_the_environment_work(tmp_path):
    """`.nox/cca-env/bin/python -m experiments.run --list` as written (this interpreter stands for the env's)."""
    import subprocess

    lines = [line for line in _command_lines() if line.startswith(".nox/cca-env/bin/python -m experiments.run --list")]
    assert lines
    args = lines[0].split("#")[0].split()[1:]
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cityscapes_test" in out.stdout and "r2_ohem" in out.stdout


def test_pytest_closes_with_one_summary_line_not_skip_reasons():
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    chars = "".join(re.findall(r"-r(\w+)", addopts))
    assert "a" not in chars and "s" not in chars and "A" not in chars, f"addopts {addopts!r} lists every skip reason"


def test_readme_states_measured_times():
    assert "a minute or two" not in README
    assert re.search(r"measured", README), "the README states measured run times"
