"""A plain, non-editable install must carry the data files, not only the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_packages_and_data(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("lorasel-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "lorasel/__init__.py" in names
    assert "trainer/__init__.py" in names
    # Every data file in the source tree that the package needs at run time.
    for pattern in (
        "eval_prompts/*.toml",
        "trainer/presets/*.toml",
        "lorasel/**/*.safetensors",
        "lorasel/**/*.j2",
        "lorasel/models/configs/**/*.json",
    ):
        for path in ROOT.glob(pattern):
            rel = path.relative_to(ROOT).as_posix()
            assert rel in names, f"{rel} is missing from the wheel"
