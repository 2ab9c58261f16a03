"""Textual-inversion embeddings bundled into a LoRA (pivotal tuning: kohya's and A1111's
``bundle_emb.<name>.string_to_param.*`` / ``.clip_l`` / ``.clip_g``, OneTrainer's), against
diffusers' own loaders: ``load_lora_weights`` + ``fuse_lora`` for the LoRA and
``load_textual_inversion`` for the embedding, on the same tiny pipelines.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lorasel.checkpoints import apply, read_checkpoint, restore, save_checkpoint
from lorasel.cli import app
from lorasel.errors import CheckpointError
from lorasel.evaluate.render import pipeline_fingerprint
from tests.lora_files import (
    kohya_lora,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    render_small,
    shared_pipeline,
)

PROMPT = "a photo of ohwx"


def _width(encoder) -> int:
    return encoder.get_input_embeddings().weight.shape[1]


def _vectors(pipe, count: int = 2, seed: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"text_encoder": torch.randn(count, _width(pipe.text_encoder), generator=g)}
    if getattr(pipe, "text_encoder_2", None) is not None:
        out["text_encoder_2"] = torch.randn(count, _width(pipe.text_encoder_2), generator=g)
    return out


def _bundle(vectors: dict[str, torch.Tensor], sdxl: bool, name: str = "ohwx") -> dict[str, torch.Tensor]:
    if not sdxl:  # A1111's SD 1.x embedding layout, as kohya bundles it
        return {f"bundle_emb.{name}.string_to_param.*": vectors["text_encoder"]}
    return {
        f"bundle_emb.{name}.clip_l": vectors["text_encoder"],
        f"bundle_emb.{name}.clip_g": vectors["text_encoder_2"],
    }


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_bundled_embeddings_render_as_diffusers_loads_them(family, tmp_path):
    pipe, ref = shared_pipeline(family), shared_pipeline(f"{family}-ref")
    sdxl = family == "sdxl"
    lora = kohya_lora(pipe, rank=4, alpha=2.0, sgm=sdxl, seed=3)
    save_checkpoint(tmp_path / "lora.safetensors", lora)
    vectors = _vectors(pipe)
    checkpoint = read_checkpoint(
        save_checkpoint(tmp_path / "bundled.safetensors", {**lora, **_bundle(vectors, sdxl)})
    )
    assert checkpoint.trigger == "ohwx"  # no metadata: the embedding's name prompts it
    assert {c: v.shape[0] for c, v in checkpoint.embeddings["ohwx"].items()} == {c: 2 for c in vectors}
    tokenizers = [pipe.tokenizer, *([pipe.tokenizer_2] if sdxl else [])]
    sizes = [len(t) for t in tokenizers]
    fingerprint = pipeline_fingerprint(pipe)
    base = render_small(pipe, PROMPT)
    components = ["unet", "text_encoder", *(["text_encoder_2"] if sdxl else [])]
    try:
        apply(pipe, read_checkpoint(tmp_path / "lora.safetensors"), 0.75)
        lora_alone = render_small(pipe, PROMPT)
        apply(pipe, checkpoint, 0.75)
        assert [len(t) for t in tokenizers] == [n + 2 for n in sizes]
        ours = render_small(pipe, PROMPT)
        ref.load_lora_weights(str(tmp_path), weight_name="lora.safetensors", adapter_name="x")
        ref.fuse_lora(components=components, lora_scale=0.75)
        pairs = [(ref.tokenizer, ref.text_encoder, "text_encoder")]
        if sdxl:
            pairs.append((ref.tokenizer_2, ref.text_encoder_2, "text_encoder_2"))
        for tokenizer, encoder, name in pairs:
            ref.load_textual_inversion(vectors[name], token="ohwx", tokenizer=tokenizer, text_encoder=encoder)
        try:
            theirs = render_small(ref, PROMPT)
        finally:
            ref.unfuse_lora(components=components)
            ref.unload_lora_weights()
            for tokenizer, encoder, _ in pairs:
                ref.unload_textual_inversion(
                    tokens=["ohwx", "ohwx_1"], tokenizer=tokenizer, text_encoder=encoder
                )
        np.testing.assert_allclose(ours, theirs, atol=2e-4)
        assert np.abs(ours - lora_alone).max() > 2e-3  # the embedding changes the image (10x the tolerance)
    finally:
        restore(pipe, release=True)
    assert [len(t) for t in tokenizers] == sizes and pipeline_fingerprint(pipe) == fingerprint
    np.testing.assert_array_equal(render_small(pipe, PROMPT), base)


@pytest.mark.parametrize("part", ["string_to_param.*", "emb_params", "clip_l"])
def test_sd1_embedding_layouts_read_alike(tmp_path, part):
    """A1111's, kohya's and OneTrainer's keys for an SD 1.x embedding: the same vectors for the
    one text encoder."""
    pipe = shared_pipeline("sd1")
    lora = kohya_lora(pipe, rank=2, seed=1, only=r"to_q$", text=False)
    vectors = torch.randn(3, _width(pipe.text_encoder))
    checkpoint = read_checkpoint(
        save_checkpoint(tmp_path / "x.safetensors", {**lora, f"bundle_emb.ohwx.{part}": vectors})
    )
    assert list(checkpoint.embeddings) == ["ohwx"] and list(checkpoint.embeddings["ohwx"]) == ["text_encoder"]
    assert torch.equal(checkpoint.embeddings["ohwx"]["text_encoder"], vectors)


def test_embeddings_stay_across_strengths_and_leave_with_the_checkpoint(tmp_path):
    pipe = shared_pipeline("sd1")
    lora = kohya_lora(pipe, rank=2, seed=1, only=r"to_q$")
    first = read_checkpoint(
        save_checkpoint(tmp_path / "a.safetensors", {**lora, **_bundle(_vectors(pipe, 3), False)})
    )
    second = read_checkpoint(save_checkpoint(tmp_path / "b.safetensors", lora))
    size, plain = len(pipe.tokenizer), pipe.tokenizer("ohwx").input_ids
    try:
        apply(pipe, first, 0.5)
        assert pipe.maybe_convert_prompt(PROMPT, pipe.tokenizer) == "a photo of ohwx ohwx_1 ohwx_2"
        apply(pipe, first, 1.0)
        assert len(pipe.tokenizer) == size + 3
        apply(pipe, second, 1.0)  # a checkpoint without the embedding: "ohwx" is plain text again
        assert len(pipe.tokenizer) == size and pipe.tokenizer("ohwx").input_ids == plain
    finally:
        restore(pipe, release=True)


def test_sdxl_pools_at_the_end_of_the_prompt_with_an_old_config(tmp_path):
    """SDXL's configs say eos_token_id 2 (from before transformers#24773), and CLIP then pools at the
    largest token id, a new token's. While embeddings are tokens, the real end is used, as A1111 and
    ComfyUI pool; the model is given its own setting back on restore."""
    pipe = shared_pipeline("sdxl")
    encoder, tokenizer = pipe.text_encoder_2, pipe.tokenizer_2
    lora = kohya_lora(pipe, rank=2, seed=1, only=r"to_q$", text=False, sgm=True)
    checkpoint = read_checkpoint(
        save_checkpoint(tmp_path / "x.safetensors", {**lora, **_bundle(_vectors(pipe), True)})
    )
    own = encoder.text_model.eos_token_id
    encoder.text_model.eos_token_id = 2
    try:
        apply(pipe, checkpoint, 1.0)
        ids = tokenizer(pipe.maybe_convert_prompt(PROMPT, tokenizer), return_tensors="pt").input_ids
        with torch.no_grad():
            out = encoder(ids)
        end = int((ids[0] == tokenizer.eos_token_id).nonzero()[0])
        assert int(ids[0].argmax()) != end  # the new token has the largest id
        with torch.no_grad():
            expected = encoder.text_projection(out.last_hidden_state[0, end])
        torch.testing.assert_close(out.text_embeds[0], expected)
        restore(pipe)
        assert encoder.text_model.eos_token_id == 2
    finally:
        encoder.text_model.eos_token_id = own
        restore(pipe, release=True)


def test_inspect_names_the_bundled_embedding(tmp_path):
    pipe = shared_pipeline("sdxl")
    lora = kohya_lora(pipe, rank=2, seed=1, only=r"to_q$", text=False, sgm=True)
    metadata = {"ss_tag_frequency": json.dumps({"10_zkz star": {"zkz": 3}})}
    file = save_checkpoint(
        tmp_path / "x.safetensors", {**lora, **_bundle(_vectors(pipe, 1), True, "<emb>")}, metadata
    )
    result = CliRunner().invoke(app, ["inspect", str(file)])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    # The metadata's trigger is not the embedding: the embedding's name prompts the LoRA.
    assert "trigger '<emb>' (class 'star')" in text
    assert "bundles the embedding '<emb>' (1 vector)" in text and "trains the text encoder" not in text
    info = json.loads(CliRunner().invoke(app, ["inspect", str(file), "--json"]).stdout)
    assert info["embeddings"] == {"<emb>": {"text_encoder": [1, 32], "text_encoder_2": [1, 32]}}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("bundle_emb.ohwx.clip_l_out", torch.zeros(1, 32), "bundles an output embedding"),
        ("bundle_emb.ohwx.t5", torch.zeros(1, 32), "is not a bundled embedding lorasel knows"),
        ("bundle_emb.ohwx.clip_l", torch.zeros(1, 2, 32), "has shape [1, 2, 32], not [vectors, width]"),
        ("bundle_emb.ohwx.clip_l", torch.full((1, 32), float("nan")), "NaN"),
    ],
)
def test_bad_bundled_embeddings_are_one_line(tmp_path, key, value, message):
    lora = kohya_lora(shared_pipeline("sd1"), rank=2, seed=1, only=r"to_q$", text=False)
    file = save_checkpoint(tmp_path / "x.safetensors", {**lora, key: value})
    with pytest.raises(CheckpointError, match=None) as caught:
        read_checkpoint(file)
    assert message in str(caught.value) and str(file) in str(caught.value)
    result = CliRunner().invoke(app, ["inspect", str(file)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "width", "message"),
    [("ohwx", 48, "is 48 wide; the base's text_encoder takes 32"), ("<|endoftext|>", 32, "already a token")],
)
def test_embeddings_that_do_not_fit_the_base_leave_it_untouched(tmp_path, name, width, message):
    pipe = shared_pipeline("sd1")
    lora = kohya_lora(pipe, rank=2, seed=1, only=r"to_q$", text=False)
    vectors = {"text_encoder": torch.randn(1, width)}
    checkpoint = read_checkpoint(
        save_checkpoint(tmp_path / "x.safetensors", {**lora, **_bundle(vectors, False, name)})
    )
    fingerprint, size = pipeline_fingerprint(pipe), len(pipe.tokenizer)
    try:
        with pytest.raises(CheckpointError) as caught:
            apply(pipe, checkpoint, 1.0)
        assert message in str(caught.value)
        assert pipeline_fingerprint(pipe) == fingerprint and len(pipe.tokenizer) == size
    finally:
        restore(pipe, release=True)


def test_eval_renders_a_bundled_embedding_only_where_a_prompt_names_it(tmp_path, monkeypatch):
    """Through ``lorasel eval``: the same LoRA without (epoch 1) and with (epoch 2) a bundled
    embedding. The trigger is the embedding's name; prompts naming it render differently with the
    embedding, prompts that do not are the same pixels; the base is left as it was."""
    from PIL import Image

    import tests.evaluate_helpers as h
    from lorasel.evaluate import load_results

    root = h.one_checkpoint_run(tmp_path, monkeypatch, {"ss_epoch": "1"})
    pipe = h.tiny_pipeline()
    vectors = {
        "text_encoder": torch.randn(2, _width(pipe.text_encoder), generator=torch.Generator().manual_seed(3))
    }
    save_checkpoint(
        root / "checkpoints" / "zkz-000002.safetensors",
        {**h.lora_tensors(1, 1.0), **_bundle(vectors, False)},
        {"ss_epoch": "2"},
    )
    size = len(pipe.tokenizer)
    args = ["eval", str(root), "--prompts", str(tmp_path / "prompts.toml"), "--class", "star", *h.FAST_EVAL]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trigger 'ohwx'" in result.stderr
    assert len(pipe.tokenizer) == size  # the base's tokenizer, as it was
    renders = load_results(root).renders
    pixels = {}
    for row in renders[renders.checkpoint != "base"].itertuples():
        pixels[(Path(row.checkpoint).stem, row.kind)] = np.asarray(
            Image.open(root / "lorasel" / row.image), dtype=np.int16
        )
    for kind in ("in_domain", "trigger", "out_of_domain"):
        assert np.abs(pixels[("zkz-000001", kind)] - pixels[("zkz-000002", kind)]).max() > 1, kind
    np.testing.assert_array_equal(pixels[("zkz-000001", "unrelated")], pixels[("zkz-000002", "unrelated")])
    # pick says whether the chosen file bundles an embedding (to be written in the prompt)
    picked = json.loads(CliRunner().invoke(app, ["pick", str(root), "--json"]).stdout)
    bundles = Path(picked["checkpoint"]).stem == "zkz-000002"
    assert picked["embeddings"] == (["ohwx"] if bundles else [])
    text = " ".join(CliRunner().invoke(app, ["pick", str(root)]).stdout.split())
    assert ("embedding 'ohwx' bundled in the file: write it in the prompt" in text) == bundles


def test_an_embedding_diffusers_refuses_is_one_error_and_leaves_the_base(tmp_path):
    """``ohwx_1`` taken by the base's tokenizer: diffusers refuses to add a 2-vector ``ohwx``; that is
    a CheckpointError (one line in ``lorasel eval``), and the base is left as it was."""
    pipe = shared_pipeline("sd1")
    lora = kohya_lora(pipe, rank=2, seed=1, only=r"to_q$", text=False)
    checkpoint = read_checkpoint(
        save_checkpoint(tmp_path / "x.safetensors", {**lora, **_bundle(_vectors(pipe, 2), False)})
    )
    own = pipe.tokenizer
    pipe.tokenizer = copy.deepcopy(own)  # the shared pipeline's own tokenizer stays as it is
    pipe.tokenizer.add_tokens(["ohwx_1"])
    try:
        fingerprint, size = pipeline_fingerprint(pipe), len(pipe.tokenizer)
        with pytest.raises(CheckpointError, match="cannot add the bundled embedding 'ohwx'"):
            apply(pipe, checkpoint, 1.0)
        assert pipeline_fingerprint(pipe) == fingerprint and len(pipe.tokenizer) == size
    finally:
        restore(pipe, release=True)
        pipe.tokenizer = own
