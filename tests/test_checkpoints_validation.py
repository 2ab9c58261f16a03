"""Bad input: every way a checkpoint file can be wrong gives one clear CheckpointError,
through ``read_checkpoint``/``apply`` and through ``lorasel inspect`` (exit 2, one line)."""

from __future__ import annotations

import hashlib
import json
import re
import struct

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from lorasel.checkpoints import apply, current, file_hash, read_checkpoint, restore, save_checkpoint
from lorasel.cli import app
from lorasel.errors import CheckpointError
from tests.lora_files import (
    kohya_lora,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    shared_pipeline,
)

runner = CliRunner()
STEM = "lora_unet_mid_block_attentions_0_proj_in"


def good_tensors(rank: int = 2, width: int = 64) -> dict[str, torch.Tensor]:
    return {
        f"{STEM}.lora_down.weight": torch.randn(rank, width),
        f"{STEM}.lora_up.weight": torch.randn(width, rank),
        f"{STEM}.alpha": torch.tensor(1.0),
    }


def _raw_safetensors(header: dict, data: bytes = b"") -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def _bad_files(tmp_path):
    """name → (path, part of the message)."""
    good = save_checkpoint(tmp_path / "good.safetensors", good_tensors())
    blob = good.read_bytes()
    cases = {}

    def case(name, content, expect, suffix=".safetensors", metadata=None):
        path = tmp_path / f"{name}{suffix}"
        if isinstance(content, dict):
            save_file(content, path, metadata=metadata)
        else:
            path.write_bytes(content)
        cases[name] = (path, expect)

    case("pickle-ckpt", b"\x80\x04 not opened", "pickle", ".ckpt")
    case("pickle-pt", b"\x80\x04", "pickle", ".pt")
    case("pickle-bin", b"\x80\x04", "pickle", ".bin")
    case("pickle-pth", b"\x80\x04", "pickle", ".pth")
    case("wrong-suffix", blob, "not a .safetensors file", ".txt")
    case("empty", b"", "not a valid safetensors file")
    case("text", b"hello, this is not a tensor file at all", "corrupt header")
    case("truncated", blob[: len(blob) // 2], "truncated")
    case("huge-header-length", struct.pack("<Q", 10**15) + b"{}", "corrupt header")
    case("bad-json", struct.pack("<Q", 5) + b"{oops", "corrupt header")
    case(
        "bad-entry",
        _raw_safetensors({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 3]}}, b"\0" * 3),
        "x",
    )
    case(
        "full-model",
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2),
            "first_stage_model.x": torch.zeros(1),
        },
        "full model",
    )
    case("nothing-lora", {"foo.bar": torch.zeros(1)}, "not a LoRA")
    case("flux-model", {"double_blocks.0.img_attn.proj.weight": torch.zeros(1)}, "no key is a LoRA key")
    case("extra-keys", {**good_tensors(), "model.diffusion_model.x.weight": torch.zeros(1)}, "not LoRA keys")
    case(
        "oft-old",
        {f"{STEM}.oft_diag": torch.zeros(2, 2, 2)},
        "uses the LyCORIS algorithm OFT in an older layout",
    )
    glora = lambda **shapes: {f"{STEM}.{k}.weight": torch.zeros(*v) for k, v in shapes.items()}  # noqa: E731
    case("glora-incomplete", glora(a1=(64, 2)), "missing a2, b1, b2")
    case("glora-misfit", glora(a1=(64, 2), a2=(3, 64), b1=(64, 2), b2=(2, 64)), "GLoRA factors of module")
    case("glora-wa-misfit", glora(a1=(32, 2), a2=(2, 32), b1=(64, 2), b2=(2, 64)), "do not fit together")
    case(
        "glora-first-layout-conv",
        glora(a1=(2, 64, 1, 1), a2=(64, 2, 1, 1), b1=(2, 64, 1, 1), b2=(32, 2, 1, 1)),
        "GLoRA factors of module",
    )
    case(
        "glora-tucker",
        {
            **glora(a1=(64, 2), a2=(2, 64), b1=(64, 2), b2=(2, 64)),
            f"{STEM}.bm.weight": torch.zeros(2, 2, 3, 3),
        },
        "uses the LyCORIS algorithm GLoRA with a Tucker factor",
    )
    case(
        "glora-with-dora",
        {**glora(a1=(64, 2), a2=(2, 64), b1=(64, 2), b2=(2, 64)), f"{STEM}.dora_scale": torch.ones(64, 1)},
        "mixes a GLoRA with a DoRA magnitude",
    )
    case(
        "tlora",
        {f"{STEM}.q_layer.weight": torch.zeros(2, 64), f"{STEM}.p_layer.weight": torch.zeros(64, 2)}
        | {f"{STEM}.lambda_layer": torch.ones(1, 2), f"{STEM}.alpha": torch.tensor(1.0)},
        "uses the LyCORIS algorithm T-LoRA",
    )
    case("ia3-without-on-input", {f"{STEM}.weight": torch.ones(64)}, "missing on_input")
    case(
        "ia3-on-input-2",
        {f"{STEM}.weight": torch.ones(64), f"{STEM}.on_input": torch.tensor(2)},
        "not 0 or 1",
    )
    case(
        "ia3-nan",
        {f"{STEM}.weight": torch.full((64,), float("nan")), f"{STEM}.on_input": torch.tensor(0)},
        "NaN",
    )
    case(
        "ia3-with-lora",
        {**good_tensors(), f"{STEM}.weight": torch.ones(64), f"{STEM}.on_input": torch.tensor(0)},
        "mixes tensors of different algorithms",
    )
    # A bare ``.weight`` is (IA)³'s on kohya/LyCORIS stems only: a ComfyUI-named model's key is not.
    case(
        "comfy-model-key",
        {**good_tensors(), "diffusion_model.input_blocks.0.0.weight": torch.zeros(1)},
        "not LoRA keys",
    )

    def oft(blocks, **more):
        return {f"{STEM}.oft_blocks": blocks, f"{STEM}.alpha": torch.tensor(0.0)} | {
            f"{STEM}.{k}": v for k, v in more.items()
        }

    case("oft-not-square", oft(torch.zeros(4, 2, 3)), "oft_blocks should be [blocks, size, size]")
    case("oft-flat", oft(torch.zeros(8, 8)), "oft_blocks should be [blocks, size, size]")
    case("boft-too-many-stages", oft(torch.zeros(4, 4, 2, 2)), "a BOFT of 4 stages cannot pair 4 blocks of 2")
    case("boft-odd-size", oft(torch.zeros(1, 4, 3, 3)), "cannot pair 4 blocks of 3")
    case("oft-rescale-misfit", oft(torch.zeros(4, 2, 2), rescale=torch.ones(6, 1)), "rescales 6 rows")
    case("oft-nan", oft(torch.full((4, 2, 2), float("nan"))), "NaN")
    case(
        "rescale-without-oft", {**good_tensors(), f"{STEM}.rescale": torch.ones(64, 1)}, "OFT rescale without"
    )
    case(
        "oft-with-dora", oft(torch.zeros(4, 2, 2), dora_scale=torch.ones(8, 1)), "mixes an OFT rotation with"
    )
    case("incomplete", {f"{STEM}.lora_down.weight": torch.zeros(2, 4)}, "missing up")
    case("full-bias-only", {f"{STEM}.diff_b": torch.zeros(4)}, "no key is a LoRA key")
    case(
        "full-bias-misfit",
        {f"{STEM}.diff": torch.zeros(4, 8), f"{STEM}.diff_b": torch.zeros(3)},
        "has a bias change of shape [3] for 4 outputs",
    )
    case("full-nan", {f"{STEM}.diff": torch.full((4, 8), float("nan"))}, "NaN")
    case(
        "norm-mixed",
        {f"{STEM}.w_norm": torch.zeros(4), f"{STEM}.lora_down.weight": torch.zeros(2, 4)},
        "mixes",
    )
    case(
        "rank-mismatch",
        {f"{STEM}.lora_down.weight": torch.zeros(2, 4), f"{STEM}.lora_up.weight": torch.zeros(4, 3)},
        "do not fit together",
    )
    case("nan", {**good_tensors(), f"{STEM}.lora_up.weight": torch.full((64, 2), float("nan"))}, "NaN")
    case("inf", {**good_tensors(), f"{STEM}.lora_down.weight": torch.full((2, 64), float("inf"))}, "Inf")
    case("bad-alpha", {**good_tensors(), f"{STEM}.alpha": torch.ones(3)}, "one number")
    case(
        "mixed-formats",
        {
            **good_tensors(),
            "unet.a.b.lora_A.weight": torch.zeros(1, 2),
            "unet.a.b.lora_B.weight": torch.zeros(2, 1),
        },
        "mixes key formats",
    )
    # LoRAs for models lorasel does not render: by their keys, else (unknown keys) their metadata.
    pair = lambda stem, a="lora_down", b="lora_up": {f"{stem}.{a}.weight": torch.zeros(2, 8), f"{stem}.{b}.weight": torch.zeros(8, 2)}  # noqa: E731  # fmt: skip
    case("flux-kohya", pair("lora_unet_double_blocks_0_img_attn_proj"), "a LoRA for Flux;")
    case("flux-comfy", pair("diffusion_model.single_blocks.3.linear1", "lora_A", "lora_B"), "for Flux;")
    case("dit-comfy", pair("diffusion_model.blocks.0.self_attn.q"), "for a diffusion transformer;")
    case(
        "dit-diffusers",
        pair("transformer.transformer_blocks.0.attn.to_q", "lora_A", "lora_B"),
        "for a diffusion transformer;",
    )
    case(
        "dit-peft",
        pair("base_model.model.single_transformer_blocks.0.proj_out", "lora_A", "lora_B"),
        "for a diffusion transformer;",
    )
    case(
        "sd3-t5",
        {**good_tensors(), **pair("lora_te3_encoder_block_0_layer_0_SelfAttention_q")},
        "for SD 3;",
    )
    case("flux-metadata", good_tensors(), "for Flux;", metadata={"ss_base_model_version": "flux1"})
    case(
        "qwen-metadata",
        good_tensors(),
        "for Qwen-Image;",
        metadata={"modelspec.architecture": "qwen-image/lora"},
    )
    return cases


def test_every_bad_file_is_one_clear_error_naming_it(tmp_path):
    for name, (path, expect) in _bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path)
        assert expect in info.value.message, (name, info.value.message)
        assert path.name in info.value.message, name
        assert info.value.hint, name


def test_inspect_cli_bad_files_exit_2_one_line_file_untouched(tmp_path):
    for name, (path, expect) in _bad_files(tmp_path).items():
        before = path.read_bytes()
        for args in (["inspect", str(path)], ["inspect", "--json", str(path)]):
            result = runner.invoke(app, args)
            assert result.exit_code == 2, (name, result.output)
            assert result.stdout == "", name
            assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, name
            assert expect in result.stderr and "(hint: " in result.stderr, name
            assert "Traceback" not in result.output, name
        assert path.read_bytes() == before, name


def test_inspect_cli_missing_file_and_folder(tmp_path):
    for target in (tmp_path / "nope.safetensors", tmp_path):
        result = runner.invoke(app, ["inspect", str(target)])
        assert result.exit_code == 2
        assert result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_pickle_is_refused_without_opening(tmp_path, monkeypatch):
    import builtins

    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x04")
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(f) or real_open(f, *a, **k))
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint(path)
    assert str(path) not in map(str, opened)


def test_sdxl_lora_on_sd1_base_names_keys_and_families(tmp_path, monkeypatch):
    pipe = shared_pipeline("sd1")
    monkeypatch.setattr(pipe, "_lorasel_family", "sd1", raising=False)  # tiny widths say nothing
    sdxl_tensors = kohya_lora(shared_pipeline("sdxl"), rank=2, sgm=True, only=r"(to_q|q_proj)$", seed=1)
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "xl.safetensors", sdxl_tensors))
    with pytest.raises(CheckpointError) as info:
        apply(pipe, checkpoint, 1.0)
    message = info.value.message
    assert "xl.safetensors" in message and "match no layer" in message
    assert "lora_te2_" in message or "lora_unet_input_blocks" in message or "lora_te1_" in message
    assert "an SDXL LoRA; the base is SD1" in message
    assert current(pipe) is None


def test_omi_sdxl_lora_on_sd1_base_is_refused_with_its_family(tmp_path, monkeypatch):
    """OneTrainer's OMI names (SGM paths for SD 1.x too): an SDXL file is still told from its
    clip_g keys, and refused on an SD 1.x base without touching it."""
    pipe = shared_pipeline("sd1")
    monkeypatch.setattr(pipe, "_lorasel_family", "sd1", raising=False)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    tensors = kohya_lora(shared_pipeline("sdxl"), rank=2, omi=True, only=r"(attn2\.to_k|q_proj)$", seed=1)
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "xl.safetensors", tensors))
    assert (checkpoint.format, checkpoint.base_family) == ("omi", "sdxl")
    with pytest.raises(CheckpointError) as info:
        apply(pipe, checkpoint, 1.0)
    assert "an SDXL LoRA; the base is SD1" in info.value.message and "clip_g." in info.value.message
    assert current(pipe) is None
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())


def test_partially_matching_file_never_half_applies(tmp_path):
    pipe = shared_pipeline("sd1")
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    tensors = kohya_lora(pipe, rank=2, text=False, only=r"to_q$", seed=2)
    tensors["lora_unet_no_such_layer.lora_down.weight"] = torch.zeros(2, 8)
    tensors["lora_unet_no_such_layer.lora_up.weight"] = torch.zeros(8, 2)
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "part.safetensors", tensors))
    good = read_checkpoint(save_checkpoint(tmp_path / "good.safetensors", kohya_lora(pipe, rank=2, seed=3)))
    try:
        apply(pipe, good, 1.0)
        with pytest.raises(CheckpointError, match=r"1 of .* modules match no layer.*no_such_layer"):
            apply(pipe, checkpoint, 1.0)
        # The failed switch leaves the base model, not the previous checkpoint or half of the new one.
        assert current(pipe) is None
        assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())
    finally:
        restore(pipe, release=True)


def test_shape_mismatch_names_module_and_shapes(tmp_path):
    pipe = shared_pipeline("sd1")
    stem = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {f"{stem}.lora_down.weight": torch.zeros(2, 48), f"{stem}.lora_up.weight": torch.zeros(64, 2)}
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "shape.safetensors", tensors))
    with pytest.raises(CheckpointError, match=r"do not fit.*attn1_to_q.*\[64, 48\].*\[64, 64\]"):
        apply(pipe, checkpoint, 1.0)


def test_a_bias_change_for_a_layer_without_bias_names_both(tmp_path):
    """LyCORIS "full": a Δb for attn1.to_q, which has no bias in SD's UNet, does not fit."""
    pipe = shared_pipeline("sd1")
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    stem = "lycoris_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {f"{stem}.diff": torch.ones(64, 64), f"{stem}.diff_b": torch.ones(64)}
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "full.safetensors", tensors))
    assert checkpoint.algorithms == ("full",) and checkpoint.modules[0].rank is None
    with pytest.raises(CheckpointError, match=re.escape("(ΔW [64, 64], Δb [64] vs unet.") + ".*bias none"):
        apply(pipe, checkpoint, 1.0)
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())


def test_bad_strength(tmp_path):
    from lorasel.errors import ConfigError

    pipe = shared_pipeline("sd1")
    checkpoint = read_checkpoint(
        save_checkpoint(tmp_path / "s.safetensors", kohya_lora(pipe, rank=2, seed=4))
    )
    with pytest.raises(ConfigError, match="strength"):
        apply(pipe, checkpoint, float("nan"))


def test_hostile_adapter_config(tmp_path):
    tensors = {
        "base_model.model.mid_block.attentions.0.proj_in.lora_A.weight": torch.randn(2, 64),
        "base_model.model.mid_block.attentions.0.proj_in.lora_B.weight": torch.randn(64, 2),
    }
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"adapter_config\.json is not valid JSON"):
        read_checkpoint(tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": "lots"}))
    with pytest.raises(CheckpointError, match=r"lora_alpha.*not a valid number"):
        read_checkpoint(tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"r": 2, "lora_alpha": 8, "alpha_pattern": {"(a+)+$" * 100: 1}})
    )
    assert {m.scale for m in read_checkpoint(tmp_path / "adapter_model.safetensors").modules} == {4.0}


def test_file_hash_is_sha256_memoised_and_follows_content(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "h.safetensors", good_tensors())
    assert file_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_checkpoint(path).sha256 == file_hash(path)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    file_hash(path)
    assert calls == []  # memoised by (path, size, mtime)
    save_checkpoint(path, good_tensors(rank=3))
    assert file_hash(path) == real(path.read_bytes()).hexdigest()
