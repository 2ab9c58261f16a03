"""Where the trigger, the class word and the reference images come from.

Order for the trigger and class word: the ``--trigger/--class`` options, then (the trigger only)
the name of a textual-inversion embedding the checkpoints bundle (pivotal tuning: the LoRA was
trained on that token, whatever else names the concept), then the checkpoint metadata (``modelspec.trigger_phrase``; ``ss_tag_frequency`` folder keys ``<repeats>_<trigger>
<class>``), then the run's dataset folder name, then the prompt set's ``[concept]`` defaults.
Reference images default to the run's training images (``run.toml`` ``[dataset] path``).

Metadata comes from strangers' files: every value read here is treated as hostile text
(bounded, single line, control characters removed) and only ever used as prompt text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lorasel.errors import EvaluationError
from lorasel.rundir import STATE_DIRNAME, RunDir

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_WORD_CHARS = 100
MAX_METADATA_CHARS = 1_000_000
_KOHYA_FOLDER = re.compile(r"^\d+_(.+)$")


@dataclass(frozen=True)
class Concept:
    """The trigger and class word the prompts are expanded with, and where each came from."""

    trigger: str | None
    class_word: str | None
    source: str  # "options", "metadata of X", "dataset folder Y", "prompt set", or a mix


def safe_text(value: object, limit: int = MAX_WORD_CHARS) -> str | None:
    """Hostile metadata → one bounded line of printable text, or None when nothing is left."""
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in value[: limit * 4])
    cleaned = " ".join(cleaned.split())[:limit].strip()
    return cleaned or None


def split_folder_name(name: str) -> tuple[str | None, str | None]:
    """kohya's ``<repeats>_<trigger> <class>`` → (trigger, class); (None, None) otherwise."""
    match = _KOHYA_FOLDER.match(name.strip())
    if not match:
        return None, None
    words = safe_text(match.group(1))
    if not words:
        return None, None
    trigger, _, class_word = words.partition(" ")
    return trigger, (class_word.strip() or None)


def concept_from_metadata(metadata: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(trigger, class word) from ``modelspec.trigger_phrase`` and ``ss_tag_frequency``."""
    folder_trigger = folder_class = None
    raw = metadata.get("ss_tag_frequency")
    if isinstance(raw, str) and len(raw) <= MAX_METADATA_CHARS:
        try:
            frequency = json.loads(raw)
        except ValueError:
            frequency = None
        if isinstance(frequency, dict):
            for folder in sorted(k for k in frequency if isinstance(k, str)):
                folder_trigger, folder_class = split_folder_name(folder)
                if folder_trigger:
                    break
    phrase = safe_text(metadata.get("modelspec.trigger_phrase"))
    if phrase is None:
        return folder_trigger, folder_class
    if folder_trigger and phrase == f"{folder_trigger} {folder_class}".strip():
        return folder_trigger, folder_class
    return phrase, folder_class


def run_config(run: RunDir) -> dict:
    """``run.toml`` of a lorasel run as a dict ({} for a foreign folder)."""
    if not run.config.is_file():
        return {}
    try:
        return tomllib.loads(run.config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EvaluationError(
            f"cannot read the run config {run.config}: {exc}", hint="fix or remove run.toml"
        ) from exc


def base_of_run(run: RunDir) -> str | None:
    """The base model a lorasel run was trained on (``run.toml`` ``[model] base``)."""
    model = run_config(run).get("model", {})
    base = model.get("base") if isinstance(model, dict) else None
    return base if isinstance(base, str) and base else None


def dataset_path(run: RunDir) -> Path | None:
    """The run's training images: ``run.toml`` ``[dataset] path``, else ``RUN_DIR/dataset``."""
    dataset = run_config(run).get("dataset", {})
    path = dataset.get("path") if isinstance(dataset, dict) else None
    if isinstance(path, str) and path:
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = run.root / candidate
        if candidate.is_dir():
            return candidate
    return run.dataset if run.dataset.is_dir() else None


def concept_from_dataset(folder: Path) -> tuple[str | None, str | None]:
    """(trigger, class) from the first kohya subfolder ``<repeats>_<trigger> <class>``."""
    candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]
    for sub in candidates:
        trigger, class_word = split_folder_name(sub.name)
        if trigger:
            return trigger, class_word
    return None, None


def resolve_concept(
    *,
    trigger: str | None,
    class_word: str | None,
    metadata: Iterable[tuple[str, Mapping[str, str]]],
    dataset: Path | None,
    defaults: tuple[str | None, str | None],
    embeddings: Iterable[tuple[str, Sequence[str]]] = (),
) -> Concept:
    """First source that names it wins: options, a bundled embedding (the trigger), checkpoint
    metadata, dataset folder, prompt set."""
    sources: list[tuple[str, str | None, str | None]] = [
        ("options", safe_text(trigger), safe_text(class_word))
    ]
    for name, names in embeddings:
        if names and (t := safe_text(names[0])):
            sources.append((f"embedding bundled in {name}", t, None))
            break
    for name, meta in metadata:
        t, c = concept_from_metadata(meta)
        if t or c:
            sources.append((f"metadata of {name}", t, c))
            break
    if dataset is not None:
        sources.append((f"dataset folder {dataset}", *concept_from_dataset(dataset)))
    sources.append(("prompt set", *defaults))
    found_trigger = next(((s, t) for s, t, _ in sources if t), (None, None))
    found_class = next(((s, c) for s, _, c in sources if c), (None, None))
    where = (
        found_trigger[0] if found_trigger[0] == found_class[0] else f"{found_trigger[0]} / {found_class[0]}"
    )
    return Concept(trigger=found_trigger[1], class_word=found_class[1], source=str(where))


def reference_images(folder: Path) -> list[Path]:
    """Every image under ``folder`` (kohya subfolders included), sorted; never the lorasel state."""
    if not folder.is_dir():
        raise EvaluationError(
            f"reference folder {folder} does not exist", hint="pass --reference DIR with the training images"
        )
    images = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and STATE_DIRNAME not in p.relative_to(folder).parts[:-1]
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not images:
        raise EvaluationError(
            f"no reference images ({', '.join(IMAGE_SUFFIXES)}) under {folder}",
            hint="pass --reference DIR with the training images",
        )
    return images
