"""``python -m cca.info`` says whether the vectorised (AVX2 + FMA) CPU kernels are active, and why not."""

from __future__ import annotations

from cca import info


def _line(text: str) -> str:
    found = [line for line in text.splitlines() if line.startswith("vectorised CPU")]
    assert len(found) == 1, text
    return found[0]


def test_info_says_whether_the_vectorised_cpu_kernels_are_active(monkeypatch, compiled_kernels):
    monkeypatch.setattr(info, "_cpu_flags", lambda: {"avx2", "fma", "sse2"})
    monkeypatch.delenv("CCA_CPU_SIMD", raising=False)
    collected = info.collect()
    assert collected["cpu_simd_active"] is True
    assert "yes" in _line(info.format_text(collected))
    monkeypatch.setenv("CCA_CPU_SIMD", "0")
    line = _line(info.format_text(info.collect()))
    assert "no" in line and "CCA_CPU_SIMD=0" in line
    monkeypatch.delenv("CCA_CPU_SIMD")
    monkeypatch.setattr(info, "_cpu_flags", lambda: {"sse2"})
    line = _line(info.format_text(info.collect()))
    assert "no" in line and "AVX2" in line
