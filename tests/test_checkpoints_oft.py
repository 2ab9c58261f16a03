"""OFT checkpoints: LyCORIS' diag-oft and BOFT files made by the ``lycoris-lora`` package, checked
against its own maths and forward; kohya's ``networks.oft`` files against kohya's formula.

Reference for kohya: ``OFTModule.get_weight`` and ``OFTInfModule.merge_to`` of sd-scripts'
``networks/oft.py`` (constraint = alpha × output width, the skew part's norm clamped to it, Cayley's
R, R weighted by the multiplier as s·(R − I) + I, W' = einsum("k n m, k n … -> k m …", R, W)),
written out below; kohya's OFT keys are ``oft_unet_`` + the layer path, flattened (SGM names for
SDXL, as its SDXL UNet names its layers).
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from lorasel.checkpoints import apply, read_checkpoint, restore, save_checkpoint
from lorasel.checkpoints.deltas import module_delta, oft_delta
from lorasel.checkpoints.summary import checkpoint_info, summary_line
from lorasel.cli import app
from lorasel.errors import CheckpointError
from tests.lora_files import (
    assert_changed_to,
    lycoris_saved,
    merged_forward,
    merged_unet_state,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    sdxl_sgm_name,
    shared_pipeline,
    unet_forward,
    unet_inputs,
)

LYCORIS_CASES = {
    "diag-oft": ("diag-oft", {}),
    "diag-oft-constrained-rescaled": ("diag-oft", {"constraint": 2e-3, "rescaled": True}),
    "boft": ("boft", {}),
    "boft-constrained-rescaled": ("boft", {"constraint": 1e-2, "rescaled": True}),
}


@pytest.mark.parametrize("case", list(LYCORIS_CASES))
def test_lycoris_oft_file_matches_lycoris(case, tmp_path):
    """Every module's ΔW equals LyCORIS' ``get_diff_weight``; the merged UNet computes what
    LyCORIS' own forward computes; restore gives the base back bit-exactly."""
    algo, kwargs = LYCORIS_CASES[case]
    unet = shared_pipeline("sd1").unet
    inputs = unet_inputs(3)
    base_out = unet_forward(unet, inputs)
    file = tmp_path / f"{case}.safetensors"
    references, weights, (lycoris_out,) = lycoris_saved(
        unet, algo, file, inputs, dim=4, seed=sum(map(ord, case)), **kwargs
    )

    checkpoint = read_checkpoint(file)
    expected = "boft" if algo == "boft" else "oft"
    assert checkpoint.format == "lycoris" and checkpoint.algorithms == (expected,)
    assert {m.name for m in checkpoint.modules} == set(references)
    assert any(w.dim() == 4 for w in weights.values())  # convolutions are rotated too
    for module in checkpoint.modules:
        assert module.rank is None and module.scale == 1.0
        assert module.alpha == pytest.approx(kwargs.get("constraint", 0.0))  # alpha: the constraint
        assert ("rescale" in module.tensors) == bool(kwargs.get("rescaled"))
        ours = oft_delta(weights[module.name], module)
        torch.testing.assert_close(ours, references[module.name].float(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="depends on the base weight"):
        module_delta(checkpoint.modules[0])
    info = checkpoint_info(checkpoint)
    assert {m["delta_norm"] for m in info["modules"]} == {None}
    line = summary_line(checkpoint)
    assert f"({len(checkpoint.modules)} {expected})" in line and "rank/alpha" not in line
    assert ("OFT constraint none" in line) == ("constraint" not in kwargs)

    merged_out = merged_forward(unet, checkpoint, 1.0, inputs)
    assert not torch.allclose(lycoris_out, base_out, atol=1e-2)  # the rotation does something
    torch.testing.assert_close(merged_out, lycoris_out, rtol=1e-4, atol=1e-4)
    assert torch.equal(unet_forward(unet, inputs), base_out)


def test_diag_oft_strength_is_lycoris_multiplier(tmp_path):
    """For a diag-OFT without rescale, lorasel's strength s (W + s·ΔW) is LyCORIS' own multiplier."""
    unet = shared_pipeline("sd1").unet
    inputs = unet_inputs(3)
    file = tmp_path / "oft.safetensors"
    _, _, (lycoris_out,) = lycoris_saved(unet, "diag-oft", file, inputs, (0.6,), dim=4, seed=11)
    merged_out = merged_forward(unet, read_checkpoint(file), 0.6, inputs)
    torch.testing.assert_close(merged_out, lycoris_out, rtol=1e-4, atol=1e-4)


def kohya_merged_weight(
    w: torch.Tensor, blocks: torch.Tensor, alpha: float, multiplier: float
) -> torch.Tensor:
    """kohya's OFTInfModule.merge_to on one weight, written out from sd-scripts' networks/oft.py."""
    num, size, _ = blocks.shape
    constraint = alpha * w.shape[0]
    q = blocks - blocks.transpose(1, 2)
    norm = torch.norm(q.flatten())
    q = q * ((torch.clamp(norm, max=constraint) + 1e-8) / (norm + 1e-8))
    eye = torch.eye(size).unsqueeze(0).repeat(num, 1, 1)
    r = torch.matmul(eye + q, (eye - q).float().inverse())
    r = multiplier * (r - eye) + eye
    out = torch.einsum("k n m, k n ... -> k m ...", r, w.float().reshape(num, size, -1))
    return out.reshape(w.shape)


def _kohya_oft_file(tmp_path, pipe, family: str, alpha: float, num_blocks: int = 4):
    """An OFT file as kohya's networks.oft saves it: the attentions' Linear layers and, with
    ``enable_conv``, the resnets' convolutions, ``num_blocks`` blocks each (kohya's ``dim``)."""
    gen = torch.Generator().manual_seed(21)
    tensors, layers = {}, {}
    for name, layer in pipe.unet.named_modules():
        attention = ".attn1." in name + "." or ".attn2." in name + "."
        linear = isinstance(layer, torch.nn.Linear) and attention and not name.endswith("to_out")
        conv = (
            isinstance(layer, torch.nn.Conv2d) and ".resnets." in name and name.endswith(("conv1", "conv2"))
        )
        if not (linear or conv):
            continue
        path = sdxl_sgm_name(name) if family == "sdxl" else name
        stem = "oft_unet_" + path.replace(".", "_")
        size = layer.weight.shape[0] // num_blocks
        spread = 0.1 if len(layers) % 2 else 0.02  # with alpha 0.04, large ones are clamped
        tensors[f"{stem}.oft_blocks"] = torch.randn(num_blocks, size, size, generator=gen) * spread
        tensors[f"{stem}.alpha"] = torch.tensor(alpha)
        layers[stem] = name
    meta = {
        "ss_network_module": "networks.oft",
        "ss_network_dim": str(num_blocks),
        "ss_network_alpha": str(alpha),
    }
    return (
        save_checkpoint(tmp_path / f"kohya-oft-{family}.safetensors", tensors, metadata=meta),
        tensors,
        layers,
    )


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_kohya_oft_merges_as_kohya_does(family, tmp_path):
    """kohya's OFT file (UNet attentions and resnet convs; SDXL in SGM names) changes exactly the
    layers it names, each to kohya's merged weight at the strength, and nothing else."""
    pipe = shared_pipeline(family)
    unet = pipe.unet
    before = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    # alpha so that the norm clamp acts on some modules and not on others
    file, tensors, layers = _kohya_oft_file(tmp_path, pipe, family, alpha=0.04)
    checkpoint = read_checkpoint(file)
    assert checkpoint.format == "kohya" and checkpoint.algorithms == ("oft",)
    if family == "sdxl":
        assert checkpoint.base_family == "sdxl"  # SGM names
    strength = 0.7
    after = merged_unet_state(pipe, checkpoint, strength)
    clamped = 0
    expected = {}
    for stem, name in layers.items():
        blocks = tensors[f"{stem}.oft_blocks"]
        w0 = before[f"{name}.weight"]
        skew = blocks - blocks.transpose(1, 2)
        clamped += int(float(torch.norm(skew)) > 0.04 * w0.shape[0])
        expected[f"{name}.weight"] = kohya_merged_weight(w0, blocks, 0.04, strength)
    assert 0 < clamped < len(layers)
    assert_changed_to(before, after, expected)  # biases are not rotated: kohya's merge_to leaves them
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items())


def test_oft_for_other_output_rows_is_one_error_base_untouched(tmp_path):
    """An OFT whose rotation turns more rows than its layer has does not fit: one error, naming it."""
    pipe = shared_pipeline("sd1")
    stem = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
    layer = pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q
    rows = layer.weight.shape[0] * 2
    tensors = {f"{stem}.oft_blocks": torch.randn(rows // 4, 4, 4), f"{stem}.alpha": torch.tensor(0.0)}
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "misfit.safetensors", tensors))
    before = layer.weight.detach().clone()
    with pytest.raises(CheckpointError, match=f"a rotation of {rows} output rows vs unet"):
        apply(pipe, checkpoint, 1.0)
    assert torch.equal(layer.weight, before)
    restore(pipe, release=True)


def test_inspect_folder_lists_an_oft_run(tmp_path):
    """Discovery takes OFT files for LoRA checkpoints: ``inspect FOLDER`` lists them with their algorithm."""
    pipe = shared_pipeline("sd1")
    file, _, layers = _kohya_oft_file(tmp_path, pipe, "sd1", alpha=1e-3)
    file.rename(tmp_path / "run-000003.safetensors")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["checkpoints"]
    assert (row["format"], row["algorithms"], row["modules"], row["epoch"]) == (
        "kohya",
        ["oft"],
        len(layers),
        3,
    )
