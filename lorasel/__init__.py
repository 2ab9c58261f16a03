"""lorasel: train LoRAs and pick the best (checkpoint, strength) by measurement.

The heavy parts (torch, diffusers) are imported lazily so that `import lorasel`
and the CLI's `--help` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["LoraselError", "__version__", "pick"]

from typing import Any

from lorasel.errors import LoraselError


def __getattr__(name: str) -> Any:
    # Lazy: `import lorasel` stays light; `lorasel.pick(...)` imports the ranker on first use.
    if name == "pick":
        from lorasel.rank.picking import pick

        return pick
    raise AttributeError(f"module 'lorasel' has no attribute {name!r}")
