"""`lorasel inspect`, the metadata readers (epoch, step, trigger, family), and delta norms."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from lorasel.checkpoints import module_delta, read_checkpoint, save_checkpoint
from lorasel.checkpoints.metadata import family_from_metadata, progress_from_metadata, trigger_and_class
from lorasel.checkpoints.summary import delta_norm
from lorasel.cli import app

runner = CliRunner()
ATTN = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
CONV = "lora_unet_down_blocks_0_resnets_0_conv1"


def _mixed_file(path, metadata=None, cross_width=768):
    """LoRA + LoCon + Tucker + LoHa (+Tucker) + LoKr (every layout) + DoRA modules in one kohya file."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    t = {
        f"{ATTN}.lora_down.weight": r(4, cross_width), f"{ATTN}.lora_up.weight": r(320, 4), f"{ATTN}.alpha": torch.tensor(2.0),
        f"{CONV}.lora_down.weight": r(4, 32, 3, 3), f"{CONV}.lora_up.weight": r(32, 4, 1, 1),
        "lora_unet_a_tucker.lora_down.weight": r(2, 8, 1, 1), "lora_unet_a_tucker.lora_mid.weight": r(2, 2, 3, 3),
        "lora_unet_a_tucker.lora_up.weight": r(6, 2, 1, 1),
        "lora_unet_b_loha.hada_w1_a": r(6, 2), "lora_unet_b_loha.hada_w1_b": r(2, 8),
        "lora_unet_b_loha.hada_w2_a": r(6, 2), "lora_unet_b_loha.hada_w2_b": r(2, 8), "lora_unet_b_loha.alpha": torch.tensor(1.0),
        "lora_unet_c_lohat.hada_w1_a": r(2, 6), "lora_unet_c_lohat.hada_w1_b": r(2, 8), "lora_unet_c_lohat.hada_t1": r(2, 2, 3, 3),
        "lora_unet_c_lohat.hada_w2_a": r(2, 6), "lora_unet_c_lohat.hada_w2_b": r(2, 8), "lora_unet_c_lohat.hada_t2": r(2, 2, 3, 3),
        "lora_unet_d_lokr.lokr_w1": r(2, 2), "lora_unet_d_lokr.lokr_w2_a": r(3, 2), "lora_unet_d_lokr.lokr_w2_b": r(2, 4),
        "lora_unet_d_lokr.alpha": torch.tensor(4.0),
        "lora_unet_e_full.lokr_w1": r(2, 2), "lora_unet_e_full.lokr_w2": r(3, 4), "lora_unet_e_full.alpha": torch.tensor(8.0),
        "lora_unet_f_lokrt.lokr_w1_a": r(2, 1), "lora_unet_f_lokrt.lokr_w1_b": r(1, 2), "lora_unet_f_lokrt.lokr_t2": r(1, 1, 3, 3),
        "lora_unet_f_lokrt.lokr_w2_a": r(1, 3), "lora_unet_f_lokrt.lokr_w2_b": r(1, 4),
        "lora_unet_g_dora.lora_down.weight": r(2, 8), "lora_unet_g_dora.lora_up.weight": r(6, 2),
        "lora_unet_g_dora.dora_scale": r(6, 1).abs(),
    }  # fmt: skip
    return save_checkpoint(path, t, metadata or {})


def test_algorithms_ranks_and_scales_of_every_layout(tmp_path):
    checkpoint = read_checkpoint(_mixed_file(tmp_path / "mixed.safetensors"))
    by_name = {m.name: m for m in checkpoint.modules}
    expected = {
        ATTN: ("lora", 4, 2.0, 0.5),
        CONV: ("locon", 4, 4.0, 1.0),  # no alpha: alpha = rank
        "lora_unet_a_tucker": ("lora_tucker", 2, 2.0, 1.0),
        "lora_unet_b_loha": ("loha", 2, 1.0, 0.5),
        "lora_unet_c_lohat": ("loha", 2, 2.0, 1.0),
        "lora_unet_d_lokr": ("lokr", 2, 4.0, 2.0),
        "lora_unet_e_full": ("lokr", None, 8.0, 1.0),  # both factors full: γ = 1 whatever alpha says
        "lora_unet_f_lokrt": ("lokr", 1, 1.0, 1.0),  # rank from w1_b
        "lora_unet_g_dora": ("dora", 2, 2.0, 1.0),
    }
    assert {n: (m.algo, m.rank, m.alpha, m.scale) for n, m in by_name.items()} == expected
    assert checkpoint.format == "lycoris"
    names = [m.name for m in checkpoint.modules]
    assert names.index(CONV) < names.index(ATTN)  # natural order: down_blocks_0 before down_blocks_1


def test_delta_norm_equals_the_norm_of_the_full_delta(tmp_path):
    checkpoint = read_checkpoint(_mixed_file(tmp_path / "mixed.safetensors"))
    for module in checkpoint.modules:
        if module.algo == "dora":
            assert delta_norm(module) is None
        else:
            assert delta_norm(module) == pytest.approx(float(module_delta(module).double().norm()), rel=1e-5)


def test_inspect_json_is_the_documented_object(tmp_path):
    file = _mixed_file(
        tmp_path / "zkz-000004.safetensors",
        {"ss_epoch": "4", "ss_steps": "400", "ss_base_model_version": "sd_v1", "junk": "\x1b[2J"},
    )
    result = runner.invoke(app, ["inspect", "--json", str(file)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert set(info) == {
        "path",
        "format",
        "base_family",
        "epoch",
        "step",
        "metadata",
        "embeddings",
        "modules",
    }
    assert info["embeddings"] == {}
    assert (info["format"], info["base_family"], info["epoch"], info["step"]) == ("lycoris", "sd1", 4, 400)
    assert info["metadata"]["junk"] == "\x1b[2J"  # kept verbatim, JSON-escaped
    assert "\x1b" not in result.stdout
    assert all(set(m) == {"name", "algo", "rank", "alpha", "scale", "delta_norm"} for m in info["modules"])
    dora = next(m for m in info["modules"] if m["algo"] == "dora")
    assert dora["delta_norm"] is None
    attn = next(m for m in info["modules"] if m["name"] == ATTN)
    assert attn["scale"] == 0.5 and attn["delta_norm"] > 0


def test_inspect_human_table_and_summary_escape_stranger_text(tmp_path):
    file = _mixed_file(
        tmp_path / "zkz-000004.safetensors",
        {
            "ss_epoch": "4",
            "ss_steps": "400",
            "ss_output_name": "[bold red]pwned[/] \x1b[31mred",
            "ss_tag_frequency": json.dumps({"10_zkz star": {"zkz": 3}}),
        },
    )
    result = runner.invoke(app, ["inspect", str(file)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "[bold red]pwned[/]" in out  # shown as text, not interpreted as markup
    assert "\x1b" not in out
    assert ATTN in out and "lora_tucker" in out and "dora" in out
    summary = out.strip().splitlines()[-1]
    assert "9 modules" in summary and "epoch 4, step 400" in summary
    assert "trigger 'zkz' (class 'star')" in summary and "rank/alpha 2/2" in summary


def test_base_family_from_shapes_beats_metadata(tmp_path):
    # attn2.to_k reads the text encoder's width: 1024 is SD2 whatever the metadata claims.
    file = _mixed_file(tmp_path / "sd2.safetensors", {"ss_base_model_version": "sd_v1"}, cross_width=1024)
    assert read_checkpoint(file).base_family == "sd2"


@pytest.mark.parametrize(
    ("metadata", "family"),
    [
        ({"ss_base_model_version": "sd_v1"}, "sd1"),
        ({"ss_base_model_version": "sd_1.5"}, "sd1"),  # ai-toolkit
        ({"ss_base_model_version": "sd_v2"}, "sd2"),
        ({"ss_base_model_version": "sd_2.1"}, "sd2"),
        ({"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"),
        ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl"),
        ({"modelspec.architecture": "stable-diffusion-v1/lora"}, "sd1"),
        ({"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "sd2"),
        ({"ss_v2": "True"}, "sd2"),
        ({"ss_base_model_version": "flux1"}, None),
        ({}, None),
    ],
)
def test_family_from_metadata(metadata, family):
    assert family_from_metadata(metadata) == family


def test_progress_and_trigger_from_hostile_metadata():
    assert progress_from_metadata({"ss_epoch": "2", "ss_steps": "500"}, "kohya-epoch") == (2, 500)
    assert progress_from_metadata({"ss_epoch": "2", "ss_steps": "500"}, "kohya-step") == (3, 500)
    assert progress_from_metadata({"training_info": '{"step": 750, "epoch": 3}'}, "ai-toolkit") == (3, 750)
    for bad in ("-1", "1e99", "nan", "12abc", "9" * 40, ""):
        assert progress_from_metadata({"ss_epoch": bad, "ss_steps": bad}, None) == (None, None)
    assert progress_from_metadata({"training_info": "[" * 100000}, None) == (None, None)
    assert trigger_and_class({"modelspec.trigger_phrase": "zkz\x00 \x1b[31m  style"}) == (
        "zkz [31m style",
        None,
    )
    assert trigger_and_class({"ss_tag_frequency": json.dumps({"10_zkz star": {}, "img": {}})}) == (
        "zkz",
        "star",
    )
    assert trigger_and_class({"ss_dataset_dirs": json.dumps({"5_ohwx man": {"n_repeats": 5}})}) == (
        "ohwx",
        "man",
    )
    both = {"modelspec.trigger_phrase": "zkz", "ss_tag_frequency": json.dumps({"3_zkz star": {}})}
    assert trigger_and_class(both) == ("zkz", "star")
    assert trigger_and_class({"ss_tag_frequency": "not json"}) == (None, None)
    assert trigger_and_class({"modelspec.trigger_phrase": "x" * 5000})[0] == "x" * 200


@pytest.mark.parametrize(
    ("stem", "shape", "family"),
    [
        # OMI names SD 1.x's UNet the SGM way too: the cross-attention width decides, not the naming.
        ("unet.input_blocks.1.1.transformer_blocks.0.attn2.to_k", (320, 768), "sd1"),
        ("unet.input_blocks.4.1.transformer_blocks.0.attn2.to_k", (640, 2048), "sdxl"),
        ("clip_l.text_model.encoder.layers.0.self_attn.q_proj", (768, 768), "sd1"),
        ("clip_g.text_model.encoder.layers.0.self_attn.q_proj", (1280, 1280), "sdxl"),
        ("unet.label_emb.0.0", (1280, 2816), "sdxl"),
    ],
)
def test_omi_files_read_with_their_family(tmp_path, stem, shape, family):
    out, inp = shape
    weights = {f"{stem}.lora_down.weight": torch.randn(4, inp), f"{stem}.lora_up.weight": torch.randn(out, 4)}
    weights[f"{stem}.alpha"] = torch.tensor(2.0)
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "omi.safetensors", weights))
    assert (checkpoint.format, checkpoint.base_family) == ("omi", family)
    (module,) = checkpoint.modules
    assert (module.name, module.scale) == (stem, 0.5)
    result = runner.invoke(app, ["inspect", str(tmp_path / "omi.safetensors")])
    assert result.exit_code == 0 and "omi checkpoint for" in result.stdout


def test_inspect_a_folder_lists_what_eval_would_find(tmp_path):
    """``lorasel inspect FOLDER``: each checkpoint discovery finds, in training order, what it is
    or the one-line reason it cannot be evaluated; nothing rendered; stranger text plain."""
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    good = {f"{stem}.lora_down.weight": torch.randn(4, 768), f"{stem}.lora_up.weight": torch.randn(320, 4)}
    good[f"{stem}.alpha"] = torch.tensor(2.0)
    tags = json.dumps({"10_zkz star": {"zkz": 3}})
    for epoch in (2, 1):
        save_checkpoint(
            tmp_path / f"zkz-{epoch:06d}.safetensors",
            good,
            {"ss_epoch": str(epoch), "ss_tag_frequency": tags},
        )
    broken = {**good, f"{stem}.lora_up.weight": torch.full((320, 4), float("nan"))}
    save_checkpoint(tmp_path / "[red]x[/red]-000003.safetensors", broken, {})
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    lines = [line for line in text.splitlines() if "zkz-00000" in line]
    assert [line.split()[0] for line in lines] == ["zkz-000001", "zkz-000002"]  # training order
    assert all(
        "kohya" in line and "SD1" in line and "1 lora r4 a2" in line and line.rstrip().endswith("zkz")
        for line in lines
    )
    assert "[red]x[/red]-000003: " in text and "cannot be" in text and "NaN" in text
    assert "3 checkpoints in 2 runs; 1 cannot be evaluated" in " ".join(text.split())
    data = json.loads(runner.invoke(app, ["inspect", str(tmp_path), "--json"]).stdout)
    rows = data["checkpoints"]
    assert [r["label"] for r in rows][:2] == ["zkz-000001", "zkz-000002"]
    assert rows[0] | {"path": None} == {
        "path": None, "label": "zkz-000001", "run": "zkz", "epoch": 1, "step": None, "format": "kohya",
        "base_family": "sd1", "algorithms": ["lora"], "modules": 1, "rank": 4, "alpha": 2.0,
        "trigger": "zkz", "embeddings": [],
    }  # fmt: skip
    assert set(rows[2]) == {"path", "label", "run", "epoch", "step", "error"} and "NaN" in rows[2]["error"]
    assert not (tmp_path / "lorasel").exists()


def test_inspect_an_empty_folder_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("no LoRAs here")
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: no LoRA checkpoints (.safetensors) found under {tmp_path}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_one_module_file_reads_as_one_module(tmp_path):
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {f"{stem}.lora_down.weight": torch.randn(2, 320), f"{stem}.lora_up.weight": torch.randn(320, 2)}
    path = save_checkpoint(tmp_path / "one.safetensors", tensors, {})
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 module (1 lora)" in " ".join(result.stdout.split())


def test_piped_tables_keep_one_row_per_line(tmp_path):
    """Without a terminal Rich assumes 80 columns and folded long checkpoint and module names
    across lines; piped (grep, diff), each row is one line at the table's own width."""
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    tensors = {f"{stem}.lora_down.weight": torch.randn(4, 768), f"{stem}.lora_up.weight": torch.randn(320, 4)}
    name = "my_character_v2_lr1e-4_dim32_alpha16_adamw8bit-000012"  # kohya output names run long
    save_checkpoint(tmp_path / "run" / f"{name}.safetensors", tensors, {"ss_epoch": "12"})
    folder = runner.invoke(app, ["inspect", str(tmp_path / "run")], env={"COLUMNS": "80"})
    assert folder.exit_code == 0, folder.output
    row = next(line for line in folder.stdout.splitlines() if name in line)
    assert row.split()[:2] == [name, "12"] and "1 lora r4" in row
    single = runner.invoke(
        app, ["inspect", str(tmp_path / "run" / f"{name}.safetensors")], env={"COLUMNS": "80"}
    )
    assert single.exit_code == 0, single.output
    row = next(line for line in single.stdout.splitlines() if stem in line)
    assert row.split()[:3] == [stem, "lora", "4"]
