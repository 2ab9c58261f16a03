"""The embedded LoRA trainer (LoRA, LoCon, LoHa, LoKr, DoRA).

Uses the lorasel core (toy world, checkpoint writing); never the UI.

    from trainer import load_config, train
    result = train(load_config("toyworld", ["network.rank=8"]), output="runs/toy")

Heavy modules (torch, diffusers, peft) load on first use of ``train``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainer.config import TrainConfig
from trainer.configfile import from_dict, load_config, to_toml

if TYPE_CHECKING:
    from trainer.events import RunResult


def train(config: TrainConfig, **kwargs: Any) -> RunResult:
    """Train ``config``; see :func:`trainer.loop.train` for the keyword arguments."""
    from trainer.loop import train as _train

    return _train(config, **kwargs)


__all__ = ["TrainConfig", "from_dict", "load_config", "to_toml", "train"]
