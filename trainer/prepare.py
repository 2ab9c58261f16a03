"""Everything before the first step: the run directory, the dataset, the step plan.

All of it runs before the base model is loaded, so bad input fails in a second
with an error naming the key or file, and an unwritable output fails before
any training time is spent.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from lorasel.errors import ConfigError, DatasetError
from lorasel.io import atomic_write_text
from lorasel.rundir import RunDir
from trainer.config import TrainConfig
from trainer.configfile import to_toml
from trainer.data import KohyaDataset, scan_dataset, split_holdout
from trainer.plan import Size, StepPlan, assign_buckets, make_plan

STATE_FILE = Path("train_state") / "state.safetensors"


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.save.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def state_path(run: RunDir) -> Path:
    return run.root / STATE_FILE


def checkpoint_dir(run: RunDir) -> Path:
    # RunDir.checkpoints falls back to the root when the folder does not exist yet.
    return run.root / "checkpoints"


def check_output(run: RunDir, *, resume: bool) -> None:
    """The run directory is writable, and holds no other run unless resuming."""
    root = run.root
    if root.exists() and not root.is_dir():
        raise ConfigError(f"output {root} exists and is not a folder", hint="choose another --output")
    if resume:
        if not run.config.is_file():
            raise ConfigError(
                f"{root} is not a lorasel run (no run.toml)",
                hint="pass the RUN_DIR of an earlier `lorasel train`",
            )
    else:
        saved = list(checkpoint_dir(run).glob("*.safetensors")) if checkpoint_dir(run).is_dir() else []
        if saved or state_path(run).exists():
            raise ConfigError(
                f"output {root} already holds a training run",
                hint=f"continue it with --resume {root}, or choose another --output",
            )
    try:
        for folder in (root, checkpoint_dir(run), run.logs, state_path(run).parent):
            folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.logs / ".write-test", "ok\n")
        (run.logs / ".write-test").unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write to output folder {root}: {exc.strerror or exc}",
            hint="choose a writable --output folder",
        ) from None


def materialise_dataset(config: TrainConfig, run: RunDir) -> TrainConfig:
    """Generate the toy concept's dataset into ``RUN_DIR/dataset`` when asked; make paths absolute."""
    data = config.dataset
    if data.path:
        path = str(Path(data.path).expanduser().resolve())
    else:
        target = run.dataset
        if not (target.is_dir() and any(target.iterdir())):
            try:
                from lorasel.toyworld.concepts import make_dataset
            except ImportError as exc:
                raise ConfigError(
                    f"dataset.toy_concept = {data.toy_concept!r} needs the toy world ({exc})",
                    hint="set dataset.path to a kohya dataset folder instead",
                ) from None
            make_dataset(data.toy_concept, target, repeats=data.toy_repeats, seed=config.training.seed)
        path = str(target.resolve())
    validation = config.validation
    if validation.path:
        validation = dataclasses.replace(validation, path=str(Path(validation.path).expanduser().resolve()))
    return config.replace(dataset=dataclasses.replace(data, path=path), validation=validation)


def write_run_config(config: TrainConfig, run: RunDir) -> None:
    """``run.toml``: the resolved config. A dataset inside the run folder (a toy concept's, the
    demo's validation images) is written relative to it, as the file's own folder resolves it, so
    that a run that is moved or copied (from the training machine) still evaluates and resumes
    with its own images."""
    header = (
        "Resolved training config of this run (lorasel train). `lorasel train --resume RUN_DIR` reads it.\n"
        "Paths inside the run folder are relative to it."
    )
    config = config.replace(
        dataset=dataclasses.replace(config.dataset, path=_inside(config.dataset.path, run.root)),
        validation=dataclasses.replace(config.validation, path=_inside(config.validation.path, run.root)),
    )
    atomic_write_text(run.config, to_toml(config, header=header))


def _inside(path: str | None, root: Path) -> str | None:
    """``path`` relative to ``root`` when it lies inside it, else as it is."""
    if not path:
        return path
    try:
        return Path(path).relative_to(root.resolve()).as_posix()
    except ValueError:
        return path


@dataclass(frozen=True)
class Datasets:
    train: KohyaDataset
    validation: KohyaDataset | None
    sizes: list[Size]
    validation_sizes: list[Size]


def load_datasets(config: TrainConfig) -> Datasets:
    data = config.dataset
    train = scan_dataset(data.path, data.caption_extension)
    validation = None
    if config.validation.path:
        validation = scan_dataset(config.validation.path, data.caption_extension)
    elif config.validation.split:
        train, validation = split_holdout(train, config.validation.split, config.training.seed)
    bucket_args = {
        "enabled": data.buckets,
        "min_side": data.min_bucket_resolution,
        "max_side": data.max_bucket_resolution,
        "step": data.bucket_step,
    }
    sizes = assign_buckets(train, data.resolution, **bucket_args)
    val_sizes = assign_buckets(validation, data.resolution, **bucket_args) if validation else []
    return Datasets(train, validation, sizes, val_sizes)


def step_plan(config: TrainConfig, datasets: Datasets, num_processes: int) -> StepPlan:
    train = config.training
    plan = make_plan(
        datasets.train,
        datasets.sizes,
        batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        epochs=train.epochs,
        max_steps=train.max_steps,
        num_processes=num_processes,
    )
    if plan.total_steps < 1:
        raise DatasetError(f"dataset {datasets.train.root} gives no training step", hint="add images")
    return plan
