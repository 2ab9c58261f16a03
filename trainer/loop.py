"""The training loop: one function, top to bottom (nanoGPT-style), on accelerate.

Reading order: set up the run → load the model and add the adapters → cache what
never changes (latents, caption embeddings) → per epoch, per optimizer step:
sample noise and timesteps, predict, backpropagate, step → log, validate, save.

Randomness is a pure function of where training is: each micro-batch reseeds torch
from (seed, step, micro-batch, process), the batch order of an epoch comes from
(seed, epoch) and each image's crop / flip / caption shuffle from its sample key.
That is what makes ``--resume`` after a kill -9 reproduce the same remaining
checkpoints without pickling RNG states, and a CPU run bit-exact.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import deque
from pathlib import Path

import numpy as np
import torch

from lorasel.checkpoints.write import save_checkpoint
from lorasel.errors import ConfigError, LoraselError
from lorasel.io import atomic_write_text
from lorasel.models import base_family, load_base
from lorasel.models.base import scheduler_prediction, with_prediction
from lorasel.rundir import RunDir
from lorasel.text import counted
from trainer import prepare
from trainer.conditioning import TextConditioner, check_clip_skip, sdxl_time_ids
from trainer.config import TrainConfig
from trainer.diffusion import (
    DTYPES,
    allow_new_precision,
    diffusion_loss,
    encode_latent_dists,
    prepare_models,
    step_seed,
)
from trainer.events import CheckpointSaved, Finished, Progress, RunResult, Started, Status, Step, Validated
from trainer.export import export_tensors
from trainer.images import TrainingImages, collate
from trainer.logs import LossLog
from trainer.metadata import RunInfo, checkpoint_metadata, run_metadata
from trainer.optim import check_available as check_optimizer
from trainer.optim import current_lr, make_optimizer, make_scheduler, param_groups
from trainer.plan import epoch_batches
from trainer.state import load_training_state, save_training_state


class TrainingDivergedError(LoraselError):
    """The loss became NaN or infinite; the checkpoints saved before it are kept."""


def train(
    config: TrainConfig,
    *,
    output: str | Path | None = None,
    pipeline=None,
    progress: Progress | None = None,
    resume: bool = False,
) -> RunResult:
    """Train ``config`` into a run directory; ``resume=True`` continues ``output`` from its saved state."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from diffusers import DDPMScheduler

    emit = progress or (lambda event: None)
    wall_start = time.time()
    train_cfg = config.training
    if train_cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("training.mixed_precision = fp16 needs a CUDA GPU", hint="use bf16 or no on CPU")
    check_optimizer(train_cfg)

    # --- 1. The run directory, the dataset and the arithmetic: fail fast on bad input.
    run = RunDir.at(output or prepare.default_run_dir(config))
    # A bad dataset fails before the output folder is touched (a toy dataset is generated into it).
    datasets = prepare.load_datasets(config) if config.dataset.path else None
    prepare.check_output(run, resume=resume)
    # A run killed before its first checkpoint has no state: it starts again from step 0.
    has_state = resume and prepare.state_path(run).is_file()
    state = load_training_state(prepare.state_path(run)) if has_state else None
    allow_new_precision(train_cfg.mixed_precision)
    accelerator = Accelerator(
        mixed_precision=train_cfg.mixed_precision,
        log_with="tensorboard" if config.logging.tensorboard else None,
        project_dir=str(run.logs),
        # Module dropout skips whole adapters in a step: DDP must not wait for their gradients.
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=config.network.module_dropout > 0)
        ],
    )
    main = accelerator.is_main_process
    if not main:
        emit = lambda event: None  # noqa: E731 (one progress display, from the main process)
    config = prepare.materialise_dataset(config, run) if main else config
    accelerator.wait_for_everyone()
    config = prepare.materialise_dataset(config, run)  # the other processes see the generated folder now
    if main:
        prepare.write_run_config(config, run)
    datasets = datasets or prepare.load_datasets(config)
    plan = prepare.step_plan(config, datasets, accelerator.num_processes)
    if main:
        atomic_write_text(run.logs / "steps.txt", plan.describe() + "\n")

    # --- 2. The model: frozen base in the training dtype, fp32 adapters on top.
    device = accelerator.device
    emit(Status(f"loading base model {config.model.base}"))
    if pipeline is None:
        pipeline = load_base(config.model.base, device=device, dtype=DTYPES[train_cfg.mixed_precision])
    pipe = pipeline
    family = base_family(pipe)
    sdxl = family == "sdxl"
    check_clip_skip(train_cfg.clip_skip, pipe)
    network, vae_dtype = prepare_models(pipe, config, device)
    groups = param_groups(network, train_cfg)
    optimizer = make_optimizer(train_cfg, groups)
    lr_scheduler = make_scheduler(train_cfg, optimizer, plan.total_steps)
    scheduler = (
        with_prediction(pipe.scheduler, config.model.prediction)
        if config.model.prediction
        else pipe.scheduler
    )
    noise_scheduler = DDPMScheduler.from_config(scheduler.config)

    # --- 3. Resume: adapter weights, optimizer, scheduler and the position in training.
    step, epoch, group_start = 0, 1, 0
    info = RunInfo(
        session_id=str(uuid.uuid4().int % 2**31),
        started_at=wall_start,
        family=family,
        trigger=config.dataset.trigger or datasets.train.default_trigger(),
        base_name=config.model.base,
        prediction=scheduler_prediction(noise_scheduler),
    )
    checkpoints: list[str] = []
    if state is not None:
        trainable = network.named_trainable()
        shapes = {name: tuple(p.shape) for name, p in trainable.items()}
        if shapes != {name: tuple(t.shape) for name, t in state.params.items()}:
            raise LoraselError(
                f"the training state in {run.root} does not fit the network of {run.config}",
                hint="resume with the run's own config (run.toml); only epochs and saving may change",
            )
        with torch.no_grad():
            for name, param in trainable.items():
                param.copy_(state.params[name])
        optimizer.load_state_dict(state.optimizer)
        lr_scheduler.load_state_dict(state.scheduler)
        progress_state = state.progress
        step, epoch, group_start = progress_state["step"], progress_state["epoch"], progress_state["group"]
        saved_info = {k: v for k, v in progress_state["info"].items() if k in info.__dict__}
        info = RunInfo(**{**info.__dict__, **saved_info, "family": family})  # same session id and start
        checkpoints = list(progress_state["checkpoints"])
    trained = {role: network.models[role] for role in network.roles}
    prepared = accelerator.prepare(*trained.values(), optimizer)
    trained = dict(zip(trained, prepared[:-1], strict=True))
    optimizer = prepared[-1]
    unet = trained["unet"]
    for model in trained.values():
        model.train()  # adapter dropout on
    trainable_params = [p for model in trained.values() for p in model.parameters() if p.requires_grad]
    shared_meta = run_metadata(config, datasets.train, plan, info)

    # --- 4. Cache what never changes during training.
    scaling = pipe.vae.config.scaling_factor
    latents_cache = None
    if train_cfg.cache_latents:
        emit(Status(f"caching latents of {counted(len(datasets.train.images), 'image')}"))
        latents_cache = encode_latent_dists(pipe.vae, datasets.train, datasets.sizes, device, vae_dtype)
    val_cache = None
    if datasets.validation is not None:
        val_cache = encode_latent_dists(
            pipe.vae, datasets.validation, datasets.validation_sizes, device, vae_dtype
        )
    freeze_text = not config.network.train_text_encoder
    text = TextConditioner(
        pipe,
        sdxl=sdxl,
        cache=freeze_text and train_cfg.cache_text_embeddings,
        device=device,
        clip_skip=train_cfg.clip_skip,
    )
    # Trained text encoders run through their accelerate wrappers (DDP all-reduces their gradients).
    text.encoders = [
        trained.get(role, model)
        for role, model in zip(("text_encoder", "text_encoder_2"), text.encoders, strict=False)
    ]
    images = TrainingImages(datasets.train, datasets.sizes, config.dataset, with_pixels=latents_cache is None)

    def conditioning(captions, views):
        with torch.no_grad() if freeze_text else contextlib.nullcontext():
            hidden, pooled = text(captions)
        added = None
        if sdxl:
            added = {"text_embeds": pooled, "time_ids": sdxl_time_ids(views, device, hidden.dtype)}
        return hidden, added

    def batch_latents(batch):
        """Latents sampled from the VAE posterior: from the cache, or encoded now."""
        if latents_cache is not None:
            mean = torch.cat([latents_cache[i][0] for i in batch["index"]])
            std = torch.cat([latents_cache[i][1] for i in batch["index"]])
            views = [latents_cache[i][2] for i in batch["index"]]
        else:
            with torch.no_grad():
                dist = pipe.vae.encode(batch["pixels"].to(device, vae_dtype)).latent_dist
            mean, std, views = dist.mean.float(), dist.std.float(), batch["view"]
        # randn of the shape, not randn_like: the same draw whatever the tensor's memory layout.
        sample = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
        return (mean + std * sample) * scaling, views

    @torch.no_grad()
    def validation_loss() -> float:
        """kohya's method: fixed timesteps and fixed noise per image, so epochs are comparable.
        An image's timesteps go through the UNet as one batch (the same latents, noise and
        caption at each), not one forward pass per timestep."""
        unet.eval()
        losses = []
        steps = torch.tensor(config.validation.timesteps, device=device)
        n = len(steps)
        for i, (mean, _, view) in enumerate(val_cache):
            record = datasets.validation.images[i]
            hidden, added = conditioning([record.caption], [view])
            generator = torch.Generator().manual_seed(config.validation.seed * 100_003 + i)
            noise = torch.randn(mean.shape, generator=generator).to(device)
            loss = diffusion_loss(
                unet, noise_scheduler, (mean * scaling).expand(n, -1, -1, -1), hidden.expand(n, -1, -1),
                None if added is None else {k: v.expand(n, *v.shape[1:]) for k, v in added.items()},
                timesteps=steps, noise=noise.expand(n, -1, -1, -1),
            )  # fmt: skip
            losses.extend(loss.tolist())
        unet.train()
        return float(np.mean(losses))

    def save(name: str, epoch_number: int, next_epoch: int, next_group: int) -> None:
        """Write checkpoint ``name`` then the training state (both atomic), on the main process."""
        if name not in checkpoints:
            checkpoints.append(name)
        if main:
            models = {role: accelerator.unwrap_model(m) for role, m in trained.items()}
            tensors = export_tensors(models, sdxl=sdxl, dtype=DTYPES[config.save.precision])
            meta = checkpoint_metadata(shared_meta, epoch=epoch_number, step=step, now=time.time())
            path = save_checkpoint(prepare.checkpoint_dir(run) / name, tensors, meta)
            save_training_state(
                prepare.state_path(run),
                params={k: p for k, p in network.named_trainable().items()},
                optimizer=optimizer.state_dict(),
                scheduler=lr_scheduler.state_dict(),
                progress={
                    "step": step,
                    "epoch": next_epoch,
                    "group": next_group,
                    "info": info.__dict__,
                    "checkpoints": checkpoints,
                },
            )
            emit(CheckpointSaved(path, epoch_number, step))
        accelerator.wait_for_everyone()

    # --- 5. Train.
    threads_before = torch.get_num_threads()
    if train_cfg.cpu_threads and device.type == "cpu":
        torch.set_num_threads(train_cfg.cpu_threads)
    if config.logging.tensorboard:
        accelerator.init_trackers(
            "lorasel", config={"rank": config.network.rank, "algo": config.network.algo}
        )
    log = (
        LossLog(run.loss_csv, validation=val_cache is not None, resume_step=step if state else None)
        if main
        else None
    )
    emit(Started(run.root, plan, step))
    accum = train_cfg.gradient_accumulation_steps
    recent: deque[float] = deque(maxlen=20)
    last_loss = math.nan
    last_epoch = epoch if state is None else max(epoch - 1, 1)
    try:
        while step < plan.total_steps and epoch <= plan.epochs:
            batches = epoch_batches(
                datasets.train,
                datasets.sizes,
                batch_size=train_cfg.batch_size,
                seed=train_cfg.seed,
                epoch=epoch,
                num_processes=accelerator.num_processes,
            )
            mine = batches[accelerator.process_index :: accelerator.num_processes]
            step_groups = [mine[i : i + accum] for i in range(0, len(mine), accum)]
            keyed = [
                [
                    [(idx, f"{train_cfg.seed}/{epoch}/{g}/{m}/{j}") for j, idx in enumerate(b)]
                    for m, b in enumerate(group)
                ]
                for g, group in enumerate(step_groups)
            ]
            loader = torch.utils.data.DataLoader(
                images,
                batch_sampler=[b for group in keyed[group_start:] for b in group],
                collate_fn=collate,
                num_workers=train_cfg.num_workers,
            )
            batch_iter = iter(loader)
            for g in range(group_start, len(step_groups)):
                last_epoch = epoch
                recent.append(time.perf_counter())
                group_loss = 0.0
                for m in range(len(step_groups[g])):
                    batch = next(batch_iter)
                    # Every random draw from here on (latent sample, noise, timesteps, dropout) follows
                    # from (seed, step, micro-batch, process): no RNG state to save for a resume.
                    torch.manual_seed(step_seed(train_cfg.seed, step + 1, m, accelerator.process_index))
                    latents, views = batch_latents(batch)
                    hidden, added = conditioning(batch["caption"], views)
                    sync = m == len(step_groups[g]) - 1
                    # Only the last micro-batch of a step all-reduces gradients across processes.
                    with contextlib.ExitStack() as stack:
                        if not sync:
                            for model in trained.values():
                                stack.enter_context(accelerator.no_sync(model))
                        loss = diffusion_loss(
                            unet,
                            noise_scheduler,
                            latents,
                            hidden,
                            added,
                            min_snr_gamma=train_cfg.min_snr_gamma,
                            noise_offset=train_cfg.noise_offset,
                        ).mean()
                        accelerator.backward(loss / len(step_groups[g]))
                    group_loss += loss.detach().float() / len(step_groups[g])
                if train_cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable_params, train_cfg.max_grad_norm)
                lr = current_lr(optimizer)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                # .item() is a device sync point: once per optimizer step, needed for the log anyway.
                last_loss = accelerator.gather(group_loss[None]).mean().item()
                if not math.isfinite(last_loss):
                    saved = checkpoints[-1] if checkpoints else "none"
                    raise TrainingDivergedError(
                        f"loss became {last_loss} at step {step} (epoch {epoch}); training stopped",
                        hint=f"lower training.learning_rate or use bf16; the last good checkpoint is {saved}",
                    )
                epoch_done = g == len(step_groups) - 1 or step >= plan.total_steps
                val_loss = None
                if (
                    epoch_done
                    and val_cache is not None
                    and (epoch % config.validation.every_n_epochs == 0 or step >= plan.total_steps)
                ):
                    val_loss = validation_loss()
                    emit(Validated(step, epoch, val_loss))
                if log is not None:
                    log.write(step, epoch, last_loss, lr, val_loss)
                if config.logging.tensorboard:
                    logged = {"loss/current": last_loss, "lr/unet": lr}
                    if val_loss is not None:
                        logged["loss/validation"] = val_loss
                    accelerator.log(logged, step=step)
                rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
                emit(Step(step, plan.total_steps, epoch, last_loss, lr, rate))
                save_cfg = config.save
                last = step >= plan.total_steps
                epoch_save = epoch_done and (
                    last
                    or epoch == plan.epochs
                    or (save_cfg.every_n_epochs and epoch % save_cfg.every_n_epochs == 0)
                )
                if save_cfg.every_n_steps and step % save_cfg.every_n_steps == 0 and not epoch_save:
                    # Mid-epoch: kohya's ss_epoch is the running (0-based) epoch here.
                    next_at = (epoch + 1, 0) if epoch_done else (epoch, g + 1)
                    save(f"{save_cfg.name}-step{step:08d}.safetensors", epoch - 1, *next_at)
                if epoch_save:
                    save(f"{save_cfg.name}-{epoch:06d}.safetensors", epoch, epoch + 1, 0)
                if last:
                    break
            epoch, group_start = epoch + 1, 0
    finally:
        torch.set_num_threads(threads_before)
        if log is not None:
            log.close()
        if config.logging.tensorboard:
            accelerator.end_training()

    result = RunResult(
        run_dir=run.root,
        checkpoints=tuple(prepare.checkpoint_dir(run) / name for name in checkpoints),
        steps=step,
        epochs=last_epoch,
        plan=plan,
        final_loss=last_loss,
        seconds=time.time() - wall_start,
    )
    emit(Finished(result))
    return result
