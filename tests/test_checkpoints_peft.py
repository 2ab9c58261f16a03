"""PEFT and diffusers-format files, made by peft and diffusers, against peft's own merge.

Reference: ``merge_and_unload()`` of the PEFT model that wrote the file: our merged
weights at strength 1 must equal PEFT's (alpha ≠ r, alpha_pattern, rsLoRA, DoRA, LoHa, LoKr).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file

from lorasel.checkpoints import apply, read_checkpoint, restore, save_checkpoint
from tests.lora_files import (
    one_torch_thread,  # noqa: F401 (autouse fixture)
    shared_pipeline,
)

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "conv1"]


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """PEFT starts with ΔW = 0; give every adapter tensor a seeded random value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "magnitude" in name:
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif any(tag in name for tag in ("lora_", "hada_", "lokr_")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _peft_case(config, seed: int):
    """(file tensors, adapter config dict, PEFT's merged UNet weights) for a UNet copy."""
    unet = copy.deepcopy(shared_pipeline("sd1").unet)
    model = get_peft_model(unet, config)
    _randomise(model, seed)
    tensors = get_peft_model_state_dict(model)
    merged = model.merge_and_unload()
    return tensors, config.to_dict(), {k: v.detach().clone() for k, v in merged.state_dict().items()}


def _merged_by_us(checkpoint) -> dict[str, torch.Tensor]:
    pipe = shared_pipeline("sd1")
    try:
        apply(pipe, checkpoint, 1.0)
        return {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    finally:
        restore(pipe, release=True)


def _assert_same_weights(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    base = shared_pipeline("sd1").unet.state_dict()
    changed = [k for k in ours if not torch.equal(ours[k], base[k])]
    assert changed  # the adapter does something
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-5, msg=key)


CONFIGS = {
    "lora-alpha-ne-r": lambda: LoraConfig(r=4, lora_alpha=10, target_modules=TARGETS),
    "alpha-pattern": lambda: LoraConfig(r=4, lora_alpha=2, target_modules=TARGETS, alpha_pattern={"to_k": 7}),
    "rslora": lambda: LoraConfig(r=4, lora_alpha=3, target_modules=TARGETS, use_rslora=True),
    "dora": lambda: LoraConfig(r=4, lora_alpha=6, target_modules=TARGETS, use_dora=True),
    "loha": lambda: LoHaConfig(r=4, alpha=6, target_modules=TARGETS),
    "lokr": lambda: LoKrConfig(r=4, alpha=6, target_modules=TARGETS),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_peft_file_with_adapter_config_beside_it(case, tmp_path):
    tensors, config, reference = _peft_case(CONFIGS[case](), seed=len(case))
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps(config, default=list))
    checkpoint = read_checkpoint(tmp_path / "adapter_model.safetensors")
    assert checkpoint.format == "peft"
    assert any(m.name.startswith("base_model.model.") for m in checkpoint.modules)
    if case == "lora-alpha-ne-r":
        assert {m.scale for m in checkpoint.modules} == {10 / 4}
    _assert_same_weights(_merged_by_us(checkpoint), reference)


def test_peft_file_without_config_means_alpha_equals_rank(tmp_path):
    tensors, _, _ = _peft_case(LoraConfig(r=4, lora_alpha=10, target_modules=TARGETS), seed=1)
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path / "adapter_model.safetensors")
    checkpoint = read_checkpoint(tmp_path / "adapter_model.safetensors")
    assert {(m.alpha, m.scale) for m in checkpoint.modules} == {(4.0, 1.0)}


def test_diffusers_file_with_lora_adapter_metadata(tmp_path):
    """``save_lora_weights`` writes ``unet.``/``text_encoder.`` keys and the configs as metadata."""
    from diffusers import StableDiffusionPipeline

    pipe = shared_pipeline("sd1")
    unet_config = LoraConfig(r=4, lora_alpha=9, target_modules=["to_q", "to_v", "ff.net.2"])
    te_config = LoraConfig(r=2, lora_alpha=5, target_modules=["q_proj", "fc1"])
    unet_model = get_peft_model(copy.deepcopy(pipe.unet), unet_config)
    te_model = get_peft_model(copy.deepcopy(pipe.text_encoder), te_config)
    _randomise(unet_model, 2)
    _randomise(te_model, 3)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path,
        unet_lora_layers={
            k.removeprefix("base_model.model."): v for k, v in get_peft_model_state_dict(unet_model).items()
        },
        text_encoder_lora_layers={
            k.removeprefix("base_model.model."): v for k, v in get_peft_model_state_dict(te_model).items()
        },
        unet_lora_adapter_metadata=unet_config.to_dict(),
        text_encoder_lora_adapter_metadata=te_config.to_dict(),
    )
    checkpoint = read_checkpoint(tmp_path / "pytorch_lora_weights.safetensors")
    assert checkpoint.format == "diffusers"
    assert checkpoint.touches_text_encoder
    scales = {m.component: m.scale for m in checkpoint.modules}
    assert scales == {"unet": 9 / 4, "text_encoder": 5 / 2}
    unet_ref = {k: v.detach().clone() for k, v in unet_model.merge_and_unload().state_dict().items()}
    te_ref = {k: v.detach().clone() for k, v in te_model.merge_and_unload().state_dict().items()}
    try:
        apply(pipe, checkpoint, 1.0)
        ours_unet = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
        ours_te = {k: v.detach().clone() for k, v in pipe.text_encoder.state_dict().items()}
    finally:
        restore(pipe, release=True)
    _assert_same_weights(ours_unet, unet_ref)
    for key in te_ref:
        torch.testing.assert_close(ours_te[key], te_ref[key], rtol=1e-5, atol=1e-5, msg=key)


def test_older_diffusers_spelling_lora_down_up(tmp_path):
    """``unet.<path>.lora.down.weight`` (diffusers' pre-PEFT format), mapped by diffusers' own key maps."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers

    tensors, _, reference = _peft_case(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_out.0"]), seed=4
    )
    old = convert_state_dict_to_diffusers(
        {k.removeprefix("base_model.model."): v for k, v in tensors.items()}
    )
    assert any(".lora.down.weight" in k for k in old)
    save_checkpoint(tmp_path / "old.safetensors", {f"unet.{k}": v for k, v in old.items()}, add_hashes=False)
    checkpoint = read_checkpoint(tmp_path / "old.safetensors")
    assert checkpoint.format == "diffusers"
    assert all(
        not m.name.endswith(".weight") and "lora" not in m.name.rsplit(".", 1)[-1] for m in checkpoint.modules
    )
    _assert_same_weights(_merged_by_us(checkpoint), reference)
