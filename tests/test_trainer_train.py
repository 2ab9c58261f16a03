"""Short training runs on the tiny SD1 / SDXL pipelines: the run directory, the checkpoints and
their metadata, diffusers loading the files, determinism, NaN handling."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
import tomllib
import torch
from safetensors import safe_open

from lorasel.io import is_temporary
from tests.tiny_models import tiny_sd1_pipeline, tiny_sdxl_pipeline
from tests.trainer_helpers import make_kohya_dataset, one_torch_thread, small_config  # noqa: F401 (autouse fixture)
from trainer import events, from_dict, train
from trainer.loop import TrainingDivergedError


def _read(path):
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()  # noqa: SIM118


@pytest.fixture(scope="module")
def locon_run(tmp_path_factory):
    """LoCon on UNet + text encoder, 2 epochs, a held-out image for the validation loss."""
    root = tmp_path_factory.mktemp("locon")
    data = make_kohya_dataset(root / "data", {"2_zkz star": 5})
    config = from_dict(
        small_config(
            data,
            network={"algo": "locon", "conv_rank": 2, "conv_alpha": 1.0, "train_text_encoder": True},
            validation={"split": 0.2, "timesteps": [200, 700]},
        )
    )
    seen: list = []
    pipe = tiny_sd1_pipeline()
    result = train(config, output=root / "run", pipeline=pipe, progress=seen.append)
    return result, pipe, seen


def test_run_directory_layout(locon_run):
    result, _, seen = locon_run
    run = result.run_dir
    # 4 training images × 2 repeats ÷ batch 2 = 4 steps per epoch, 2 epochs.
    assert result.steps == 8 and result.epochs == 2
    assert [p.name for p in result.checkpoints] == ["zkz-000001.safetensors", "zkz-000002.safetensors"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "zkz-000001.safetensors",
        "zkz-000002.safetensors",
    ]
    assert not [p for p in run.rglob("*") if is_temporary(p)]
    resolved = tomllib.loads((run / "run.toml").read_text())
    assert resolved["model"]["base"] == "toy"
    assert resolved["dataset"]["path"].startswith("/") and resolved["dataset"]["path"].endswith("data")
    steps_txt = (run / "logs" / "steps.txt").read_text()
    assert "2_zkz star: 4 images × 2 repeats = 8 samples" in steps_txt
    assert "8 samples ÷ batch 2 = 4 batches per epoch" in steps_txt
    assert "4 steps × 2 epochs = 8 steps" in steps_txt
    kinds = [type(e).__name__ for e in seen]
    assert kinds[-1] == "Finished" and kinds.count("Step") == 8 and kinds.count("CheckpointSaved") == 2
    started = next(e for e in seen if isinstance(e, events.Started))
    assert started.plan.total_steps == 8 and started.first_step == 0


def test_loss_csv(locon_run):
    result, _, seen = locon_run
    with open(result.run_dir / "logs" / "loss.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "epoch", "loss", "lr", "val_loss"]
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert [int(r["epoch"]) for r in rows] == [1] * 4 + [2] * 4
    steps = [e for e in seen if isinstance(e, events.Step)]
    assert [float(r["loss"]) for r in rows] == pytest.approx([e.loss for e in steps], rel=1e-5)
    # Validation loss at the end of each epoch only.
    assert [bool(r["val_loss"]) for r in rows] == [False, False, False, True] * 2
    validated = [e.val_loss for e in seen if isinstance(e, events.Validated)]
    assert [float(rows[3]["val_loss"]), float(rows[7]["val_loss"])] == pytest.approx(validated, rel=1e-5)


def test_checkpoint_metadata(locon_run):
    result, _, _ = locon_run
    _, meta = _read(result.checkpoints[0])
    _, last = _read(result.checkpoints[1])
    assert (meta["ss_epoch"], meta["ss_steps"]) == ("1", "4")
    assert (last["ss_epoch"], last["ss_steps"]) == ("2", "8")
    assert meta["ss_output_name"] == "zkz" and meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "2.0")
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0"}
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_num_train_images"] == "8" and meta["ss_num_epochs"] == "2" and meta["ss_seed"] == "7"
    assert meta["ss_resolution"] == "(32, 32)" and meta["ss_optimizer"] == "adamw"
    assert float(meta["ss_learning_rate"]) == 1e-3 and float(meta["ss_text_encoder_lr"]) == 1e-3
    tags = json.loads(meta["ss_tag_frequency"])
    assert tags["2_zkz star"]["zkz star"] == 4 and tags["2_zkz star"]["red"] == 4
    assert meta["ss_session_id"] == last["ss_session_id"]
    assert float(meta["ss_training_started_at"]) <= float(meta["ss_training_finished_at"])
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.trigger_phrase"] == "zkz" and meta["modelspec.title"] == "zkz"
    assert meta["modelspec.resolution"] == "32x32" and meta["modelspec.sai_model_spec"] == "1.0.1"
    assert len(meta["sshs_model_hash"]) == 64
    # What the evaluator reads back (lorasel.checkpoints): epoch, step, trigger and class word.
    from lorasel.checkpoints import read_checkpoint

    read = read_checkpoint(result.checkpoints[0])
    assert (read.format, read.base_family, read.epoch, read.step) == ("kohya", "sd1", 1, 4)
    assert (read.trigger, read.class_word) == ("zkz", "star")
    algos = {m.name: m.algo for m in read.modules}
    assert algos["lora_unet_down_blocks_0_resnets_0_conv1"] == "locon"
    assert algos["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"] == "lora"


def _render(pipe):
    gen = torch.Generator().manual_seed(0)
    return pipe(
        "zkz star, red", num_inference_steps=2, height=32, width=32, generator=gen, output_type="np"
    ).images


def test_file_loads_in_diffusers_and_matches_in_memory_model(locon_run, caplog):
    result, trained_pipe, _ = locon_run
    tensors, _ = _read(result.checkpoints[-1])
    assert any(".resnets." in k or "_resnets_" in k for k in tensors)  # LoCon convs are in the file
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in tensors)
    for model in (trained_pipe.unet, trained_pipe.text_encoder):
        model.eval()
    expected = _render(trained_pipe)

    fresh = tiny_sd1_pipeline()
    base = _render(fresh)
    with caplog.at_level(logging.WARNING):
        fresh.load_lora_weights(str(result.checkpoints[-1]))
    assert not [r for r in caplog.records if "key" in r.getMessage().lower()], caplog.text
    n_lora = sum(1 for n, _ in fresh.unet.named_modules() if n.endswith("lora_A"))
    n_lora += sum(1 for n, _ in fresh.text_encoder.named_modules() if n.endswith("lora_A"))
    assert n_lora == sum(1 for k in tensors if k.endswith(".lora_down.weight"))
    got = _render(fresh)
    assert np.abs(expected - base).max() > 1e-3  # the LoRA changes the image
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_same_seed_same_run_and_latent_cache_changes_nothing(tmp_path):
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 2})
    files, losses = {}, {}
    for name, cache in (("a", True), ("b", True), ("c", False)):
        config = from_dict(
            small_config(
                data,
                training={"epochs": 1, "cache_latents": cache, "min_snr_gamma": 5.0, "noise_offset": 0.05},
            )
        )
        seen: list = []
        result = train(config, output=tmp_path / name, pipeline=tiny_sd1_pipeline(), progress=seen.append)
        files[name] = _read(result.checkpoints[-1])[0]
        losses[name] = [e.loss for e in seen if isinstance(e, events.Step)]
    assert len(losses["a"]) == 2
    for key, value in files["a"].items():
        assert torch.equal(value, files["b"][key]), key  # bit-exact on CPU
    # Without the cache the VAE runs every step (batched, so rounding differs slightly) but the
    # noise, timesteps and latent samples are the same draws: the losses agree.
    assert losses["c"] == pytest.approx(losses["a"], rel=1e-4)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 2})
    pipe = tiny_sd1_pipeline()
    config = from_dict(small_config(data, training={"epochs": 3}))

    def poison(event):
        # After the first checkpoint, corrupt an adapter weight as a diverging run would.
        if isinstance(event, events.CheckpointSaved) and event.epoch == 1:
            with torch.no_grad():
                next(p for n, p in pipe.unet.named_parameters() if "lora_B" in n).fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step 3 \(epoch 2\)") as err:
        train(config, output=tmp_path / "run", pipeline=pipe, progress=poison)
    assert "zkz-000001.safetensors" in err.value.hint
    files = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert files == ["zkz-000001.safetensors"]
    tensors, meta = _read(tmp_path / "run" / "checkpoints" / files[0])
    assert meta["ss_steps"] == "2" and all(torch.isfinite(t).all() for t in tensors.values())


def test_sdxl_buckets_text_encoders_and_step_saves(tmp_path):
    data = make_kohya_dataset(tmp_path / "data", {"1_zkz star": 2}, size=(48, 32))
    make_kohya_dataset(tmp_path / "data", {"1_zkz tall": 1}, size=(32, 48), seed=1)
    config = from_dict(
        small_config(
            data,
            dataset={
                "buckets": True,
                "min_bucket_resolution": 16,
                "max_bucket_resolution": 64,
                "bucket_step": 16,
            },
            network={"train_text_encoder": True},
            training={"epochs": 2, "batch_size": 2, "gradient_accumulation_steps": 2},
            save={"every_n_steps": 1, "every_n_epochs": 2},
        )
    )
    result = train(config, output=tmp_path / "run", pipeline=tiny_sdxl_pipeline())
    # Buckets (48, 32) with 2 images and (32, 48) with 1: ⌈2/2⌉ + ⌈1/2⌉ = 2 batches → 1 step per epoch.
    assert result.plan.buckets == 2 and result.plan.batches_per_epoch == 2 and result.steps == 2
    names = [p.name for p in result.checkpoints]
    assert names == ["zkz-step00000001.safetensors", "zkz-000002.safetensors"]
    tensors, meta = _read(result.checkpoints[-1])
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    step_meta = _read(result.checkpoints[0])[1]
    assert (step_meta["ss_epoch"], step_meta["ss_steps"]) == ("0", "1")  # kohya: running 0-based epoch
    prefixes = {k.split("_text_model")[0] for k in tensors if "_text_model_" in k}
    assert prefixes == {"lora_te1", "lora_te2"}
    # diffusers loads the SDXL file (UNet keys in diffusers names, both text encoders).
    fresh = tiny_sdxl_pipeline()
    fresh.load_lora_weights(str(result.checkpoints[-1]))
    assert any(n.endswith("lora_A") for n, _ in fresh.text_encoder_2.named_modules())


def test_training_options_run(tmp_path):
    """bf16, gradient checkpointing, Prodigy, warm-up, min-SNR, noise offset, DoRA and TensorBoard together."""
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 2})
    config = from_dict(
        small_config(
            data,
            network={"algo": "dora"},
            training={
                "epochs": 1,
                "mixed_precision": "bf16",
                "gradient_checkpointing": True,
                "optimizer": "prodigy",
                "learning_rate": 1.0,
                "lr_scheduler": "cosine",
                "lr_warmup_steps": 1,
                "min_snr_gamma": 5.0,
                "noise_offset": 0.05,
            },
            save={"precision": "bf16"},
            logging={"tensorboard": True},
        )
    )
    seen: list = []
    result = train(config, output=tmp_path / "run", pipeline=tiny_sd1_pipeline(), progress=seen.append)
    steps = [e for e in seen if isinstance(e, events.Step)]
    assert len(steps) == 2 and all(np.isfinite(e.loss) for e in steps)
    assert steps[0].lr == 0.0 and steps[1].lr > 0  # warm-up starts at 0
    tensors, meta = _read(result.checkpoints[-1])
    assert meta["ss_optimizer"] == "prodigy" and meta["ss_mixed_precision"] == "bf16"
    assert all(v.dtype == torch.bfloat16 for k, v in tensors.items() if not k.endswith(".alpha"))
    assert any(k.endswith(".dora_scale") for k in tensors)
    assert list((result.run_dir / "logs").rglob("events.out.tfevents.*"))


def test_validation_loss_is_kohyas_fixed_noise_mse_recomputed_with_diffusers(tmp_path):
    """The logged validation loss against a plain recomputation: each held-out image's VAE
    posterior mean, diffusers' own prompt embedding, the fixed noise of seed · 100003 + i,
    ``DDPMScheduler.add_noise`` and the UNet at each fixed timestep one at a time, MSE to the noise."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from trainer import prepare
    from trainer.diffusion import encode_latent_dists

    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 4})
    held_out = make_kohya_dataset(tmp_path / "held", {"1_zkz star": 2}, seed=5)
    config = from_dict(
        small_config(
            data,
            training={"epochs": 1},
            validation={"path": str(held_out), "timesteps": [100, 600, 900], "seed": 3},
        )
    )
    seen: list = []
    pipe = tiny_sd1_pipeline()
    train(config, output=tmp_path / "run", pipeline=pipe, progress=seen.append)
    logged = [e.val_loss for e in seen if isinstance(e, events.Validated)][-1]

    # The pipeline still holds the trained adapters, as at that (last) validation.
    datasets = prepare.load_datasets(config)
    dists = encode_latent_dists(
        pipe.vae, datasets.validation, datasets.validation_sizes, "cpu", torch.float32
    )
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.unet.eval()
    losses = []
    with torch.no_grad():
        for i, (mean, _, _) in enumerate(dists):
            latents = mean * pipe.vae.config.scaling_factor
            caption = datasets.validation.images[i].caption
            hidden = pipe.encode_prompt(caption, "cpu", 1, False)[0]
            noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3 * 100_003 + i))
            for t in (100, 600, 900):
                step = torch.tensor([t])
                pred = pipe.unet(scheduler.add_noise(latents, noise, step), step, hidden).sample
                losses.append(F.mse_loss(pred, noise).item())
    assert len(losses) == 6
    assert logged == pytest.approx(float(np.mean(losses)), rel=1e-5)


def test_a_copied_or_moved_run_uses_its_own_dataset(tmp_path):
    """A dataset inside the run folder (a toy concept's, the demo's) is written to run.toml relative
    to it: a copy evaluates with its own images, and a run whose first place is gone resumes."""
    import shutil

    from lorasel.evaluate.concept import dataset_path
    from lorasel.rundir import RunDir
    from trainer import load_config

    run = tmp_path / "run"
    data = make_kohya_dataset(run / "dataset", {"2_zkz star": 4})
    held_out = make_kohya_dataset(tmp_path / "held-out", {"1_zkz star": 2})  # outside: kept absolute
    config = from_dict(small_config(data, training={"epochs": 1}, validation={"path": str(held_out)}))
    train(config, output=run, pipeline=tiny_sd1_pipeline())
    saved = tomllib.loads((run / "run.toml").read_text())
    assert saved["dataset"]["path"] == "dataset"
    assert saved["validation"]["path"] == str(held_out.resolve())

    copy = shutil.copytree(run, tmp_path / "downloaded" / "run")
    assert dataset_path(RunDir.at(copy)) == copy.resolve() / "dataset"  # not the original's
    shutil.rmtree(run)  # moved, not copied
    again = load_config(copy / "run.toml", ["training.epochs=2"])
    assert again.dataset.path == str(copy.resolve() / "dataset")
    result = train(again, output=copy, pipeline=tiny_sd1_pipeline(), resume=True)
    assert [p.name for p in result.checkpoints] == ["zkz-000001.safetensors", "zkz-000002.safetensors"]
