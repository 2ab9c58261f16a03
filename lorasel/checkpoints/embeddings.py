"""Textual-inversion embeddings bundled into a LoRA file (pivotal tuning), as A1111, kohya and
OneTrainer write and read them: ``bundle_emb.<name>.`` + the part that names the text encoder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from lorasel.checkpoints.files import check_finite
from lorasel.errors import CheckpointError

#: Textual-inversion embeddings bundled into a LoRA (pivotal tuning): ``bundle_emb.<name>.`` +
#: ``string_to_param.*`` (A1111's SD 1.x/2.x embedding layout), ``emb_params`` (kohya's) or
#: ``clip_l`` / ``clip_g`` (SDXL's, and OneTrainer's for every model), as A1111 and OneTrainer
#: read and write them.
BUNDLE_PREFIX = "bundle_emb."
_BUNDLE_PARTS = (
    ("string_to_param.*", "text_encoder"),
    ("emb_params", "text_encoder"),  # kohya's own SD 1.x/2.x embedding key
    ("clip_l", "text_encoder"),
    ("clip_g", "text_encoder_2"),
)


def _bundle_part(key: str) -> tuple[str, str | None, str]:
    """(the key after ``bundle_emb.``, the text encoder its part names or None, the name)."""
    rest = key[len(BUNDLE_PREFIX) :]
    part = next(((suffix, c) for suffix, c in _BUNDLE_PARTS if rest.endswith("." + suffix)), None)
    return rest, part[1] if part else None, rest[: -len(part[0]) - 1] if part else ""


def bundled_names(keys) -> list[str]:
    """The names of the embeddings a LoRA file bundles, from its key names (a header is enough)."""
    names = (_bundle_part(k)[2] for k in keys if k.startswith(BUNDLE_PREFIX))
    return list(dict.fromkeys(n for n in names if n.strip()))


def parse_embeddings(path: Path, tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """name → {text encoder → vectors [n, width]} of the embeddings bundled in a LoRA file."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if not key.startswith(BUNDLE_PREFIX):
            continue
        rest, component, name = _bundle_part(key)
        if rest.endswith("_out"):
            raise CheckpointError(
                f"{path} bundles an output embedding ({key!r}), which lorasel does not render",
                hint="save the LoRA without OneTrainer's output embeddings, or judge it in OneTrainer",
            )
        if component is None or not name.strip():
            raise CheckpointError(
                f"{path}: {key!r} is not a bundled embedding lorasel knows",
                hint="bundled embeddings are bundle_emb.<name>.clip_l / .clip_g / .string_to_param.*",
            )
        if tensor.dim() not in (1, 2) or tensor.numel() == 0 or not tensor.is_floating_point():
            raise CheckpointError(
                f"{path}: the bundled embedding {key!r} has shape {list(tensor.shape)}, not [vectors, width]",
                hint="the file is corrupt",
            )
        check_finite(path, key, tensor)
        vectors = out.setdefault(name, {})
        if component in vectors:
            raise CheckpointError(
                f"{path}: the bundled embedding {name!r} is stored twice for one text encoder",
                hint="re-save the LoRA with one copy of each embedding",
            )
        vectors[component] = tensor.reshape(-1, tensor.shape[-1])
    for name, vectors in out.items():
        counts = {v.shape[0] for v in vectors.values()}
        if len(counts) > 1:
            raise CheckpointError(
                f"{path}: the bundled embedding {name!r} has {' and '.join(map(str, sorted(counts)))} vectors "
                "for its two text encoders",
                hint="the file is corrupt",
            )
    return out
