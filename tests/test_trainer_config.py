"""Training configs: presets, TOML round trip, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lorasel.errors import ConfigError
from trainer.config import SECTIONS
from trainer.configfile import describe_fields, from_dict, load_config, parse_override, to_toml
from trainer.presets import preset_names, preset_path


def _write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_presets_load_and_round_trip(tmp_path):
    assert set(preset_names()) >= {"toyworld", "sd15", "sdxl"}
    toy = load_config("toyworld")
    assert toy.model.base == "toy" and toy.dataset.toy_concept and toy.save.every_n_epochs == 1
    assert toy.training.epochs >= 8
    sd15 = load_config("sd15", [f"dataset.path={tmp_path}"])
    assert sd15.dataset.path == str(tmp_path.resolve())
    assert (sd15.dataset.resolution, sd15.training.mixed_precision, sd15.dataset.buckets) == (
        512,
        "fp16",
        True,
    )
    sdxl = load_config("sdxl", [f"dataset.path={tmp_path}"])
    assert sdxl.dataset.resolution == 1024
    for config in (toy, sd15, sdxl):
        again = load_config(_write(tmp_path, to_toml(config)))
        assert again == config


def test_written_toml_has_every_key(tmp_path):
    text = to_toml(load_config("toyworld"))
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in text
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in text, f"{section}.{f.name}"


def test_every_setting_has_help():
    rows = describe_fields()
    assert len(rows) > 40
    assert all(help_text for _, _, help_text in rows), [key for key, _, h in rows if not h]


def test_overrides(tmp_path):
    config = load_config(
        "toyworld",
        ["network.rank=4", "training.learning_rate=2e-4", "model.base=some/model", "network.algo=loha",
         'save.name="my lora"', "validation.timesteps=[10, 20]"],
    )  # fmt: skip
    assert config.network.rank == 4 and config.training.learning_rate == 2e-4
    assert config.model.base == "some/model" and config.network.algo == "loha"
    assert config.save.name == "my lora" and config.validation.timesteps == [10, 20]
    assert parse_override("dataset.path = /data/x") == ("dataset", "path", "/data/x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[network]\nrnak = 4\n", "unknown key network.rnak in"),
        ("[netwrok]\nrank = 4\n", "unknown section or key 'netwrok'"),
        ('[network]\nrank = "8"\n', "network.rank must be an integer"),
        ("[network]\nrank = 0\n", "network.rank must be > 0 (got 0)"),
        ("[network]\nrank = -3\n", "network.rank must be > 0 (got -3)"),
        ("[network]\nalgo = 'lycoris'\n", "network.algo must be one of lora, locon, loha, lokr, dora"),
        ("[network]\nalgo = 'loha'\ndropout = 0.1\n", "network.dropout is not supported by loha"),
        ("[training]\nlearning_rate = 0\n", "training.learning_rate must be > 0"),
        ("[training]\noptimizer = 'sgd'\n", "training.optimizer must be one of"),
        ("[training]\nmixed_precision = true\n", "training.mixed_precision must be a string"),
        ("[dataset]\nresolution = 500\n", "dataset.resolution must be a positive multiple of 8"),
        (
            "[dataset]\nrandom_crop = true\n",
            "dataset.random_crop cannot be combined with training.cache_latents",
        ),
        ("[save]\nname = '../escape'\n", "save.name must be a plain file name"),
        ("[validation]\nsplit = 1.5\n", "validation.split must be in [0, 1)"),
        ("[network\nrank = 4\n", "is not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    path = _write(tmp_path, text + "\n[model]\nbase = 'toy'\n" if "[model]" not in text else text)
    with pytest.raises(ConfigError) as err:
        load_config(path, [f"dataset.path={tmp_path}"])
    assert message in err.value.message
    assert err.value.hint


def test_missing_dataset_and_bad_overrides(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset\.path is not set"):
        from_dict({"model": {"base": "toy"}})
    with pytest.raises(ConfigError, match=r"is not section\.key=value"):
        load_config("toyworld", ["rank8"])
    with pytest.raises(ConfigError, match="unknown section 'net'"):
        load_config("toyworld", ["net.rank=8"])
    with pytest.raises(ConfigError, match="neither a config file nor a preset"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    sub = tmp_path / "project"
    sub.mkdir()
    path = _write(sub, "[dataset]\npath = 'data/set'\n[validation]\npath = '../held'\n")
    config = load_config(path)
    assert config.dataset.path == str((sub / "data" / "set").resolve())
    assert config.validation.path == str((tmp_path / "held").resolve())


def test_preset_lookup_never_treats_paths_as_names():
    assert preset_path("toyworld") is not None
    assert preset_path("toyworld.toml") is None and preset_path("../toyworld") is None


def test_optimizers():
    import torch

    from trainer.config import TrainingConfig
    from trainer.optim import make_optimizer

    groups = lambda: [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1.0}]  # noqa: E731
    assert type(make_optimizer(TrainingConfig(optimizer="prodigy"), groups())).__name__ == "Prodigy"
    assert isinstance(make_optimizer(TrainingConfig(), groups()), torch.optim.AdamW)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="adamw8bit needs a CUDA GPU"):
            make_optimizer(TrainingConfig(optimizer="adamw8bit"), groups())
