"""The checkpoints to evaluate: discovered, read and content-hashed once.

All access to checkpoint files goes through ``lorasel.checkpoints`` (``discover``,
``read_checkpoint``, ``file_hash``, ``apply``, ``restore``), looked up at call time so
that this module is the evaluator's one seam to the checkpoint reader.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorasel.errors import CheckpointError, EvaluationError
from lorasel.evaluate.store import Store
from lorasel.rundir import RunDir


def checkpoint_api():
    """The checkpoint reader module (``lorasel.checkpoints``)."""
    import lorasel.checkpoints as api

    return api


@dataclass
class CheckpointInfo:
    """One checkpoint as the evaluator sees it (one row of ``Results.checkpoints``)."""

    checkpoint: str  # id: path relative to the evaluated folder, posix
    label: str
    path: Path
    epoch: int | None
    step: int | None
    hash: str
    format: str
    algo: str
    metadata: dict[str, str] = field(repr=False)
    touches_text_encoder: bool = False
    prediction: str | None = None  # what the file says its base predicts (stated_prediction)
    family: str | None = None  # sd1 | sd2 | sdxl where its keys and shapes say (family_from_modules)
    embeddings: tuple[str, ...] = ()  # names of the textual-inversion embeddings it bundles

    def row(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "label": self.label,
            "path": str(self.path),
            "epoch": self.epoch,
            "step": self.step,
            "hash": self.hash,
            "format": self.format,
            "algo": self.algo,
            "metadata": dict(self.metadata),
        }


def _algo(checkpoint) -> str:
    """The checkpoint's algorithm: the one its modules use most (lora, locon, loha, ...)."""
    counts = Counter(getattr(m, "algo", "lora") for m in getattr(checkpoint, "modules", ()) or ())
    return counts.most_common(1)[0][0] if counts else "lora"


def _checkpoint_id(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def content_hash(path: Path, store: Store) -> str:
    """The checkpoint reader's content hash, cached in the store by (path, size, mtime)."""
    stat = path.stat()
    cached = store.cached_hash(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if cached:
        return cached
    digest = checkpoint_api().file_hash(path)
    store.record_hash(str(path.resolve()), stat.st_size, stat.st_mtime_ns, digest)
    return digest


def find_checkpoints(run: RunDir, store: Store, warn: Callable[[str], None]) -> list[CheckpointInfo]:
    """Discover, read and hash every checkpoint under the run; unreadable ones are skipped
    with a warning. ``EvaluationError`` when none is left."""
    from lorasel.checkpoints.metadata import family_from_modules

    api = checkpoint_api()
    entries = api.discover(run.checkpoints)
    infos: list[CheckpointInfo] = []
    problems: list[CheckpointError] = []
    for entry in entries:
        path = Path(entry.path)
        try:
            checkpoint = api.read_checkpoint(path)
        except CheckpointError as exc:
            warn(f"skipping {path.name}: {exc.message}")
            problems.append(exc)
            continue
        epoch = entry.epoch if entry.epoch is not None else getattr(checkpoint, "epoch", None)
        step = entry.step if entry.step is not None else getattr(checkpoint, "step", None)
        infos.append(
            CheckpointInfo(
                checkpoint=_checkpoint_id(path, run.root),
                label=str(getattr(entry, "label", None) or path.stem),
                path=path.resolve(),
                epoch=None if epoch is None else int(epoch),
                step=None if step is None else int(step),
                hash=content_hash(path, store),
                format=str(getattr(checkpoint, "format", "kohya")),
                algo=_algo(checkpoint),
                metadata={str(k): str(v) for k, v in (getattr(checkpoint, "metadata", None) or {}).items()},
                touches_text_encoder=bool(getattr(checkpoint, "touches_text_encoder", False)),
                prediction=getattr(checkpoint, "prediction", None),
                family=family_from_modules(getattr(checkpoint, "modules", ())),
                embeddings=tuple(getattr(checkpoint, "embeddings", None) or ()),
            )
        )
    if not infos and problems:  # the warnings above say why for each; the first says it here
        first = problems[0]
        raise EvaluationError(
            f"none of the {len(entries)} LoRA files under {run.checkpoints} can be evaluated: {first.message}",
            hint=first.hint or "see the warnings above, one a file",
        )
    if not infos:
        raise EvaluationError(
            f"no LoRA checkpoints (.safetensors) found under {run.checkpoints}",
            hint="pass a run directory or a folder of LoRA .safetensors files",
        )
    return infos
