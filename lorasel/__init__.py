"""lorasel: train LoRAs and pick the best (checkpoint, strength) by measurement.

The heavy parts (torch, diffusers) are imported lazily so that `import lorasel`
and the CLI's `--help` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["LoraselError", "__version__"]

from lorasel.errors import LoraselError
