"""Single-file bases: the configs shipped for SD 1.5 and SDXL, and loading such a file offline."""

from __future__ import annotations

import json
import shutil
import socket
import warnings

import pytest
import torch
from safetensors.torch import save_file

from lorasel.errors import ModelLoadError
from lorasel.models import base as base_module
from lorasel.models import load_base
from lorasel.models.tokenizer import clip_tokenizer
from tests.ldm_files import sd1_to_ldm, sdxl_to_ldm
from tests.tiny_models import tiny_sd1_pipeline, tiny_sdxl_pipeline

CONFIGS = base_module.CONFIGS

# The original LDM configs' UNet and autoencoder parameters (CompVis' v1-inference.yaml and
# Stability's sd_xl_base.yaml), from which diffusers derives its own configs.
SD15_YAML = {
    "unet_config": {
        "params": {
            "in_channels": 4,
            "out_channels": 4,
            "model_channels": 320,
            "attention_resolutions": [4, 2, 1],
            "num_res_blocks": 2,
            "channel_mult": [1, 2, 4, 4],
            "num_heads": 8,
            "use_spatial_transformer": True,
            "transformer_depth": 1,
            "context_dim": 768,
        }
    },
    "scale_factor": 0.18215,
}
SDXL_YAML = {
    "network_config": {
        "params": {
            "adm_in_channels": 2816,
            "num_classes": "sequential",
            "in_channels": 4,
            "out_channels": 4,
            "model_channels": 320,
            "attention_resolutions": [4, 2],
            "num_res_blocks": 2,
            "channel_mult": [1, 2, 4],
            "num_head_channels": 64,
            "use_spatial_transformer": True,
            "use_linear_in_transformer": True,
            "transformer_depth": [1, 2, 10],
            "context_dim": 2048,
        }
    },
    "scale_factor": 0.13025,
}
AUTOENCODER = {
    "embed_dim": 4,
    "ddconfig": {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
    },
}


def _config(family: str, component: str) -> dict:
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((CONFIGS / family / component / name).read_text())


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_shipped_configs_build_the_published_architectures():
    """Parameter counts as published for SD 1.5 (UNet 859.5M, VAE 83.7M, CLIP ViT-L/14 text
    123.1M) and SDXL 1.0 base (UNet 2.567B, OpenCLIP ViT-bigG/14 text with projection 694.7M)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def build(family, component):
        folder = CONFIGS / family / component
        with init_empty_weights():
            if component == "unet":
                return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder))
            if component == "vae":
                return AutoencoderKL.from_config(AutoencoderKL.load_config(folder))
            cls = CLIPTextModelWithProjection if component == "text_encoder_2" else CLIPTextModel
            return cls(CLIPTextConfig.from_pretrained(folder))

    counts = {
        ("sd15", "unet"): 859_520_964,
        ("sd15", "vae"): 83_653_863,
        ("sd15", "text_encoder"): 123_060_480,
        ("sdxl", "unet"): 2_567_463_684,
        ("sdxl", "vae"): 83_653_863,
        ("sdxl", "text_encoder"): 123_060_480,
        ("sdxl", "text_encoder_2"): 694_659_840,
    }
    assert {key: _count(build(*key)) for key in counts} == counts


@pytest.mark.parametrize(("family", "yaml", "xl"), [("sd15", SD15_YAML, False), ("sdxl", SDXL_YAML, True)])
def test_shipped_unet_and_vae_configs_are_what_diffusers_derives_from_the_original(family, yaml, xl):
    """What a parameter count cannot see (heads, linear projections, the added embeddings,
    the latent scale), against diffusers' own derivation from the original LDM config."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        CHECKPOINT_KEY_NAMES,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    original = {"model": {"params": {**yaml, "first_stage_config": {"params": AUTOENCODER}}}}
    # The model type (and so the default image size) is told from the checkpoint's keys.
    keys = {CHECKPOINT_KEY_NAMES["xl_base"]: None} if xl else {}
    for cls, derive in (
        (UNet2DConditionModel, create_unet_diffusers_config_from_ldm),
        (AutoencoderKL, create_vae_diffusers_config_from_ldm),
    ):
        folder = CONFIGS / family / ("unet" if cls is UNet2DConditionModel else "vae")
        with init_empty_weights():
            shipped = cls.from_config(cls.load_config(folder)).config
            expected = cls.from_config(derive(original, keys)).config
        public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
        assert public(shipped) == public(expected), folder.name


def test_shipped_schedulers_are_the_training_schedule():
    """SD 1.5 and SDXL train on the same scaled-linear schedule, 1000 steps, epsilon."""
    for family, cls in (("sd15", "PNDMScheduler"), ("sdxl", "EulerDiscreteScheduler")):
        config = _config(family, "scheduler")
        assert config["_class_name"] == cls
        assert (config["beta_start"], config["beta_end"], config["beta_schedule"]) == (
            0.00085,
            0.012,
            "scaled_linear",
        )
        assert (config["num_train_timesteps"], config["prediction_type"], config["steps_offset"]) == (
            1000,
            "epsilon",
            1,
        )


def test_tokenizers_pad_as_sd_and_sdxl_do():
    """CLIP's ids for a known prompt; SDXL's second tokenizer pads with ``!`` (id 0)."""
    ids = clip_tokenizer()("a photo of a cat", padding="max_length").input_ids
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and ids[7:] == [49407] * 70
    ids_2 = clip_tokenizer(pad_token="!")("a photo of a cat", padding="max_length").input_ids
    assert ids_2[:7] == ids[:7] and ids_2[7:] == [0] * 70


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network use in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _tiny_sdxl():
    """The tiny SDXL pipeline with a second text encoder as SDXL's differs from its first: wider
    (diffusers tells the two apart by width), deep enough (10 layers) for the file to be told
    apart as SDXL base, and padded with ``!``."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    pipe = tiny_sdxl_pipeline()
    torch.manual_seed(1)
    config = {**pipe.text_encoder_2.config.to_dict(), "hidden_size": 48, "num_hidden_layers": 10}
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config))
    width = pipe.text_encoder.config.hidden_size + 48
    unet = UNet2DConditionModel.from_config({**pipe.unet.config, "cross_attention_dim": width})
    tokenizer_2 = clip_tokenizer(pad_token="!")
    pipe.register_modules(text_encoder_2=text_encoder_2, unet=unet, tokenizer_2=tokenizer_2)
    return pipe


@pytest.mark.parametrize("family", ["v1", "xl_base"])
def test_a_single_file_checkpoint_loads_offline_with_the_shipped_configs(
    family, tmp_path, monkeypatch, no_network
):
    """An original-layout file, as kohya trains on, loads with no hub: the configs of its model
    type from the package (here the tiny model's, standing in for SD 1.5's and SDXL's) and the
    tokenizers built from open_clip's vocabulary. Every weight arrives, and it renders as the
    source does."""
    source, to_ldm = (tiny_sd1_pipeline(), sd1_to_ldm) if family == "v1" else (_tiny_sdxl(), sdxl_to_ldm)
    configs = tmp_path / "configs"
    source.save_pretrained(configs)
    for weights in configs.rglob("*.safetensors"):
        weights.unlink()
    for tokenizer in configs.glob("tokenizer*"):
        shutil.rmtree(tokenizer)  # the tokenizers come from lorasel, not the folder
    monkeypatch.setitem(base_module.SHIPPED_CONFIGS, family, configs)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in to_ldm(source).items()}, path)

    pipe = load_base(str(path), device="cpu", dtype=torch.float32)

    assert type(pipe) is type(source)
    components = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "xl_base" else [])
    for name in components:
        got, want = getattr(pipe, name).state_dict(), getattr(source, name).state_dict()
        assert set(got) == set(want), name
        assert all(torch.equal(got[k], want[k]) for k in want), name
    for name in ("tokenizer", "tokenizer_2") if family == "xl_base" else ("tokenizer",):
        padded = {"padding": "max_length", "max_length": 77}
        assert (
            getattr(pipe, name)("a cat", **padded).input_ids
            == getattr(source, name)("a cat", **padded).input_ids
        )
    assert type(pipe.scheduler) is type(source.scheduler)
    render = {"prompt": "a cat", "num_inference_steps": 2, "height": 32, "width": 32, "output_type": "np"}
    got = pipe(**render, generator=torch.Generator().manual_seed(0)).images
    want = source(**render, generator=torch.Generator().manual_seed(0)).images
    assert got.shape == want.shape and float(abs(got - want).max()) < 1e-5


def test_a_half_precision_file_loads_without_library_noise(tmp_path, monkeypatch, capfd):
    """diffusers warns of "modules that should be kept in float32: []" on every cast of a half
    precision file (what most checkpoints are); lorasel's load keeps its loggers to errors,
    and puts their verbosity back."""
    from diffusers.utils import logging as diffusers_logging

    source = tiny_sd1_pipeline()
    configs = tmp_path / "configs"
    source.save_pretrained(configs)
    monkeypatch.setitem(base_module.SHIPPED_CONFIGS, "v1", configs)
    save_file(
        {k: v.contiguous().half() for k, v in sd1_to_ldm(source).items()}, tmp_path / "model.safetensors"
    )
    verbosity = diffusers_logging.get_verbosity()
    capfd.readouterr()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = load_base(str(tmp_path / "model.safetensors"), device="cpu", dtype=torch.float32)

    assert pipe.unet.dtype == torch.float32
    assert "should be kept in float32" not in capfd.readouterr().err
    assert diffusers_logging.get_verbosity() == verbosity
    assert [str(w.message) for w in caught] == []


def test_a_diffusers_folder_loads_without_deprecation_warnings(tiny_base_folder):
    """diffusers 0.42 deprecates ``torch_dtype`` with a FutureWarning printed on every load of a
    real base: lorasel passes ``dtype``, and a load warns of nothing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = load_base(tiny_base_folder, device="cpu", dtype=torch.float32)

    assert pipe.unet.dtype == torch.float32
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize(
    ("family", "markers", "scheduler", "expected"),
    [
        ("xl_base", ["v_pred", "ztsnr"], "EulerDiscreteScheduler", ("v_prediction", True, "trailing")),
        ("xl_base", ["v_pred"], "EulerDiscreteScheduler", ("v_prediction", False, "leading")),
        ("v1", ["v_pred", "ztsnr"], "DDIMScheduler", ("v_prediction", True, "trailing")),
        ("v1", ["ztsnr"], "PNDMScheduler", ("epsilon", False, "leading")),
        # kohya's fine-tunes with --v_parameterization say so in their metadata only
        ("v1", {"modelspec.prediction_type": "v"}, "PNDMScheduler", ("v_prediction", False, "leading")),
    ],
    ids=["sdxl-vpred-ztsnr", "sdxl-vpred", "sd1-vpred-ztsnr", "ztsnr-alone", "sd1-modelspec-v"],
)
def test_a_v_prediction_file_gets_a_v_prediction_scheduler(
    family, markers, scheduler, expected, tmp_path, monkeypatch, no_network
):
    """The empty ``v_pred`` / ``ztsnr`` tensors that v-prediction checkpoints carry (ComfyUI's
    convention), or Stability's ``modelspec.prediction_type`` (a dict of metadata here), set
    the scheduler the pipeline renders and trains with; diffusers reads neither."""
    from diffusers import EulerDiscreteScheduler, PNDMScheduler

    source, to_ldm = (tiny_sd1_pipeline(), sd1_to_ldm) if family == "v1" else (_tiny_sdxl(), sdxl_to_ldm)
    # The schedulers the shipped configs give: PNDM for SD 1.5, Euler for SDXL.
    shipped = PNDMScheduler if family == "v1" else EulerDiscreteScheduler
    source.scheduler = shipped.from_config(source.scheduler.config, timestep_spacing="leading")
    configs = tmp_path / "configs"
    source.save_pretrained(configs)
    monkeypatch.setitem(base_module.SHIPPED_CONFIGS, family, configs)
    tensors = {k: v.contiguous() for k, v in to_ldm(source).items()}
    metadata = markers if isinstance(markers, dict) else None
    markers = [] if metadata else markers
    save_file(
        {**tensors, **{marker: torch.tensor([]) for marker in markers}},
        tmp_path / "model.safetensors",
        metadata=metadata,
    )

    pipe = load_base(str(tmp_path / "model.safetensors"), device="cpu", dtype=torch.float32)

    config = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == scheduler
    rescaled = config.get("rescale_betas_zero_snr", False)
    assert (config.prediction_type, rescaled, config.get("timestep_spacing", "leading")) == expected
    if rescaled:  # a zero terminal SNR: the last step is (all but) pure noise
        assert float(pipe.scheduler.alphas_cumprod[-1]) < 1e-6
    assert config.beta_start == 0.00085 and config.beta_schedule == "scaled_linear"


def test_a_single_file_missing_weights_is_one_error(tmp_path, monkeypatch, no_network):
    """A file short of some tensors (here a layer of the second text encoder): diffusers
    would leave them unloaded, and the pipeline would fail at its first move or render."""
    source = _tiny_sdxl()
    configs = tmp_path / "configs"
    source.save_pretrained(configs)
    monkeypatch.setitem(base_module.SHIPPED_CONFIGS, "xl_base", configs)
    tensors = {k: v.contiguous() for k, v in sdxl_to_ldm(source).items() if "resblocks.5." not in k}
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        ModelLoadError, match=r"lacks 16 weights of its text_encoder_2 \(e\.g\. .*layers\.5\."
    ):
        load_base(str(tmp_path / "model.safetensors"), device="cpu", dtype=torch.float32)


@pytest.mark.parametrize(
    ("key", "shape", "config", "tokenizers"),
    [
        ("model.diffusion_model.output_blocks.11.0.skip_connection.weight", (2,), "sd15", ["tokenizer"]),
        (
            "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
            (2,),
            "sdxl",
            ["tokenizer", "tokenizer_2"],
        ),
        (
            "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
            (2, 1024),
            None,
            [],
        ),
    ],
    ids=["sd1", "sdxl", "sd2"],
)
def test_which_single_files_get_the_shipped_configs(tmp_path, monkeypatch, key, shape, config, tokenizers):
    """SD 1.x and SDXL base files get the shipped configs and offline tokenizers (SDXL's second
    pads with ``!``); other types (here SD 2) are left to diffusers, which asks the hub."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    calls = []

    def capture(cls, path, **kwargs):
        calls.append((cls.__name__, kwargs))
        raise RuntimeError("stop here")

    for cls in (StableDiffusionPipeline, StableDiffusionXLPipeline):
        monkeypatch.setattr(cls, "from_single_file", classmethod(capture))
    path = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(shape)}, path)
    with pytest.raises(ModelLoadError, match="stop here"):
        load_base(str(path), device="cpu")
    ((pipeline, kwargs),) = calls
    assert pipeline == ("StableDiffusionXLPipeline" if config == "sdxl" else "StableDiffusionPipeline")
    if config is None:
        assert "config" not in kwargs and "tokenizer" not in kwargs
        return
    assert kwargs["config"] == str(CONFIGS / config) and kwargs["local_files_only"] is True
    assert sorted(k for k in kwargs if k.startswith("tokenizer")) == tokenizers
    if config == "sdxl":
        assert kwargs["tokenizer_2"].pad_token == "!" and kwargs["tokenizer"].pad_token == "<|endoftext|>"


def test_a_lora_given_as_the_base_is_said_plainly(tmp_path):
    from tests.lora_files import kohya_lora

    path = tmp_path / "my_lora-000004.safetensors"
    save_file(kohya_lora(tiny_sd1_pipeline()), path)
    with pytest.raises(ModelLoadError, match=r"my_lora-000004\.safetensors is a LoRA, not a base model"):
        load_base(str(path), device="cpu")


def test_a_damaged_single_file_is_one_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    with pytest.raises(ModelLoadError, match="could not load base model") as info:
        load_base(str(path), device="cpu")
    assert "\n" not in str(info.value)


def _full_size(family: str):
    """A pipeline of the shipped configs at full size, random half-precision weights (made on
    the meta device first: SDXL in float32 would take 14 GB)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIGS / family
    with init_empty_weights():
        parts = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        }
        if family == "sdxl":
            config = CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
            parts["text_encoder_2"] = CLIPTextModelWithProjection(config)
    generator = torch.Generator().manual_seed(0)
    for name, model in parts.items():
        model = parts[name] = model.to(torch.float16).to_empty(device="cpu")
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_(std=0.02, generator=generator)
    return type("Pipeline", (), parts)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "gigabytes"), [("sd15", 6), ("sdxl", 18)])
def test_a_full_size_single_file_loads_offline(family, gigabytes, tmp_path, no_network):
    """The shipped configs against a file of the real size and layout (random weights): every
    tensor of SD 1.5 (1.07B parameters) or SDXL (3.47B) arrives where it belongs, with no hub."""
    import psutil

    if psutil.virtual_memory().available < gigabytes * 2**30:
        pytest.skip(f"needs about {gigabytes} GB of free memory")
    source = _full_size(family)
    path = tmp_path / "model.safetensors"
    tensors = (sd1_to_ldm if family == "sd15" else sdxl_to_ldm)(source)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    pipe = load_base(str(path), device="cpu", dtype=torch.float16)
    assert type(pipe).__name__ == (
        "StableDiffusionPipeline" if family == "sd15" else "StableDiffusionXLPipeline"
    )
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if not hasattr(source, name):
            continue
        got, want = getattr(pipe, name).state_dict(), getattr(source, name).state_dict()
        assert set(got) == set(want), name
        assert all(torch.equal(got[k], want[k]) for k in want), name


def test_libraries_quiet_keeps_each_library_at_errors_then_puts_it_back_even_on_an_error():
    import importlib
    import logging

    from lorasel.models.logs import libraries_quiet

    names = ("diffusers", "transformers", "huggingface_hub")
    loggers = [importlib.import_module(f"{name}.utils.logging") for name in names]
    before = [log.get_verbosity() for log in loggers]
    loggers[2].set_verbosity(logging.INFO)
    try:
        with pytest.raises(RuntimeError), libraries_quiet(*names):
            assert [log.get_verbosity() for log in loggers] == [logging.ERROR] * 3
            raise RuntimeError("a load failed")
        assert [log.get_verbosity() for log in loggers] == [*before[:2], logging.INFO]
    finally:
        loggers[2].set_verbosity(before[2])
