"""Checkpoint metadata: kohya's ``ss_*`` keys and Stability's ``modelspec.*`` keys (all strings).

A1111, ComfyUI and civitai read these; the evaluator reads ``ss_epoch``, ``ss_steps``,
``ss_tag_frequency`` (trigger and class word from ``<repeats>_<trigger> <class>``) and
``modelspec.trigger_phrase``.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass

from trainer.config import TrainConfig
from trainer.data import KohyaDataset
from trainer.plan import StepPlan

BASE_MODEL_VERSION = {"sd1": "sd_v1", "toy": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURE = {
    "sd1": "stable-diffusion-v1",
    "toy": "stable-diffusion-v1",
    "sd2": "stable-diffusion-v2",
    "sdxl": "stable-diffusion-xl-v1-base",
}


def network_module(config: TrainConfig) -> tuple[str, dict[str, str]]:
    """``ss_network_module`` and ``ss_network_args`` as kohya / LyCORIS write them."""
    net = config.network
    args: dict[str, str] = {}
    if net.trains_convs:
        args["conv_dim"] = str(net.effective_conv_rank)
        args["conv_alpha"] = str(net.effective_conv_alpha)
    if net.algo in ("lora", "locon"):
        if net.dropout:
            args["dropout"] = str(net.dropout)
        return "networks.lora", args
    args["algo"] = {"dora": "lora", "loha": "loha", "lokr": "lokr"}[net.algo]
    if net.algo == "dora":
        args["dora_wd"] = "True"
        if net.dropout:
            args["dropout"] = str(net.dropout)
    if net.rank_dropout:
        args["rank_dropout"] = str(net.rank_dropout)
    if net.module_dropout:
        args["module_dropout"] = str(net.module_dropout)
    if net.algo == "lokr":
        args["factor"] = str(net.decompose_factor)
        if net.decompose_both:
            args["decompose_both"] = "True"
    if net.tucker:
        args["use_tucker"] = "True"
    if net.rslora:
        args["rs_lora"] = "True"
    return "lycoris.kohya", args


def _timestamp(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunInfo:
    """What stays the same for every checkpoint of a run (kept in the training state for resume)."""

    session_id: str
    started_at: float  # time.time()
    family: str  # base_family of the pipeline
    trigger: str
    base_name: str
    prediction: str = "epsilon"  # epsilon | v | v-ztsnr (lorasel.models.base.scheduler_prediction)


def run_metadata(config: TrainConfig, dataset: KohyaDataset, plan: StepPlan, info: RunInfo) -> dict[str, str]:
    """The metadata every checkpoint of the run shares."""
    module, args = network_module(config)
    train, net, data = config.training, config.network, config.dataset
    res = data.resolution
    folders = {f.name: {"n_repeats": f.repeats, "img_count": f.images} for f in dataset.folders}
    meta = {
        "ss_output_name": config.save.name,
        "ss_network_module": module,
        "ss_network_dim": str(net.rank),
        "ss_network_alpha": str(net.alpha),
        "ss_network_args": json.dumps(args),
        "ss_network_dropout": str(net.dropout),
        "ss_base_model_version": BASE_MODEL_VERSION.get(info.family, "sd_v1"),
        "ss_sd_model_name": info.base_name,
        "ss_v2": str(info.family == "sd2"),
        "ss_learning_rate": str(train.learning_rate),
        "ss_unet_lr": str(train.unet_lr or train.learning_rate),
        "ss_text_encoder_lr": str(train.text_encoder_lr or train.learning_rate)
        if net.train_text_encoder
        else "0.0",
        "ss_optimizer": train.optimizer,
        "ss_lr_scheduler": train.lr_scheduler,
        "ss_lr_warmup_steps": str(train.lr_warmup_steps),
        "ss_num_train_images": str(plan.samples_per_epoch),
        "ss_num_reg_images": "0",
        "ss_num_batches_per_epoch": str(plan.batches_per_epoch),
        "ss_num_epochs": str(plan.epochs),
        "ss_max_train_steps": str(plan.total_steps),
        "ss_batch_size_per_device": str(train.batch_size),
        "ss_total_batch_size": str(train.batch_size * train.gradient_accumulation_steps * plan.num_processes),
        "ss_gradient_accumulation_steps": str(train.gradient_accumulation_steps),
        "ss_gradient_checkpointing": str(train.gradient_checkpointing),
        "ss_mixed_precision": train.mixed_precision,
        "ss_full_fp16": "False",
        "ss_cache_latents": str(train.cache_latents),
        "ss_min_snr_gamma": str(train.min_snr_gamma) if train.min_snr_gamma else "None",
        "ss_noise_offset": str(train.noise_offset) if train.noise_offset else "None",
        "ss_max_grad_norm": str(train.max_grad_norm),
        "ss_clip_skip": str(train.clip_skip) if train.clip_skip > 1 else "None",
        "ss_zero_terminal_snr": str(info.prediction == "v-ztsnr"),
        "ss_resolution": f"({res}, {res})",
        "ss_enable_bucket": str(data.buckets),
        "ss_min_bucket_reso": str(data.min_bucket_resolution) if data.buckets else "None",
        "ss_max_bucket_reso": str(data.max_bucket_resolution) if data.buckets else "None",
        "ss_shuffle_caption": str(data.shuffle_caption),
        "ss_keep_tokens": str(data.keep_tokens),
        "ss_random_crop": str(data.random_crop),
        "ss_flip_aug": str(data.flip),
        "ss_caption_extension": data.caption_extension,
        "ss_seed": str(train.seed),
        "ss_session_id": info.session_id,
        "ss_training_started_at": str(info.started_at),
        "ss_tag_frequency": json.dumps(dataset.tag_frequency()),
        "ss_dataset_dirs": json.dumps(folders),
        "ss_training_comment": "trained with lorasel",
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": f"{ARCHITECTURE.get(info.family, 'stable-diffusion-v1')}/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": config.save.name,
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.trigger_phrase": info.trigger,
        # ModelSpec's words, as kohya writes them: "v" or "epsilon".
        "modelspec.prediction_type": "v" if info.prediction.startswith("v") else info.prediction,
    }
    if train.clip_skip > 1:
        meta["modelspec.encoder_layer"] = str(train.clip_skip)  # kohya writes clip skip here too
    return meta


def checkpoint_metadata(shared: dict[str, str], *, epoch: int, step: int, now: float) -> dict[str, str]:
    """``shared`` plus what changes per checkpoint: epoch, steps and the save time."""
    return {
        **shared,
        "ss_epoch": str(epoch),
        "ss_steps": str(step),
        "ss_training_finished_at": str(now),
        "modelspec.date": _timestamp(now),
    }
