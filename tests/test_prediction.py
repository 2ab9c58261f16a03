"""Prediction type (ε, v, v on a zero-terminal-SNR schedule): what checkpoints say, what the
evaluator renders with, what the trainer writes."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tests.evaluate_helpers as h
from lorasel.checkpoints import read_checkpoint
from lorasel.checkpoints.metadata import stated_prediction
from lorasel.checkpoints.summary import summary_line
from lorasel.checkpoints.write import save_checkpoint
from lorasel.cli import app
from lorasel.errors import CheckpointError
from lorasel.evaluate.job import resolve_prediction
from lorasel.evaluate.render import Renderer, make_settings
from lorasel.models.base import scheduler_prediction, with_prediction
from lorasel.results import BASE
from tests.trainer_helpers import one_torch_thread  # noqa: F401 (autouse: tiny models, one thread)


@pytest.mark.parametrize(
    ("metadata", "keys", "expected"),
    [
        ({"modelspec.prediction_type": "v"}, (), "v"),  # kohya --v_parameterization
        ({"modelspec.prediction_type": "v", "ss_zero_terminal_snr": "True"}, (), "v-ztsnr"),
        ({"modelspec.prediction_type": "epsilon", "ss_zero_terminal_snr": "False"}, (), "epsilon"),
        ({"modelspec.prediction_type": "epsilon", "ss_zero_terminal_snr": "True"}, (), "epsilon"),
        ({"ss_v_parameterization": "true"}, (), "v"),  # other trainers
        ({"ss_v_parameterization": "False"}, (), "epsilon"),
        ({}, ("lora_unet_x.lora_down.weight", "v_pred", "ztsnr"), "v-ztsnr"),  # ComfyUI's markers
        ({"modelspec.prediction_type": "epsilon"}, ("v_pred",), "v"),  # v wins: nobody writes it by accident
        ({}, ("ztsnr",), None),  # zero terminal SNR says nothing without v
        ({"modelspec.prediction_type": "x" * 10_000, "ss_v_parameterization": "maybe"}, (), None),
        ({}, (), None),
    ],
)
def test_what_a_checkpoint_says_it_predicts(metadata, keys, expected):
    assert stated_prediction(metadata, keys) == expected


def test_a_lora_carrying_the_v_prediction_markers_is_read(tmp_path):
    """Some trainers save the empty ``v_pred`` / ``ztsnr`` tensors into LoRAs for v-prediction
    bases; lorasel rejected such files as "not LoRA keys". A marker with data still is."""
    tensors = h.lora_tensors(1, 1.0)
    path = save_checkpoint(
        tmp_path / "v.safetensors", {**tensors, "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}, {}
    )
    checkpoint = read_checkpoint(path)
    assert checkpoint.prediction == "v-ztsnr" and len(checkpoint.modules) == len(h.UNET_TARGETS)
    assert "trained for v-prediction on a zero-terminal-SNR schedule" in summary_line(checkpoint)
    save_checkpoint(tmp_path / "bad.safetensors", {**tensors, "v_pred": torch.ones(3)}, {})
    with pytest.raises(CheckpointError, match=re.escape("not LoRA keys lorasel knows, e.g. 'v_pred'")):
        read_checkpoint(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"])
def test_a_scheduler_told_another_prediction_is_diffusers_own(name):
    """Against schedulers built by diffusers with those options: the same noise schedule
    (rescaled to a zero terminal SNR for v-ztsnr) and the same timesteps."""
    import diffusers

    cls = getattr(diffusers, name)
    sd = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    base = cls(**sd)
    for prediction, options in [
        ("v", {"prediction_type": "v_prediction"}),
        ("v-ztsnr", {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}),
    ]:  # fmt: skip
        got, want = with_prediction(base, prediction), cls(**sd, **options)
        assert type(got) is cls and scheduler_prediction(got) == prediction
        torch.testing.assert_close(got.alphas_cumprod, want.alphas_cumprod)
        got.set_timesteps(8)
        want.set_timesteps(8)
        torch.testing.assert_close(got.timesteps, want.timesteps)
        back = with_prediction(got, "epsilon")
        assert scheduler_prediction(back) == "epsilon"
        torch.testing.assert_close(back.alphas_cumprod, base.alphas_cumprod)
    assert float(with_prediction(base, "v-ztsnr").alphas_cumprod[-1]) < 1e-6
    assert with_prediction(base, "epsilon") is base


def test_pndm_gives_way_to_ddim_for_a_zero_terminal_snr():
    from diffusers import DDIMScheduler, PNDMScheduler

    got = with_prediction(PNDMScheduler(), "v-ztsnr")
    assert type(got) is DDIMScheduler and scheduler_prediction(got) == "v-ztsnr"
    assert type(with_prediction(PNDMScheduler(), "v")) is PNDMScheduler


def _pipe(prediction: str):
    config = {"prediction_type": "epsilon" if prediction == "epsilon" else "v_prediction"}
    config["rescale_betas_zero_snr"] = prediction == "v-ztsnr"
    return SimpleNamespace(scheduler=SimpleNamespace(config=config))


def _infos(*values):
    return [SimpleNamespace(prediction=v) for v in values]


@pytest.mark.parametrize(
    ("given", "stated", "base", "expected", "warned"),
    [
        (None, [None, None], "epsilon", ("epsilon", "base"), ""),
        (None, ["epsilon"], "epsilon", ("epsilon", "base"), ""),
        (None, ["v", "v"], "epsilon", ("v", "metadata"), "--prediction epsilon renders as the base says"),
        (None, ["v-ztsnr", "v"], "v", ("v-ztsnr", "metadata"), "rendering with v-prediction on a zero"),
        (None, ["v"], "v-ztsnr", ("v-ztsnr", "base"), ""),  # the base knows its schedule
        (None, ["epsilon"], "v", ("v", "base"), "rendering as the base predicts"),
        (None, ["v", "epsilon", "epsilon"], "epsilon", ("epsilon", "base"), "different prediction types"),
        (None, ["v", "epsilon"], "epsilon", ("v", "metadata"), "different prediction types"),  # a tie: v
        ("epsilon", ["v"], "epsilon", ("epsilon", "option"), ""),
        ("v-ztsnr", [], "epsilon", ("v-ztsnr", "option"), ""),
    ],
)
def test_the_prediction_comes_from_the_option_else_the_checkpoints_v_else_the_base(
    given, stated, base, expected, warned
):
    warnings = []
    assert resolve_prediction(given, _infos(*stated), _pipe(base), warnings.append) == expected
    assert (warned in " ".join(warnings)) if warned else not warnings


def test_the_renderer_renders_with_the_settings_scheduler_and_gives_the_base_its_own_back():
    """A pipeline loaded as the base (the main process's, or a render worker's own) renders with
    the scheduler the settings name, and gets its own back at close."""
    pipe = h.tiny_pipeline()
    own = pipe.scheduler
    settings = make_settings(
        pipe, base="tiny", steps=2, guidance=5.0, size=(16, 16), negative="", prediction="v"
    )
    assert (
        settings.key()
        != make_settings(pipe, base="tiny", steps=2, guidance=5.0, size=(16, 16), negative="").key()
    )
    assert pipe.scheduler is own  # planning leaves the base alone
    renderer = Renderer(pipe, settings, [])
    try:
        assert scheduler_prediction(pipe.scheduler) == "v" and type(pipe.scheduler) is type(own)
        # StableDiffusionPipeline set this DDIM's steps_offset to 1 after building it, which
        # diffusers' from_config alone would undo (the key is in its _use_default_values).
        assert pipe.scheduler.config.steps_offset == own.config.steps_offset == 1
    finally:
        renderer.close()
    assert pipe.scheduler is own


runner = CliRunner()
FAST = h.FAST_EVAL


@pytest.fixture
def run(tmp_path, monkeypatch):
    return h.one_checkpoint_run(
        tmp_path,
        monkeypatch,
        {"ss_epoch": "1", "modelspec.prediction_type": "v", "modelspec.trigger_phrase": "zkz star"},
    )


def _base_render(run, results) -> tuple[np.ndarray, dict]:
    """The first in-domain base render's pixels, and the diffusers call arguments that make it."""
    from PIL import Image

    row = results.renders[(results.renders.checkpoint == BASE) & (results.renders.kind == "in_domain")].iloc[
        0
    ]
    call = {"prompt": row.prompt, "num_inference_steps": 2, "guidance_scale": 5.0, "height": 16, "width": 16}
    image = Image.open(run / "lorasel" / row.image)
    return np.asarray(image, dtype=np.int16), {
        **call,
        "seed": int(row.seed),
        "text": image.text["parameters"],
    }


def _diffusers_render(scheduler, seed: int, **call) -> np.ndarray:
    """diffusers' own pipeline call on the tiny base with ``scheduler``: the reference."""
    pipe = h.tiny_pipeline()
    reference = pipe.__class__(**{**pipe.components, "scheduler": scheduler})
    image = reference(**call, generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
    return np.round(image * 255).astype(np.int16)


def test_eval_renders_v_checkpoints_with_v_prediction_like_diffusers(run):
    """A kohya LoRA trained with --v_parameterization, on a base that does not say it predicts v:
    rendered with v-prediction (a warning says so), as diffusers renders with a v-prediction
    scheduler; ``--cfg-rescale 0.7`` as diffusers' ``guidance_rescale=0.7``; ``--prediction
    epsilon`` renders as the base says, under other keys."""
    from diffusers import DDIMScheduler

    from lorasel.evaluate import load_results

    pipe = h.tiny_pipeline()
    own = pipe.scheduler
    v_scheduler = DDIMScheduler.from_config(own.config, prediction_type="v_prediction")
    args = ["eval", str(run), "--prompts", str(run.parent / "prompts.toml"), *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "v-prediction (metadata)" in result.stderr
    assert "the checkpoints say they were trained for v-prediction" in result.stderr
    results = load_results(run)
    assert (results.settings["prediction"], results.settings["cfg_rescale"]) == ("v", 0.0)
    assert pipe.scheduler is own  # the base is given its own scheduler back
    ours, call = _base_render(run, results)
    plain = _diffusers_render(v_scheduler, call.pop("seed"), **{k: v for k, v in call.items() if k != "text"})
    assert np.abs(ours - plain).max() <= 1 and "CFG rescale" not in call["text"]

    rescaled = runner.invoke(app, [*args, "--cfg-rescale", "0.7"])
    assert rescaled.exit_code == 0, rescaled.output
    assert "CFG rescale 0.7" in rescaled.stderr
    results = load_results(run)
    assert results.settings["cfg_rescale"] == 0.7
    ours, call = _base_render(run, results)
    assert "CFG scale: 5, CFG rescale: 0.7, Seed: " in call.pop("text")
    want = _diffusers_render(v_scheduler, call.pop("seed"), **call, guidance_rescale=0.7)
    assert np.abs(ours - want).max() <= 1 and np.abs(ours - plain).max() > 1

    again = runner.invoke(app, [*args, "--prediction", "epsilon"])
    assert again.exit_code == 0, again.output
    assert "0 of " in again.stderr and "v-prediction" not in again.stderr.split("\n", 1)[0]
    assert load_results(run).settings["prediction"] == "epsilon"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--prediction", "vpred"], "error: prediction must be one of epsilon, v, v-ztsnr, not 'vpred'"),
        (["--cfg-rescale", "1.5"], "error: cfg rescale must be a number from 0 to 1, not '1.5'"),
        (["--cfg-rescale", "nan"], "error: cfg rescale must be a number from 0 to 1, not 'nan'"),
    ],
)
def test_a_bad_prediction_or_cfg_rescale_is_one_line(run, option, message):
    result = runner.invoke(
        app, ["eval", str(run), "--prompts", str(run.parent / "prompts.toml"), *FAST, *option]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and "(hint: " in result.stderr
    assert not (run / "lorasel").exists() or not list((run / "lorasel").rglob("*.png"))


# ------------------------------------------------------------------ the trainer


@pytest.mark.parametrize("gamma", [0.0, 5.0])
def test_a_v_prediction_loss_targets_the_velocity(gamma):
    """Against the formulas: v = √ᾱ·ε − √(1−ᾱ)·x₀, and min-SNR-γ weights min(SNR, γ) / (SNR + 1)
    for v (SNR = ᾱ / (1 − ᾱ))."""
    from diffusers import DDPMScheduler

    from trainer.diffusion import diffusion_loss

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction")
    gen = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    pred = torch.randn(3, 4, 8, 8, generator=gen)
    timesteps = torch.tensor([10, 500, 990])
    unet = lambda *args, **kwargs: SimpleNamespace(sample=pred)  # noqa: E731
    got = diffusion_loss(
        unet, scheduler, latents, None, None, min_snr_gamma=gamma, timesteps=timesteps, noise=noise
    )
    a = scheduler.alphas_cumprod[timesteps].double().view(-1, 1, 1, 1)
    velocity = a.sqrt() * noise.double() - (1 - a).sqrt() * latents.double()
    want = ((pred.double() - velocity) ** 2).mean(dim=(1, 2, 3))
    if gamma:
        snr = (a / (1 - a)).view(-1)
        want = want * torch.clamp(snr, max=gamma) / (snr + 1)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_a_run_told_its_base_predicts_v_on_a_zero_terminal_snr_trains_so_and_says_so(tmp_path, monkeypatch):
    """model.prediction: the loss targets v on the rescaled schedule, and the checkpoints say
    so as kohya's do (modelspec.prediction_type "v", ss_zero_terminal_snr), which the evaluator reads."""
    from safetensors import safe_open

    import trainer.loop
    from tests.tiny_models import tiny_sd1_pipeline
    from tests.trainer_helpers import make_kohya_dataset, small_config
    from trainer import from_dict, train

    seen = []
    loss = trainer.loop.diffusion_loss

    def spy(unet, noise_scheduler, *args, **kwargs):
        seen.append(scheduler_prediction(noise_scheduler))
        return loss(unet, noise_scheduler, *args, **kwargs)

    monkeypatch.setattr(trainer.loop, "diffusion_loss", spy)
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 2})
    config = from_dict(small_config(data, model={"prediction": "v-ztsnr"}, training={"epochs": 1}))
    pipe = tiny_sd1_pipeline()
    own = pipe.scheduler
    result = train(config, output=tmp_path / "run", pipeline=pipe)
    assert seen and set(seen) == {"v-ztsnr"}
    assert pipe.scheduler is own  # the base is left as it was
    with safe_open(str(result.checkpoints[-1]), framework="pt") as handle:
        metadata = handle.metadata()
    assert (metadata["modelspec.prediction_type"], metadata["ss_zero_terminal_snr"]) == ("v", "True")
    assert read_checkpoint(result.checkpoints[-1]).prediction == "v-ztsnr"


def test_a_bad_model_prediction_is_one_error(tmp_path):
    from lorasel.errors import ConfigError
    from tests.trainer_helpers import make_kohya_dataset, small_config
    from trainer import from_dict

    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 2})
    with pytest.raises(ConfigError, match=re.escape("model.prediction must be one of epsilon, v, v-ztsnr")):
        from_dict(small_config(data, model={"prediction": "v_prediction"}))
