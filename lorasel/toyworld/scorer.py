"""The toy scorer: a real open_clip model with a registered tiny config, trained on the world.

It was trained on every shape, the LoRA concepts' included, with their class words —
as a real CLIP has seen far more than any LoRA concept.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lorasel.errors import ModelLoadError
from lorasel.models.scorer import Scorer, _file_digest
from lorasel.toyworld.model import weights_path

MODEL_NAME = "lorasel-toy-clip"
SCORER_WEIGHTS = "scorer.safetensors"


@lru_cache(maxsize=1)
def register_config() -> str:
    """Register the toy CLIP's config with open_clip (offline); returns the model name."""
    import open_clip

    open_clip.add_model_config(weights_path(f"{MODEL_NAME}.json"))
    return MODEL_NAME


def create_toy_clip(pretrained: str | None = None):
    """(model, train_preprocess, val_preprocess) of the toy CLIP, optionally with weights."""
    import open_clip

    return open_clip.create_model_and_transforms(register_config(), pretrained=pretrained)


def load_toy_scorer(device=None, path: str | Path | None = None) -> Scorer:
    import open_clip

    file = Path(path) if path else weights_path(SCORER_WEIGHTS)
    if not file.is_file():
        raise ModelLoadError(
            f"the toy scorer's weights are missing ({file})",
            hint="reinstall lorasel, or rebuild them with `python -m lorasel.toyworld.pretrain`",
        )
    try:
        model, _, preprocess = create_toy_clip(str(file))
    except Exception as exc:  # safetensors and torch raise several types for a bad file
        raise ModelLoadError(
            f"the toy scorer's weights are unreadable ({file}): {exc}",
            hint="reinstall lorasel, or rebuild them with `python -m lorasel.toyworld.pretrain`",
        ) from exc
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    return Scorer(model, preprocess, tokenizer, name=f"toy:{_file_digest(file)}", device=device or "cpu")
