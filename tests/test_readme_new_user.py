"""README figures and names a new user checks against a fresh clone: the emulation test count, the
profiling module, the network-increment command, the benchmark's long sweep and the paper's weights."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_emulation_test_count_is_what_pytest_collects():
    stated = re.search(r"`tests/test_cuda_emulated.py`, (\d+) tests", README)
    assert stated, "the README states the emulation test count"
    out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider",
                          "tests/test_cuda_emulated.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    collected = re.search(r"(\d+) tests? collected", out.stdout)
    assert collected, out.stdout[-1000:]
    assert int(stated.group(1)) == int(collected.group(1))


def test_the_readme_names_what_a_fresh_clone_has():
    assert not re.search(r"cca\.profile\b", README), "the module is cca.profiling (the nox session is `profile`)"
    assert "-m cca.profiling rcca --network resnet101" in README, "the network-increment command"
    assert "nox -s bench -- --full" in README and "resnet101_deepstem" in README
    assert "--dry-run" in README and "GPU-hours" in README
