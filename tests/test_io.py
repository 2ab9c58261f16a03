"""Atomic writes (lorasel.io): what a reader sees, and the permissions the file gets."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from lorasel.io import atomic_open, atomic_write_bytes, atomic_write_text

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)]
)
def test_a_new_file_gets_the_permissions_open_would_give_it(tmp_path, umask, mask, expected):
    """As `open(path, "w")` does: 0o666 less the umask (mkstemp alone gives 0o600, so a LoRA
    lorasel trained could not be read by another user's ComfyUI)."""
    umask(mask)
    atomic_write_bytes(tmp_path / "a.safetensors", b"x")
    with open(tmp_path / "reference.txt", "w") as handle:  # the independent reference
        handle.write("x")
    assert _mode(tmp_path / "a.safetensors") == expected == _mode(tmp_path / "reference.txt")


def test_a_replaced_file_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "scores.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target, "w", encoding="utf-8") as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]
