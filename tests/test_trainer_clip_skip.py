"""training.clip_skip: the trainer conditions on the CLIP layer kohya's --clip_skip names, says so
in the checkpoints (ss_clip_skip), and the evaluator renders at the same."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from lorasel.errors import ConfigError
from lorasel.evaluate.job import stated_clip_skip
from tests.tiny_models import tiny_sd1_pipeline, tiny_sdxl_pipeline, truncated_text_encoder
from tests.trainer_helpers import make_kohya_dataset, one_torch_thread, small_config  # noqa: F401 (autouse fixture)
from trainer import from_dict, train
from trainer.conditioning import TextConditioner


@pytest.mark.parametrize("skip", [1, 2])
def test_captions_condition_through_the_layer_clip_skip_names(skip):
    pipe = tiny_sd1_pipeline()
    text = TextConditioner(pipe, sdxl=False, cache=True, device=torch.device("cpu"), clip_skip=skip)
    captions = ["zkz star, red", "zkz star on grass"]
    states, pooled = text(captions)
    ids = pipe.tokenizer(captions, padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        want = truncated_text_encoder(pipe.text_encoder, skip)(ids).last_hidden_state
    torch.testing.assert_close(states, want)
    assert pooled is None


def test_a_run_with_clip_skip_2_says_so_and_the_evaluator_reads_it(tmp_path):
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 2})
    config = from_dict(small_config(data, training={"epochs": 1, "clip_skip": 2}))
    result = train(config, output=tmp_path / "run", pipeline=tiny_sd1_pipeline())
    with safe_open(str(result.checkpoints[-1]), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_clip_skip"] == metadata["modelspec.encoder_layer"] == "2"  # as kohya writes it
    assert stated_clip_skip(metadata) == 2


@pytest.mark.parametrize(
    ("clip_skip", "sdxl", "message"),
    [
        (0, False, "training.clip_skip must be >= 1"),
        (2, True, "training.clip_skip applies to SD 1.x and 2.x bases"),
        (6, False, "training.clip_skip 6 is more than the text encoder's 5 layers"),
    ],
)
def test_a_clip_skip_that_does_not_fit_is_one_error_before_any_file(tmp_path, clip_skip, sdxl, message):
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 2})
    with pytest.raises(ConfigError, match=message):
        config = from_dict(small_config(data, training={"epochs": 1, "clip_skip": clip_skip}))
        train(config, output=tmp_path / "run", pipeline=tiny_sdxl_pipeline() if sdxl else tiny_sd1_pipeline())
    assert not (tmp_path / "run" / "checkpoints").exists() or not list(
        (tmp_path / "run" / "checkpoints").iterdir()
    )
