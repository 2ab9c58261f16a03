"""Trigger, class word and reference images: from options, metadata, the dataset, or the set."""

from __future__ import annotations

import json

import pytest

from lorasel.errors import EvaluationError
from lorasel.evaluate.concept import (
    concept_from_metadata,
    dataset_path,
    reference_images,
    resolve_concept,
    safe_text,
    split_folder_name,
)
from lorasel.rundir import RunDir

FREQ = json.dumps({"10_zkz star": {"zkz star": 3}})


def test_folder_name():
    assert split_folder_name("10_zkz star") == ("zkz", "star")
    assert split_folder_name("5_ohwx old man") == ("ohwx", "old man")
    assert split_folder_name("3_zkz") == ("zkz", None)
    assert split_folder_name("images") == (None, None)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"ss_tag_frequency": FREQ}, ("zkz", "star")),
        ({"ss_tag_frequency": FREQ, "modelspec.trigger_phrase": "zkz star"}, ("zkz", "star")),
        ({"modelspec.trigger_phrase": "ohwx"}, ("ohwx", None)),
        ({"ss_tag_frequency": FREQ, "modelspec.trigger_phrase": "sks"}, ("sks", "star")),
        ({"ss_tag_frequency": "not json {"}, (None, None)),
        ({"ss_tag_frequency": json.dumps(["a", "b"])}, (None, None)),
        ({"ss_tag_frequency": "x" * 2_000_000}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_concept_from_metadata(metadata, expected):
    assert concept_from_metadata(metadata) == expected


def test_hostile_metadata_becomes_one_bounded_line():
    text = safe_text("zkz\x1b[31m\n\x00evil" + "a" * 500)
    assert "\n" not in text and "\x1b" not in text and "\x00" not in text
    assert len(text) <= 100
    assert concept_from_metadata({"modelspec.trigger_phrase": "\n\t "}) == (None, None)


def test_resolution_order(tmp_path):
    (tmp_path / "4_dsf cat").mkdir()
    meta = [("c1", {"ss_tag_frequency": FREQ})]
    opts = resolve_concept(
        trigger="abc", class_word=None, metadata=meta, dataset=tmp_path, defaults=("x", "y")
    )
    assert (opts.trigger, opts.class_word) == ("abc", "star")
    from_meta = resolve_concept(
        trigger=None, class_word=None, metadata=meta, dataset=tmp_path, defaults=(None, None)
    )
    assert (from_meta.trigger, from_meta.class_word, from_meta.source) == ("zkz", "star", "metadata of c1")
    from_data = resolve_concept(
        trigger=None, class_word=None, metadata=[], dataset=tmp_path, defaults=(None, "y")
    )
    assert (from_data.trigger, from_data.class_word) == ("dsf", "cat")
    from_set = resolve_concept(
        trigger=None, class_word=None, metadata=[], dataset=None, defaults=(None, "person")
    )
    assert (from_set.trigger, from_set.class_word) == (None, "person")


def test_dataset_path_from_run_toml(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "run.toml").write_text('[dataset]\npath = "data"\n')
    assert dataset_path(RunDir.at(tmp_path)) == tmp_path / "data"
    (tmp_path / "run.toml").write_text("[dataset\n")
    with pytest.raises(EvaluationError, match=r"run\.toml"):
        dataset_path(RunDir.at(tmp_path))


def test_reference_images_skip_state_and_hidden(tmp_path):
    for rel in (
        "10_zkz star/a.png",
        "10_zkz star/b.JPG",
        "lorasel/renders/x.png",
        ".hidden/c.png",
        "notes.txt",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in reference_images(tmp_path)]
    assert found == ["10_zkz star/a.png", "10_zkz star/b.JPG"]
    with pytest.raises(EvaluationError, match="no reference images"):
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        reference_images(tmp_path / "empty")
    with pytest.raises(EvaluationError, match="does not exist"):
        reference_images(tmp_path / "missing")
