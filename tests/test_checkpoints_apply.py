"""apply/restore on tiny SD1 and SDXL pipelines, against diffusers' own LoRA loader.

Reference: ``load_lora_weights`` + ``fuse_lora(lora_scale=s)`` on the same kohya file
(UNet and text encoders at the same strength, like A1111's ``<lora:name:s>``).
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from lorasel.checkpoints import apply, current, read_checkpoint, restore, save_checkpoint
from lorasel.checkpoints import merge as merge_module
from tests.ldm_files import ldm_unet_name
from tests.lora_files import (
    kohya_lora,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    render_small,
    sdxl_sgm_name,
    shared_pipeline,
)


def _snapshot(pipe) -> dict[str, torch.Tensor]:
    out = {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, part, None)
        if module is not None:
            out.update({f"{part}.{k}": v.detach().clone() for k, v in module.state_dict().items()})
    return out


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_kohya_lora_and_locon_match_diffusers_fuse_lora(family, tmp_path):
    pipe, ref = shared_pipeline(family), shared_pipeline(f"{family}-ref")
    sdxl = family == "sdxl"
    # LoRA on attention/FF (+ text encoders), LoCon on the resnets' 3x3 convs; SDXL with SGM names.
    tensors = kohya_lora(pipe, rank=4, alpha=2.0, conv=True, sgm=sdxl, seed=3)
    file = save_checkpoint(tmp_path / "lora.safetensors", tensors, {"ss_steps": "10"})
    checkpoint = read_checkpoint(file)
    assert checkpoint.format == "kohya"
    assert set(checkpoint.algorithms) == {"lora", "locon"}
    assert checkpoint.touches_text_encoder
    if sdxl:
        assert checkpoint.base_family == "sdxl"  # from the lora_te1_/SGM key names
        assert any(m.name.startswith("lora_unet_input_blocks_") for m in checkpoint.modules)
    base = render_small(pipe)
    components = ["unet", "text_encoder", *(["text_encoder_2"] if sdxl else [])]
    try:
        for strength in (0.5, 1.0):
            apply(pipe, checkpoint, strength)
            ours = render_small(pipe)
            ref.load_lora_weights(str(tmp_path), weight_name="lora.safetensors", adapter_name="x")
            ref.fuse_lora(components=components, lora_scale=strength)
            try:
                theirs = render_small(ref)
            finally:
                ref.unfuse_lora(components=components)
                ref.unload_lora_weights()
            assert np.abs(ours - base).max() > 0.05  # the LoRA changes the image
            np.testing.assert_allclose(ours, theirs, atol=2e-4)
    finally:
        restore(pipe, release=True)
    np.testing.assert_array_equal(render_small(pipe), base)


@pytest.mark.parametrize(
    ("family", "naming"),
    [
        ("sdxl", "kohya"),  # kohya's SDXL files
        ("sd1", "omi"),  # OneTrainer's OMI files name SD 1.x the SGM way too (kohya's never do)
    ],
)
def test_sgm_keys_land_on_the_layers_they_name(tmp_path, family, naming):
    """Independently of diffusers' maps: each SGM stem changes exactly the diffusers layer it names."""
    pipe = shared_pipeline(family)
    before = _snapshot(pipe)
    omi = naming == "omi"
    tensors = kohya_lora(pipe, rank=2, conv=True, text=False, sgm=not omi, omi=omi, seed=4)
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "sgm.safetensors", tensors))
    try:
        apply(pipe, checkpoint, 1.0)
        after = _snapshot(pipe)
    finally:
        restore(pipe, release=True)
    changed = {
        k.removeprefix("unet.").removesuffix(".weight")
        for k in before
        if not torch.equal(before[k], after[k])
    }
    assert len(changed) == len(checkpoint.modules)
    # Map the changed diffusers layers to SGM names with the test's own map, compare with the file.
    named = {
        ("unet." + sdxl_sgm_name(layer)) if omi else ("lora_unet_" + sdxl_sgm_name(layer).replace(".", "_"))
        for layer in changed
    }
    assert named == {m.name for m in checkpoint.modules}


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_omi_keys_merge_exactly_as_the_kohya_file_they_rename(family, tmp_path):
    """OneTrainer's OMI files: the same factors as a kohya file (checked against diffusers' loader
    above) under ``unet.`` + SGM paths, for SD 1.x too, and ``clip_l.`` / ``clip_g.``."""
    pipe = shared_pipeline(family)
    sdxl = family == "sdxl"
    omi = kohya_lora(pipe, rank=4, alpha=2.0, conv=True, seed=3, omi=True)
    kohya = kohya_lora(pipe, rank=4, alpha=2.0, conv=True, seed=3, sgm=sdxl)
    assert any(k.startswith("unet.input_blocks.") for k in omi) and any(k.startswith("clip_l.") for k in omi)
    assert any(k.startswith("clip_g.") for k in omi) == sdxl
    ours = read_checkpoint(save_checkpoint(tmp_path / "omi.safetensors", omi))
    reference = read_checkpoint(save_checkpoint(tmp_path / "kohya.safetensors", kohya))
    assert ours.format == "omi" and len(ours.modules) == len(reference.modules)
    assert set(ours.algorithms) == {"lora", "locon"} and ours.touches_text_encoder
    pristine = _snapshot(pipe)
    merged = []
    try:
        for checkpoint in (ours, reference):
            apply(pipe, checkpoint, 0.7)
            merged.append(_snapshot(pipe))
            restore(pipe)
    finally:
        restore(pipe, release=True)
    changed = [k for k in pristine if not torch.equal(pristine[k], merged[1][k])]
    assert any(k.startswith("unet.") for k in changed) and any(k.startswith("text_encoder.") for k in changed)
    assert any(k.startswith("text_encoder_2.") for k in changed) == sdxl
    for key in pristine:
        assert torch.equal(merged[0][key], merged[1][key]), key


def test_text_encoder_only_lora_changes_only_the_text_encoder(tmp_path):
    pipe = shared_pipeline("sd1")
    tensors = {k: v for k, v in kohya_lora(pipe, seed=5).items() if k.startswith("lora_te_")}
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "te.safetensors", tensors))
    assert checkpoint.touches_text_encoder and not checkpoint.touches_unet
    before = _snapshot(pipe)
    try:
        apply(pipe, checkpoint, 0.8)
        after = _snapshot(pipe)
    finally:
        restore(pipe, release=True)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("text_encoder.") for k in changed)


def test_restore_is_bit_exact_after_100_random_switches(tmp_path):
    pipe = shared_pipeline("sd1")
    pristine = _snapshot(pipe)
    files = []
    # Three files on overlapping layer sets: attention + text encoder, LoCon convs, a mix.
    layer_sets = [r"(to_q|to_k|q_proj)$", r"resnets\.[01]\.conv1$", r"(to_q|ff\.net\.2|conv2|fc1)$"]
    for i, only in enumerate(layer_sets):
        tensors = kohya_lora(pipe, rank=2 + i, alpha=1.0 + i, conv=True, only=only, seed=10 + i)
        files.append(read_checkpoint(save_checkpoint(tmp_path / f"c{i}.safetensors", tensors)))
    rng = random.Random(0)
    saved_budget = merge_module.DELTA_CACHE_BYTES
    try:
        for cycle in range(100):
            if cycle == 50:  # second half without the ΔW cache: recomputed on every apply
                merge_module.DELTA_CACHE_BYTES = 0
            checkpoint = rng.choice(files)
            strength = rng.choice([0.25, 0.5, 0.75, 1.0, 1.5, -0.5])
            apply(pipe, checkpoint, strength)
            assert current(pipe) == (checkpoint.sha256, strength)
            if rng.random() < 0.3:
                restore(pipe)
                assert current(pipe) is None
        restore(pipe)
        after = _snapshot(pipe)
    finally:
        merge_module.DELTA_CACHE_BYTES = saved_budget
        restore(pipe, release=True)
    assert after.keys() == pristine.keys()
    assert all(torch.equal(after[k], pristine[k]) for k in pristine)


def test_switching_strength_equals_a_fresh_apply(tmp_path):
    """The cached ΔW path (strength change) and the fresh path give the same weights."""
    pipe = shared_pipeline("sd1")
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "a.safetensors", kohya_lora(pipe, seed=6)))
    try:
        apply(pipe, checkpoint, 1.0)
        apply(pipe, checkpoint, 0.5)
        cached = _snapshot(pipe)
        restore(pipe, release=True)
        apply(pipe, checkpoint, 0.5)
        fresh = _snapshot(pipe)
    finally:
        restore(pipe, release=True)
    assert all(torch.equal(cached[k], fresh[k]) for k in cached)


def test_half_precision_model_stays_half_and_restores_exactly(tmp_path):
    pipe = shared_pipeline("sd1")
    unet = pipe.unet
    tensors = {k: v for k, v in kohya_lora(pipe, seed=7).items() if k.startswith("lora_unet_")}
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "h.safetensors", tensors))
    own = {k: v.clone() for k, v in unet.state_dict().items()}  # float32: bf16 and back would round it
    unet.to(torch.bfloat16)
    try:
        before = {k: v.clone() for k, v in unet.state_dict().items()}
        apply(unet, checkpoint, 1.0)  # a bare UNet works too
        layer = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
        module = next(
            m
            for m in checkpoint.modules
            if m.name == "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
        )
        assert layer.weight.dtype == torch.bfloat16
        # W = W0 + s·ΔW computed in float32 from the bf16 W0, rounded once to bf16.
        w0 = before["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"].float()
        delta = module.tensors["up"].float() @ module.tensors["down"].float() * module.scale
        torch.testing.assert_close(layer.weight.float(), w0 + delta, rtol=4e-3, atol=1e-5)
        restore(unet, release=True)
        assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    finally:
        restore(unet, release=True)
        unet.to(torch.float32)
        unet.load_state_dict(own)  # the shared pipeline as other tests compare it with diffusers'


def test_apply_to_a_pipeline_uses_no_extra_layers(tmp_path):
    """Merged, not wrapped: the UNet's module tree is unchanged (base-model speed)."""
    pipe = shared_pipeline("sd1")
    names = [n for n, _ in pipe.unet.named_modules()]
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "m.safetensors", kohya_lora(pipe, seed=8)))
    try:
        apply(pipe, checkpoint, 1.0)
        assert [n for n, _ in pipe.unet.named_modules()] == names
    finally:
        restore(pipe, release=True)


def test_text_encoder_keys_with_and_without_the_text_model_level(tmp_path):
    """kohya files say ``lora_te_text_model_encoder_...`` (transformers 4); transformers 5's CLIPTextModel
    has no ``text_model`` level. Both spellings must reach the same layer."""
    pipe = shared_pipeline("sd1")
    g = torch.Generator().manual_seed(9)
    down, up = torch.randn(2, 37, generator=g), torch.randn(32, 2, generator=g)
    results = []
    for i, stem in enumerate(
        ["lora_te_text_model_encoder_layers_1_mlp_fc2", "lora_te_encoder_layers_1_mlp_fc2"]
    ):
        tensors = {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up}
        checkpoint = read_checkpoint(save_checkpoint(tmp_path / f"{i}.safetensors", tensors))
        try:
            apply(pipe, checkpoint, 1.0)
            results.append(_snapshot(pipe))
        finally:
            restore(pipe, release=True)
    base = _snapshot(pipe)
    changed = [k for k in base if not torch.equal(base[k], results[0][k])]
    assert changed == ["text_encoder.encoder.layers.1.mlp.fc2.weight"]
    assert all(torch.equal(results[0][k], results[1][k]) for k in base)


def test_the_registry_does_not_keep_a_model_alive(tmp_path):
    import gc
    import weakref

    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(shared_pipeline("sd1").unet.config)
    stem = "lora_unet_down_blocks_1_attentions_0_proj_in"
    tensors = {
        f"{stem}.lora_down.weight": torch.ones(1, 64, 1, 1),
        f"{stem}.lora_up.weight": torch.ones(64, 1, 1, 1),
    }
    apply(unet, read_checkpoint(save_checkpoint(tmp_path / "w.safetensors", tensors)), 1.0)
    assert current(unet) is not None
    alive = weakref.ref(unet)
    del unet
    gc.collect()
    assert alive() is None


COMFY_PREFIXES = {
    "unet.": "diffusion_model.",
    "clip_l.": "text_encoders.clip_l.transformer.",
    "clip_g.": "text_encoders.clip_g.transformer.",
}


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_comfyui_lora_with_bias_and_norm_changes(family, tmp_path):
    """ComfyUI's Train LoRA node: ``diffusion_model.`` + SGM paths, LoRA factors on the layers'
    weights, ``diff`` on the norm layers' weights and ``diff_b`` on every bias it trains. The LoRA
    part merges as the kohya file it renames (checked against diffusers above); each bias and norm
    weight, found by the test's own SGM map, moves by exactly strength × its change."""
    pipe = shared_pipeline(family)
    sdxl = family == "sdxl"
    only = r"(attn1\.to_out\.0|proj_in|q_proj)$"
    kohya = kohya_lora(pipe, rank=2, alpha=1.0, seed=5, sgm=sdxl, only=only)
    comfy = {}
    for key, tensor in kohya_lora(pipe, rank=2, alpha=1.0, seed=5, omi=True, only=only).items():
        prefix = next(p for p in COMFY_PREFIXES if key.startswith(p))
        comfy[COMFY_PREFIXES[prefix] + key[len(prefix) :]] = tensor
    gen = torch.Generator().manual_seed(9)
    changes = {}  # diffusers parameter name -> its change
    for name, layer in pipe.unet.named_modules():
        if re.search(r"(attn1\.to_out\.0|proj_in)$", name) or re.search(
            r"(\.(norm1|norm2|norm)|^conv_norm_out)$", name
        ):
            if isinstance(layer, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                delta = torch.randn(layer.weight.shape, generator=gen) * 0.1
                comfy[f"diffusion_model.{sdxl_sgm_name(name)}.diff"] = delta
                changes[f"unet.{name}.weight"] = delta
            if getattr(layer, "bias", None) is not None:
                delta = torch.randn(layer.bias.shape, generator=gen) * 0.1
                comfy[f"diffusion_model.{sdxl_sgm_name(name)}.diff_b"] = delta
                changes[f"unet.{name}.bias"] = delta
    assert any(k.endswith(".diff") for k in comfy) and any(k.endswith(".diff_b") for k in comfy)
    assert {"diffusion_model.out.0.diff", "diffusion_model.input_blocks.1.0.out_layers.0.diff"} <= set(comfy)
    ours = read_checkpoint(
        save_checkpoint(tmp_path / "ComfyUI_trained_lora_40_steps_00001_.safetensors", comfy)
    )
    reference = read_checkpoint(save_checkpoint(tmp_path / "kohya.safetensors", kohya))
    assert ours.format == "comfyui" and ours.step == 40 and ours.touches_text_encoder
    assert {"lora", "full"} <= set(ours.algorithms)
    pristine = _snapshot(pipe)
    try:
        apply(pipe, reference, 0.5)
        lora_only = _snapshot(pipe)
        apply(pipe, ours, 0.5)
        merged = _snapshot(pipe)
    finally:
        restore(pipe, release=True)
    assert all(torch.equal(v, pristine[k]) for k, v in _snapshot(pipe).items())
    for key, value in merged.items():
        if key in changes:
            torch.testing.assert_close(value, pristine[key] + 0.5 * changes[key])
        else:
            assert torch.equal(value, lora_only[key]), key


def test_sgm_upsampler_of_an_up_level_without_attention(tmp_path):
    """SD 1.x's first up level has no attention, so its upsampler is ``output_blocks.2.1.conv`` in
    the original naming (ComfyUI's), which diffusers' map reads as an attention. On a UNet laid out
    as SD 1.x's (up levels: plain, then cross-attention), it lands on that upsampler, by the test's
    own map."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
    )
    name = "up_blocks.0.upsamplers.0.conv"
    sgm = ldm_unet_name(name, 2, up_attention=(False, True))
    assert sgm == "output_blocks.2.1.conv"
    layer = unet.get_submodule(name)
    g = torch.Generator().manual_seed(1)
    down = torch.randn(2, layer.in_channels * 9, generator=g)  # ComfyUI's flattened conv factors
    up = torch.randn(layer.out_channels, 2, generator=g)
    tensors = {f"diffusion_model.{sgm}.lora_down.weight": down, f"diffusion_model.{sgm}.lora_up.weight": up}
    tensors[f"diffusion_model.{sgm}.alpha"] = torch.tensor(1.0)
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "up.safetensors", tensors))
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    try:
        apply(unet, checkpoint, 1.0)
        after = {k: v.clone() for k, v in unet.state_dict().items()}
    finally:
        restore(unet, release=True)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [f"{name}.weight"]
    torch.testing.assert_close(
        after[changed[0]], before[changed[0]] + (up @ down / 2).reshape(layer.weight.shape)
    )
