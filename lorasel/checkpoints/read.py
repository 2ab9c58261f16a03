"""``read_checkpoint``: one safetensors file in, a validated ``LoraCheckpoint`` out."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path

from lorasel.checkpoints.discover import progress
from lorasel.checkpoints.embeddings import bundled_names, parse_embeddings
from lorasel.checkpoints.files import check_path, file_hash, parse_header, read_bytes_hashed, read_header
from lorasel.checkpoints.formats import parse_modules
from lorasel.checkpoints.metadata import base_family, other_model, stated_prediction, trigger_and_class
from lorasel.checkpoints.model import LoraCheckpoint
from lorasel.errors import CheckpointError

ADAPTER_CONFIG = "adapter_config.json"
MAX_CONFIG_BYTES = 1 << 20


def _peft_config(path: Path, metadata: Mapping[str, str]) -> tuple[dict | None, str | None]:
    """The PEFT adapter config: metadata ``lora_adapter_metadata``, else ``adapter_config.json``
    beside the file. Returns (config, problem); a problem only matters for PEFT/diffusers files."""
    text, source = metadata.get("lora_adapter_metadata"), "metadata lora_adapter_metadata"
    if text is None:
        beside = path.parent / ADAPTER_CONFIG
        if not beside.is_file():
            return None, None
        source = str(beside)
        if beside.stat().st_size > MAX_CONFIG_BYTES:
            return None, f"{source} is larger than 1 MiB"
        text = beside.read_text(encoding="utf-8", errors="replace")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        return None, f"{source} is not valid JSON"
    if not isinstance(config, dict):
        return None, f"{source} is not a JSON object"
    return config, None


def read_checkpoint(path: str | os.PathLike) -> LoraCheckpoint:
    """Read, normalise and validate a LoRA checkpoint of any supported format.

    Raises ``CheckpointError`` naming the file for: pickle formats, files that are not
    safetensors or are truncated, files that are not LoRAs, unknown or incomplete modules,
    factors that do not fit together, and NaN/Inf weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = check_path(path)
    data = read_bytes_hashed(p)
    header = parse_header(p, data, len(data))
    try:
        tensors = load(data)
    except (SafetensorError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{p} is not a valid safetensors file: {str(exc)[:200]}",
            hint="the file may be corrupt; re-download or re-save it",
        ) from None
    del data
    if other := other_model(tensors):
        raise _for_another_model(p, other)
    config, problem = _peft_config(p, header.metadata)
    fmt, modules = parse_modules(p, tensors, header.metadata, config)
    embeddings = parse_embeddings(p, tensors)
    family = base_family(modules, header.metadata)
    if family == "unknown" and (other := other_model((), header.metadata)):
        raise _for_another_model(p, other)
    if problem and fmt in ("peft", "diffusers"):
        raise CheckpointError(
            f"{p}: cannot read its adapter config: {problem}",
            hint="fix the adapter config, or remove it to use alpha = rank",
        )
    epoch, step = progress(p, header.metadata)
    trigger, class_word = trigger_and_class(header.metadata)
    if embeddings and not (trigger and set(trigger.replace(",", " ").split()) & set(embeddings)):
        trigger = next(iter(embeddings))  # a pivotal-tuning LoRA is prompted by its embedding's name
    return LoraCheckpoint(
        path=p,
        format=fmt,
        base_family=family,
        metadata=dict(header.metadata),
        epoch=epoch,
        step=step,
        modules=modules,
        trigger=trigger,
        class_word=class_word,
        sha256=file_hash(p),
        prediction=stated_prediction(header.metadata, tensors),
        embeddings=embeddings,
    )


def _for_another_model(path: Path, model: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is a LoRA for {model}; lorasel evaluates LoRAs for SD 1.x, 2.x and SDXL",
        hint="lorasel renders with SD 1.x, 2.x and SDXL bases only; judge it in a tool that runs that model",
    )


#: What a user of a LoRA with bundled embeddings must know (pick, the report and the TUI say it).
EMBEDDING_ADVICE = (
    "write it in the prompt; A1111 loads bundled embeddings with the LoRA, ComfyUI and Forge do not"
)


def bundled_embeddings(path: str | os.PathLike) -> list[str]:
    """The names of the textual-inversion embeddings a LoRA file bundles, from its header alone;
    [] when the file is gone or unreadable. Memoised by (path, size, mtime): the TUI asks on every
    cursor move."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    return list(_bundled_embeddings(str(path), st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=1024)
def _bundled_embeddings(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    try:
        return tuple(bundled_names(read_header(path).tensors))
    except (CheckpointError, OSError):
        return ()
