"""Atomic file output (cca._io): concurrent writers of one file never collide, and a file keeps normal permissions."""

from __future__ import annotations

import os
import stat
import threading

from cca._io import atomic_write_text


def test_concurrent_writers_of_one_file_never_fail_or_tear(tmp_path):
    path = tmp_path / "README.md"
    texts = [f"writer {i}\n" * 2000 for i in range(4)]
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(40):
                atomic_write_text(path, text)
        except BaseException as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_text() in texts  # whole: one writer's text, never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # no temporary file left


def test_written_file_has_the_permissions_of_an_ordinary_new_file(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = atomic_write_text(tmp_path / "report.md", "x\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
