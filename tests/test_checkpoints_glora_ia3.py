"""GLoRA and (IA)³ checkpoints, whose ΔW is a function of the base weight: files made by the
``lycoris-lora`` package, checked against its own ``get_diff_weight`` and forward; GLoRA's first
layout (LyCORIS 1.x) against the formula ComfyUI's loader applies to it, written out here:
ΔW = alpha / rank · (b2·b1 + W·a2·a1), a1 [r, in], a2 [in, r], b1 [r, in], b2 [out, r] (A1111's
``network_glora`` computes the same product but scales it by 1, ignoring alpha).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from lorasel.checkpoints import apply, read_checkpoint
from lorasel.checkpoints.deltas import base_delta, module_delta
from lorasel.checkpoints.summary import checkpoint_info, summary_line
from lorasel.cli import app
from lorasel.errors import CheckpointError
from tests.lora_files import (
    assert_changed_to,
    lycoris_saved,
    merged_forward,
    merged_unet_state,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    shared_pipeline,
    unet_forward,
    unet_inputs,
)


@pytest.mark.parametrize("algo", ["glora", "ia3"])
def test_lycoris_file_matches_lycoris(algo, tmp_path):
    """Every module's ΔW equals LyCORIS' ``get_diff_weight``; the merged UNet computes what
    LyCORIS' forward computes, at strength 1 and at 0.6 (its multiplier); restore is bit-exact."""
    unet = shared_pipeline("sd1").unet
    inputs = unet_inputs(5)
    base_out = unet_forward(unet, inputs)
    file = tmp_path / f"{algo}.safetensors"
    references, weights, (lycoris_out, lycoris_out_06) = lycoris_saved(
        unet, algo, file, inputs, (1.0, 0.6), dim=4, alpha=2.0, seed=sum(map(ord, algo))
    )

    checkpoint = read_checkpoint(file)
    assert checkpoint.format == "lycoris" and checkpoint.algorithms == (algo,)
    assert {m.name for m in checkpoint.modules} == set(references)
    assert any(w.dim() == 4 for w in weights.values())  # convolutions too
    for module in checkpoint.modules:
        if algo == "glora":
            assert (module.rank, module.alpha, module.scale) == (4, 2.0, 0.5)
        else:
            assert (module.rank, module.scale, module.on_input) == (None, 1.0, False)
        ours = base_delta(weights[module.name], module)
        assert ours.shape == weights[module.name].shape
        torch.testing.assert_close(ours, references[module.name].float(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="depends on the base weight"):
        module_delta(checkpoint.modules[0])
    assert {m["delta_norm"] for m in checkpoint_info(checkpoint)["modules"]} == {None}
    line = summary_line(checkpoint)
    assert f"({len(checkpoint.modules)} {algo})" in line
    assert ("rank/alpha 4/2" in line) == (algo == "glora")

    for strength, want in ((1.0, lycoris_out), (0.6, lycoris_out_06)):
        merged_out = merged_forward(unet, checkpoint, strength, inputs)
        assert not torch.allclose(want, base_out, atol=1e-2)  # the module does something
        torch.testing.assert_close(merged_out, want, rtol=1e-4, atol=1e-4)
    assert torch.equal(unet_forward(unet, inputs), base_out)  # restored bit-exactly


def test_ia3_on_input_matches_lycoris(tmp_path):
    """(IA)³ on the input columns (LyCORIS' ``train_on_input``, its preset's choice for ff.net.2),
    on Linear and conv layers: the file as LyCORIS' module saves it, merged like its forward."""
    from lycoris.modules.ia3 import IA3Module

    unet = shared_pipeline("sd1").unet
    inputs = unet_inputs(6)
    base_out = unet_forward(unet, inputs)
    layers = {n: m for n, m in unet.named_modules() if n.endswith(("ff.net.2", "resnets.0.conv2"))}
    assert {type(m) for m in layers.values()} == {torch.nn.Linear, torch.nn.Conv2d}
    gen = torch.Generator().manual_seed(4)
    modules, tensors = [], {}
    for path, layer in layers.items():
        name = "lycoris_" + path.replace(".", "_")
        module = IA3Module(name, layer, 0.7, train_on_input=True)
        with torch.no_grad():
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.3)
        tensors |= {f"{name}.{k}": v.detach().clone() for k, v in module.state_dict().items()}
        module.apply_to()
        modules.append(module)
    try:
        lycoris_out = unet_forward(unet, inputs)
    finally:
        for module in modules:
            module.restore()
    file = tmp_path / "ia3-in.safetensors"
    save_file(tensors, file)

    checkpoint = read_checkpoint(file)
    assert {m.on_input for m in checkpoint.modules} == {True}
    widths = {path.replace(".", "_"): layer.weight.shape[1] for path, layer in layers.items()}
    assert {m.target: m.delta_shape[0] for m in checkpoint.modules} == widths  # input columns
    merged_out = merged_forward(unet, checkpoint, 0.7, inputs)
    assert not torch.allclose(lycoris_out, base_out, atol=1e-2)
    torch.testing.assert_close(merged_out, lycoris_out, rtol=1e-4, atol=1e-4)


def _first_layout_glora(pipe, rank: int, alpha: float):
    """A GLoRA file in LyCORIS 1.x's layout on the UNet's attention Linears (square and not)."""
    gen = torch.Generator().manual_seed(8)
    tensors, layers = {}, {}
    for name, layer in pipe.unet.named_modules():
        if not (
            isinstance(layer, torch.nn.Linear) and name.endswith(("attn1.to_q", "attn2.to_k", "ff.net.2"))
        ):
            continue
        out, width = layer.weight.shape
        stem = "lora_unet_" + name.replace(".", "_")
        factors = {"a1": (rank, width), "a2": (width, rank), "b1": (rank, width), "b2": (out, rank)}
        for factor, shape in factors.items():
            tensors[f"{stem}.{factor}.weight"] = torch.randn(*shape, generator=gen) * 0.2
        tensors[f"{stem}.alpha"] = torch.tensor(alpha)
        layers[stem] = name
    return tensors, layers


def test_glora_first_layout_merges_as_comfyui_does(tmp_path):
    """LyCORIS 1.x's GLoRA layout (told apart from today's by which axis holds the rank, on square
    layers too) changes exactly its layers, each to W + s·alpha/r·(b2·b1 + W·a2·a1)."""
    pipe = shared_pipeline("sd1")
    unet = pipe.unet
    before = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    tensors, layers = _first_layout_glora(pipe, rank=3, alpha=1.5)
    square = [n for n in layers.values() if before[f"{n}.weight"].shape[0] == before[f"{n}.weight"].shape[1]]
    assert square and len(square) < len(layers)
    file = tmp_path / "glora-v1.safetensors"
    save_file(tensors, file)
    checkpoint = read_checkpoint(file)
    assert checkpoint.format == "lycoris" and checkpoint.algorithms == ("glora",)
    assert {(m.rank, m.scale) for m in checkpoint.modules} == {(3, 0.5)}
    strength = 0.8
    after = merged_unet_state(pipe, checkpoint, strength)
    expected = {}
    for stem, name in layers.items():
        w = before[f"{name}.weight"]
        a1, a2, b1, b2 = (tensors[f"{stem}.{f}.weight"] for f in ("a1", "a2", "b1", "b2"))
        expected[f"{name}.weight"] = w + strength * 0.5 * (b2 @ b1 + w @ a2 @ a1)
    assert_changed_to(before, after, expected)
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items())


def test_ia3_for_other_channels_is_one_error_base_untouched(tmp_path):
    """An (IA)³ scale with more channels than its layer has does not fit: one error, naming it."""
    pipe = shared_pipeline("sd1")
    stem = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
    layer = pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q
    before = layer.weight.detach().clone()
    width = layer.weight.shape[1] + 8
    file = tmp_path / "ia3-misfit.safetensors"
    save_file({f"{stem}.weight": torch.ones(width), f"{stem}.on_input": torch.tensor(1)}, file)
    with pytest.raises(CheckpointError, match=f"a scale of {width} input channels"):
        apply(pipe, read_checkpoint(file), 1.0)
    assert torch.equal(layer.weight, before)


def test_inspect_folder_lists_glora_and_ia3_runs(tmp_path):
    """``inspect FOLDER`` (and ``--json``) lists GLoRA and (IA)³ checkpoints with their algorithm,
    GLoRA's rank and alpha, and no rank/alpha for an (IA)³, which has neither."""
    pipe = shared_pipeline("sd1")
    tensors, _ = _first_layout_glora(pipe, rank=3, alpha=1.5)
    save_file(tensors, tmp_path / "glora-000001.safetensors")
    stem = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
    width = pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q.weight.shape[0]
    ia3 = {f"{stem}.weight": torch.full((width,), 0.1), f"{stem}.on_input": torch.tensor(0)}
    save_file(ia3, tmp_path / "ia3-000002.safetensors")

    result = CliRunner().invoke(app, ["inspect", "--json", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in json.loads(result.stdout)["checkpoints"]}
    glora_row, ia3_row = rows["glora-000001.safetensors"], rows["ia3-000002.safetensors"]
    assert (glora_row["algorithms"], glora_row["rank"], glora_row["alpha"]) == (["glora"], 3, 1.5)
    assert (ia3_row["algorithms"], ia3_row["rank"], ia3_row["alpha"], ia3_row["modules"]) == (
        ["ia3"],
        None,
        None,
        1,
    )
    result = CliRunner().invoke(app, ["inspect", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {
        line.split()[0]: line
        for line in result.stdout.splitlines()
        if line.strip().startswith(("glora-", "ia3-"))
    }
    assert "glora r3 a1.5" in lines["glora-000001"]
    assert "1 ia3" in lines["ia3-000002"] and " r-" not in lines["ia3-000002"]
