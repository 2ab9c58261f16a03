"""The switch benchmark's files: one of each algorithm lorasel merges, on the layers the benchmark
times; each must read as that algorithm and really change those layers (else the ratio it reports
would time a no-op or a refusal)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.bench_switch import ALGORITHMS, algorithm_file, target_layers
from lorasel.checkpoints import apply, read_checkpoint, restore
from tests.lora_files import (
    one_torch_thread,  # noqa: F401 (autouse fixture)
    shared_pipeline,
)


@pytest.mark.parametrize("algo", ["lora", *ALGORITHMS])
def test_every_algorithm_file_reads_as_itself_and_changes_its_layers(algo, tmp_path):
    unet = shared_pipeline("sd1").unet
    layers = target_layers(unet)
    assert len(layers) >= 6
    checkpoint = read_checkpoint(algorithm_file(layers, algo, tmp_path / f"{algo}.safetensors", seed=1))
    assert checkpoint.algorithms == (algo,)
    assert checkpoint.format == ("kohya" if algo == "lora" else "lycoris")
    before = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    apply(unet, checkpoint, 1.0)
    try:
        changed = {name for name, layer in layers.items() if not torch.equal(layer.weight, before[name])}
    finally:
        restore(unet, release=True)
    assert changed == set(layers)
    assert all(torch.equal(layer.weight, before[name]) for name, layer in layers.items())
