"""Training configuration: TOML → frozen dataclasses, checked before any work starts.

Each section is a frozen dataclass whose fields carry their help text in
``field(metadata={"help": ...})`` and whose ``__post_init__`` rejects bad values
with a :class:`ConfigError` naming the key (peft's style). Reading TOML, ``--set``
overrides and writing the resolved ``run.toml`` live in :mod:`trainer.configfile`.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from lorasel.errors import ConfigError

ALGOS = ("lora", "locon", "loha", "lokr", "dora")
TARGETS = ("attention", "kohya", "full")
OPTIMIZERS = ("adamw", "adamw8bit", "prodigy")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("no", "fp16", "bf16")
SAVE_PRECISIONS = ("fp32", "fp16", "bf16")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _help(text: str, **kwargs) -> Any:
    return field(metadata={"help": text}, **kwargs)


def _check(ok: bool, key: str, message: str, hint: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}", hint=hint)


def _one_of(value: str, key: str, choices: tuple[str, ...]) -> None:
    _check(
        value in choices,
        key,
        f"must be one of {', '.join(choices)} (got {value!r})",
        f"set {key} to one of them",
    )


@dataclass(frozen=True)
class ModelConfig:
    base: str = _help(
        'Base model: "toy", a diffusers folder, a hub id (org/name) or a .safetensors file.', default="toy"
    )
    prediction: str = _help(
        'What the base\'s UNet predicts: "epsilon", "v", or "v-ztsnr" (v on a zero-terminal-SNR schedule, '
        "as NoobAI-XL v-pred; kohya's --v_parameterization and --zero_terminal_snr). Empty: the base's own "
        "(a single file's v_pred/ztsnr markers or metadata, a folder's scheduler config).",
        default="",
    )

    def __post_init__(self) -> None:
        _check(bool(self.base.strip()), "model.base", "must not be empty", 'use "toy" or a path')
        if self.prediction:
            from lorasel.checkpoints.metadata import PREDICTIONS

            _one_of(self.prediction, "model.prediction", PREDICTIONS)


@dataclass(frozen=True)
class DatasetConfig:
    path: str = _help(
        "Kohya dataset root: folders named <repeats>_<class tokens> holding images + captions.", default=""
    )
    toy_concept: str = _help(
        "Generate this toy-world concept into RUN_DIR/dataset when path is empty.", default=""
    )
    toy_repeats: int = _help("Repeats of the generated toy dataset's folder.", default=10)
    resolution: int = _help(
        "Training resolution in pixels (square side; bucket area with buckets).", default=512
    )
    caption_extension: str = _help(
        "Caption sidecar extension; .txt and .caption are both tried.", default=".txt"
    )
    shuffle_caption: bool = _help(
        "Shuffle comma-separated caption tags every time an image is seen.", default=False
    )
    keep_tokens: int = _help("Leading caption tags kept in place when shuffling (the trigger).", default=0)
    random_crop: bool = _help("Random instead of centre crop (needs cache_latents = false).", default=False)
    flip: bool = _help("Random horizontal flip (needs cache_latents = false).", default=False)
    buckets: bool = _help("Aspect-ratio buckets for photos of mixed shapes.", default=False)
    min_bucket_resolution: int = _help("Smallest bucket side in pixels.", default=256)
    max_bucket_resolution: int = _help("Largest bucket side in pixels.", default=1024)
    bucket_step: int = _help("Bucket sides are multiples of this many pixels.", default=64)
    trigger: str = _help(
        "Trigger phrase for metadata; default: first word of the first folder's class tokens.", default=""
    )

    def __post_init__(self) -> None:
        _check(
            self.resolution >= 8 and self.resolution % 8 == 0,
            "dataset.resolution",
            f"must be a positive multiple of 8 (got {self.resolution})",
            "use e.g. 64, 512 or 1024",
        )
        _check(
            self.toy_repeats >= 1,
            "dataset.toy_repeats",
            f"must be >= 1 (got {self.toy_repeats})",
            "use e.g. 10",
        )
        _check(
            self.keep_tokens >= 0,
            "dataset.keep_tokens",
            f"must be >= 0 (got {self.keep_tokens})",
            "use 0 or 1",
        )
        _check(
            self.caption_extension.startswith("."),
            "dataset.caption_extension",
            f"must start with a dot (got {self.caption_extension!r})",
            'use ".txt" or ".caption"',
        )
        _check(
            self.bucket_step >= 8 and self.bucket_step % 8 == 0,
            "dataset.bucket_step",
            f"must be a positive multiple of 8 (got {self.bucket_step})",
            "use 64",
        )
        _check(
            0 < self.min_bucket_resolution <= self.max_bucket_resolution,
            "dataset.min_bucket_resolution",
            "must be > 0 and <= dataset.max_bucket_resolution",
            "e.g. 256 and 1024",
        )


@dataclass(frozen=True)
class NetworkConfig:
    algo: str = _help("lora | locon (conv layers too) | loha | lokr | dora.", default="lora")
    rank: int = _help("Rank (kohya network_dim).", default=16)
    alpha: float = _help("Alpha; the update is scaled by alpha / rank.", default=8.0)
    conv_rank: int = _help("Rank of 3x3 conv layers (LoCon / targets = full); 0 = same as rank.", default=0)
    conv_alpha: float = _help("Alpha of 3x3 conv layers; 0 = same as alpha.", default=0.0)
    dropout: float = _help("Dropout on the adapter input (lora, locon, dora).", default=0.0)
    rank_dropout: float = _help("Rank dropout (loha, lokr).", default=0.0)
    module_dropout: float = _help("Module dropout: skip a whole module per step (loha, lokr).", default=0.0)
    targets: str = _help(
        "attention (to_q/k/v/out) | kohya (Transformer2DModel + CLIP) | full (+ ResNet convs).",
        default="kohya",
    )
    train_text_encoder: bool = _help(
        "Train the text encoder(s) too (CLIPAttention / CLIPMLP).", default=False
    )
    rslora: bool = _help("Rank-stabilised scaling alpha / sqrt(rank) (lora, locon, dora).", default=False)
    decompose_factor: int = _help("LoKr Kronecker factor; -1 = balanced.", default=-1)
    decompose_both: bool = _help("LoKr: factorise the small Kronecker factor too.", default=False)
    tucker: bool = _help(
        "LoHa / LoKr: Tucker decomposition of 3x3 convs (LyCORIS use_tucker).", default=False
    )

    def __post_init__(self) -> None:
        _one_of(self.algo, "network.algo", ALGOS)
        _one_of(self.targets, "network.targets", TARGETS)
        _check(self.rank > 0, "network.rank", f"must be > 0 (got {self.rank})", "use e.g. 8, 16 or 32")
        _check(
            self.alpha > 0, "network.alpha", f"must be > 0 (got {self.alpha})", "use e.g. rank / 2 or rank"
        )
        _check(
            self.conv_rank >= 0,
            "network.conv_rank",
            f"must be >= 0 (got {self.conv_rank})",
            "0 means same as rank",
        )
        _check(
            self.conv_alpha >= 0,
            "network.conv_alpha",
            f"must be >= 0 (got {self.conv_alpha})",
            "0 means same as alpha",
        )
        for key in ("dropout", "rank_dropout", "module_dropout"):
            value = getattr(self, key)
            _check(0 <= value < 1, f"network.{key}", f"must be in [0, 1) (got {value})", "use e.g. 0.1")
        if self.algo in ("loha", "lokr"):
            _check(
                self.dropout == 0,
                "network.dropout",
                f"is not supported by {self.algo} in peft",
                "use network.rank_dropout or network.module_dropout",
            )
            _check(not self.rslora, "network.rslora", f"is not supported by {self.algo}", "set it to false")
        else:
            for key in ("rank_dropout", "module_dropout"):
                _check(
                    getattr(self, key) == 0,
                    f"network.{key}",
                    f"is not supported by peft's {self.algo}",
                    "use network.dropout, or algo = loha / lokr",
                )
        _check(
            self.decompose_factor == -1 or self.decompose_factor > 0,
            "network.decompose_factor",
            f"must be -1 or > 0 (got {self.decompose_factor})",
            "use -1",
        )

    @property
    def trains_convs(self) -> bool:
        """3x3 convs of ResNet / Down / Upsample blocks are adapted (LoCon-style)."""
        return self.algo == "locon" or self.targets == "full"

    @property
    def effective_conv_rank(self) -> int:
        return self.conv_rank or self.rank

    @property
    def effective_conv_alpha(self) -> float:
        return self.conv_alpha or self.alpha


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = _help("Number of epochs (one epoch sees every image × its folder's repeats).", default=10)
    max_steps: int = _help("Stop after this many optimizer steps; 0 = when the epochs are done.", default=0)
    batch_size: int = _help("Images per batch (per device).", default=1)
    gradient_accumulation_steps: int = _help("Batches accumulated per optimizer step.", default=1)
    learning_rate: float = _help("Learning rate (Prodigy: 1.0).", default=1e-4)
    unet_lr: float = _help("UNet learning rate; 0 = learning_rate.", default=0.0)
    text_encoder_lr: float = _help("Text-encoder learning rate; 0 = learning_rate.", default=0.0)
    optimizer: str = _help(
        "adamw | adamw8bit (bitsandbytes + CUDA) | prodigy (pip install prodigyopt).", default="adamw"
    )
    weight_decay: float = _help("Decoupled weight decay.", default=0.01)
    lr_scheduler: str = _help(
        "constant | constant_with_warmup | linear | cosine | cosine_with_restarts | polynomial.",
        default="constant",
    )
    lr_warmup_steps: int = _help("Warm-up steps of the scheduler.", default=0)
    max_grad_norm: float = _help("Gradient clipping norm; 0 = off.", default=1.0)
    mixed_precision: str = _help("no | fp16 (CUDA) | bf16.", default="no")
    gradient_checkpointing: bool = _help(
        "Recompute activations in the backward pass to save memory.", default=False
    )
    cache_latents: bool = _help("Encode every image with the VAE once, before training.", default=True)
    cache_text_embeddings: bool = _help(
        "Encode each caption once when the text encoder is frozen.", default=True
    )
    min_snr_gamma: float = _help("Min-SNR loss weighting γ (5 is common); 0 = off.", default=0.0)
    noise_offset: float = _help(
        "Noise offset (e.g. 0.05) for darker darks / brighter brights; 0 = off.", default=0.0
    )
    clip_skip: int = _help(
        "SD 1.x/2.x: condition on the CLIP layer this many from the end, as kohya's --clip_skip "
        "(2 for most anime models); 1 = the last. lorasel eval renders at the same.",
        default=1,
    )
    seed: int = _help("Seed: the same seed gives the same run (bit-exact on CPU).", default=42)
    num_workers: int = _help("DataLoader worker processes for image loading.", default=0)
    cpu_threads: int = _help(
        "torch threads when training on CPU; 0 = torch's default. Small models (the toy world) run "
        "fastest with 1, and a shared machine punishes more threads than free cores.",
        default=0,
    )

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "gradient_accumulation_steps", "clip_skip"):
            value = getattr(self, key)
            _check(value >= 1, f"training.{key}", f"must be >= 1 (got {value})", "use a positive integer")
        for key in ("max_steps", "lr_warmup_steps", "num_workers", "cpu_threads"):
            value = getattr(self, key)
            _check(
                value >= 0, f"training.{key}", f"must be >= 0 (got {value})", "use 0 or a positive integer"
            )
        _check(
            self.learning_rate > 0,
            "training.learning_rate",
            f"must be > 0 (got {self.learning_rate})",
            "use e.g. 1e-4",
        )
        for key in (
            "unet_lr",
            "text_encoder_lr",
            "weight_decay",
            "max_grad_norm",
            "min_snr_gamma",
            "noise_offset",
        ):
            value = getattr(self, key)
            _check(value >= 0, f"training.{key}", f"must be >= 0 (got {value})", "use 0 to disable")
        _check(self.seed >= 0, "training.seed", f"must be >= 0 (got {self.seed})", "use e.g. 42")
        _one_of(self.optimizer, "training.optimizer", OPTIMIZERS)
        _one_of(self.lr_scheduler, "training.lr_scheduler", SCHEDULERS)
        _one_of(self.mixed_precision, "training.mixed_precision", PRECISIONS)


@dataclass(frozen=True)
class SaveConfig:
    name: str = _help("Output name: checkpoints are NAME-000001.safetensors, ...", default="lora")
    every_n_epochs: int = _help(
        "Save a checkpoint every N epochs (the last epoch always); 0 = only the last.", default=1
    )
    every_n_steps: int = _help("Also save NAME-step00000500.safetensors every N steps; 0 = off.", default=0)
    precision: str = _help("Tensor dtype in the files: fp32 | fp16 | bf16.", default="fp16")

    def __post_init__(self) -> None:
        _check(
            bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\- ]*", self.name)) and ".." not in self.name,
            "save.name",
            f"must be a plain file name (got {self.name!r})",
            "use letters, digits, '-', '_' or '.'",
        )
        for key in ("every_n_epochs", "every_n_steps"):
            value = getattr(self, key)
            _check(value >= 0, f"save.{key}", f"must be >= 0 (got {value})", "use 0 to disable")
        _one_of(self.precision, "save.precision", SAVE_PRECISIONS)


@dataclass(frozen=True)
class ValidationConfig:
    path: str = _help("Held-out kohya dataset for a fixed-seed validation loss; empty = none.", default="")
    split: float = _help(
        "Fraction of the training images held out for validation instead; 0 = none.", default=0.0
    )
    every_n_epochs: int = _help("Validation loss every N epochs.", default=1)
    timesteps: list[int] = field(
        default_factory=lambda: [100, 300, 500, 700, 900],
        metadata={"help": "Fixed timesteps of the validation loss (kohya's method)."},
    )
    seed: int = _help("Seed of the fixed validation noise.", default=0)

    def __post_init__(self) -> None:
        _check(
            0 <= self.split < 1, "validation.split", f"must be in [0, 1) (got {self.split})", "use e.g. 0.1"
        )
        _check(
            self.every_n_epochs >= 1,
            "validation.every_n_epochs",
            f"must be >= 1 (got {self.every_n_epochs})",
            "use 1",
        )
        _check(
            bool(self.timesteps) and all(0 <= t < 1000 for t in self.timesteps),
            "validation.timesteps",
            f"must be a non-empty list of integers in [0, 1000) (got {self.timesteps})",
            "use [100, 500, 900]",
        )
        _check(
            not (self.path and self.split),
            "validation.path",
            "and validation.split cannot both be set",
            "hold out a folder or a fraction, not both",
        )


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = _help(
        "Also log to TensorBoard in RUN_DIR/logs (pip install tensorboard).", default=False
    )


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    save: SaveConfig = field(default_factory=SaveConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        _check(
            bool(self.dataset.path) or bool(self.dataset.toy_concept),
            "dataset.path",
            "is not set",
            "point it at a kohya dataset folder, or set dataset.toy_concept",
        )
        if self.training.cache_latents:
            for key in ("random_crop", "flip"):
                _check(
                    not getattr(self.dataset, key),
                    f"dataset.{key}",
                    "cannot be combined with training.cache_latents (the cache holds one view per image)",
                    f"set training.cache_latents = false or dataset.{key} = false",
                )

    def replace(self, **sections: Any) -> TrainConfig:
        return dataclasses.replace(self, **sections)


SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(TrainConfig)[f.name] for f in dataclasses.fields(TrainConfig)
}
