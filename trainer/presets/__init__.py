"""Training presets as data: ``trainer/presets/<name>.toml``, loadable by name.

A preset is an ordinary config file; keys it leaves out take the dataclass
defaults of :mod:`trainer.config`.
"""

from __future__ import annotations

from pathlib import Path

PRESET_DIR = Path(__file__).resolve().parent


def preset_names() -> list[str]:
    """The names of the bundled presets (``toyworld``, ``sd15``, ``sdxl``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(name: str) -> Path | None:
    """The file of preset ``name``, or None when ``name`` is not a preset."""
    if "/" in name or "\\" in name or name.endswith(".toml"):
        return None
    path = PRESET_DIR / f"{name}.toml"
    return path if path.is_file() else None
