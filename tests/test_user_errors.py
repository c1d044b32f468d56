"""Mistakes a new user makes, each answered in one line (no traceback): --device cuda without a GPU,
--dry-run with a --data-root that is not there, a README command run by an interpreter without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONDONTWRITEBYTECODE": "1"}


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env or NO_GPU, capture_output=True, text=True, timeout=300)


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text[-3000:]
    return lines[0]


def test_cca_train_on_cuda_without_a_gpu_is_one_line(tmp_path):
    out = _run(["-m", "cca", "train", "--config", "smoke", "--set", "device=cuda", f"data_root={tmp_path / 'd'}",
                "--out", str(tmp_path / "run")])
    assert out.returncode != 0
    line = _one_line(out.stderr)
    assert "cuda" in line and "GPU" in line and "device=cpu" in line, line


def test_a_table_run_on_cuda_without_a_gpu_is_one_line(tmp_path):
    out = _run(["-m", "experiments.run", "1", "--device", "cuda", "--runs-dir", str(tmp_path / "runs"),
                "--reports-dir", str(tmp_path / "reports")])
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "--device cuda" in line and "GPU" in line, line
    assert not (tmp_path / "reports").exists()


def test_report_hardware_never_crashes_on_detection(monkeypatch):
    import torch

    from cca import provenance

    def no_driver(*args, **kwargs):
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.cuda, "get_device_name", no_driver)
    text = provenance.hardware("cuda")
    assert text and "CPU" in text and "CUDA" in text
    assert provenance.provenance("cuda")["hardware"] == text


def test_dry_run_with_a_missing_data_root_names_it(tmp_path, capsys):
    from experiments import run

    missing = tmp_path / "cityscapes"
    assert run.main(["2", "--dry-run", "--scale", "full", "--data-root", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "pass --data-root PATH" not in captured.out + captured.err
    line = _one_line(captured.err)
    assert str(missing) in line and "--data-root" in line and "not found" in line, line
    assert "planned iterations: 60000" in captured.out  # the plan is still printed above it


def test_a_readme_command_without_torch_names_the_interpreter_to_use():
    strip_site = "import sys; sys.path = [p for p in sys.path if 'site-packages' not in p]; "
    script = strip_site + "import runpy; sys.argv = ['-m', '--list']; runpy.run_module('experiments.run', run_name='__main__')"
    out = _run(["-c", script])
    assert out.returncode != 0
    line = _one_line(out.stderr)
    assert ".nox/cca-env/bin/python" in line and "torch" in line.lower(), line
    probe = strip_site + f"sys.path.insert(0, {str(ROOT)!r}); import cca"
    out = _run(["-c", probe])
    assert ".nox/cca-env/bin/python" in out.stderr.strip().splitlines()[-1], out.stderr[-2000:]


@pytest.mark.skipif(not Path("/usr/bin/python3").is_file(), reason="no system python3 to run the module as typed")
def test_python_m_cca_without_torch_is_one_line(tmp_path):
    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("the system python3 has torch")
    out = subprocess.run(["/usr/bin/python3", "-m", "cca", "info"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    line = _one_line(out.stderr)
    assert ".nox/cca-env/bin/python" in line, line
