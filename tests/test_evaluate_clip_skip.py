"""Clip skip: the CLIP layer that conditions an SD 1.x/2.x UNet, as kohya trains and A1111 renders."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import tests.evaluate_helpers as h
from lorasel.cli import app
from lorasel.errors import EvaluationError
from lorasel.evaluate.job import resolve_clip_skip
from lorasel.evaluate.plan import RenderSettings
from lorasel.evaluate.render import Renderer, make_settings
from tests.tiny_models import truncated_text_encoder

SETTINGS = RenderSettings(
    base="toy", base_fingerprint="f" * 32, scheduler="DDIMScheduler{}", steps=20, guidance=7.0,
    width=64, height=64, negative="", dtype="float32", device_type="cpu",
)  # fmt: skip


def test_clip_skip_1_keeps_every_cached_render_key():
    """The key these settings had before clip skip was a setting (computed then), so renders
    already cached are found; clip skip 2 renders under another key."""
    assert SETTINGS.clip_skip == 1
    assert SETTINGS.key() == "3a4c40055f62fe11fb61a6fde00e8595"
    assert replace(SETTINGS, clip_skip=2).key() != SETTINGS.key()
    assert SETTINGS.cfg_rescale == 0 and replace(SETTINGS, cfg_rescale=0.7).key() != SETTINGS.key()


@pytest.mark.parametrize("skip", [2, 3])
def test_clip_skip_conditions_on_a_layer_before_the_last(skip):
    pipe = h.tiny_pipeline()
    settings = make_settings(
        pipe, base="tiny", steps=2, guidance=5.0, size=(32, 32), negative="blurry", clip_skip=skip
    )
    renderer = Renderer(pipe, settings, [])
    got = renderer._encode("a zkz star on grass")
    ids = pipe.tokenizer(
        ["a zkz star on grass", "blurry"], padding="max_length", return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        want = truncated_text_encoder(pipe.text_encoder, skip)(ids).last_hidden_state
    torch.testing.assert_close(got["prompt_embeds"], want[:1])
    torch.testing.assert_close(got["negative_prompt_embeds"], want[1:])
    plain = Renderer(pipe, replace(settings, clip_skip=1), [])._encode("a zkz star on grass")
    assert not torch.allclose(plain["prompt_embeds"], got["prompt_embeds"])


def _pipe(layers: int = 12, sdxl: bool = False):
    encoder = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=layers))
    return SimpleNamespace(text_encoder=encoder, text_encoder_2=encoder if sdxl else None)


def _infos(*values):
    """Checkpoints stating these clip skips: a string as kohya's ``ss_clip_skip``, a dict as it is."""
    return [SimpleNamespace(metadata=v if isinstance(v, dict) else {"ss_clip_skip": v}) for v in values]


@pytest.mark.parametrize(
    ("given", "stated", "sdxl", "expected", "warned"),
    [
        (None, ["2", "2"], False, (2, "metadata"), False),
        (None, ["None", {}], False, (1, ""), False),  # kohya writes "None" when not set
        (
            None,
            [{"modelspec.encoder_layer": "2"}, {"ss_clip_skip": "None", "modelspec.encoder_layer": "2"}],
            False,
            (2, "metadata"),
            False,
        ),  # Stability's key for it
        (None, ["2", "2", "1"], False, (2, "metadata"), True),
        (None, ["1", "2"], False, (1, "metadata"), True),  # a tie: the smaller, SD's own
        (None, ["2", "99", "x"], False, (2, "metadata"), False),  # impossible values are ignored
        (None, ["2"], True, (1, ""), False),  # SDXL: kohya ignores clip skip, so does lorasel
        (3, ["2"], False, (3, "option"), False),
        (1, ["2"], True, (1, "option"), False),
    ],
)
def test_clip_skip_comes_from_the_option_else_kohyas_metadata(given, stated, sdxl, expected, warned):
    warnings = []
    assert resolve_clip_skip(given, _infos(*stated), _pipe(sdxl=sdxl), warnings.append) == expected
    assert bool(warnings) == warned
    if warned:
        assert "different clip skips" in warnings[0]


@pytest.mark.parametrize(
    ("given", "sdxl", "message"),
    [(13, False, "more than the text encoder's 12 layers"), (2, True, "applies to SD 1.x and 2.x bases")],
)
def test_impossible_clip_skips_are_one_error(given, sdxl, message):
    with pytest.raises(EvaluationError, match=message):
        resolve_clip_skip(given, [], _pipe(sdxl=sdxl), print)


runner = CliRunner()
FAST = h.FAST_EVAL


@pytest.fixture
def run(tmp_path, monkeypatch):
    return h.one_checkpoint_run(
        tmp_path,
        monkeypatch,
        {
            "ss_epoch": "1",
            "ss_output_name": "zkz",
            "ss_clip_skip": "2",
            "modelspec.trigger_phrase": "zkz star",
        },
    )


def test_eval_renders_at_the_clip_skip_the_checkpoints_were_trained_with(run):
    from PIL import Image

    from lorasel.evaluate import load_results

    args = ["eval", str(run), "--prompts", str(run.parent / "prompts.toml"), *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "clip skip 2 (metadata)" in result.stderr
    results = load_results(run)
    assert results.settings["clip_skip"] == 2
    image = run / "lorasel" / results.renders.image.iloc[0]
    assert "Clip skip: 2" in Image.open(image).text["parameters"]
    # --clip-skip 1 is another setting: everything is rendered again, under other keys.
    again = runner.invoke(app, [*args, "--clip-skip", "1"])
    assert again.exit_code == 0, again.output
    assert "0 of " in again.stderr and "; clip skip" not in again.stderr  # the plan line's
    assert "rendered with clip skip 2 (now 1): its renders are not reused; pass --clip-skip 2" in again.stderr
    assert load_results(run).settings["clip_skip"] == 1


def test_a_bad_clip_skip_is_one_line(run):
    result = runner.invoke(
        app, ["eval", str(run), "--prompts", str(run.parent / "prompts.toml"), *FAST, "--clip-skip", "0"]
    )
    assert result.exit_code == 2
    assert (
        result.stderr.startswith("error: clip skip must be a whole number ≥ 1, not 0")
        and "(hint: " in result.stderr
    )
    assert not (run / "lorasel").exists() or not list((run / "lorasel").rglob("*.png"))
