"""peft adapters → kohya / LyCORIS files: the file's ΔW, computed with the `lycoris-lora`
package's maths and each tool's γ convention, equals peft's own ΔW for every algorithm."""

from __future__ import annotations

import pytest
import torch
from lycoris.functional import locon as ly_locon
from lycoris.functional import loha as ly_loha
from lycoris.functional import lokr as ly_lokr
from lycoris.functional.general import weight_decompose
from peft import inject_adapter_in_model
from safetensors import safe_open
from torch import nn

from lorasel.checkpoints.write import save_checkpoint
from tests.tiny_models import tiny_sd1_pipeline
from tests.trainer_helpers import one_torch_thread  # noqa: F401 (autouse fixture)
from trainer.config import NetworkConfig
from trainer.export import adapter_layers, export_tensors, module_stem
from trainer.network import ADAPTER, add_network, peft_config


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 24)
        self.conv = nn.Conv2d(8, 12, 3, padding=1)
        self.point = nn.Conv2d(8, 12, 1)


def _randomise(model: nn.Module, seed: int = 0) -> None:
    """peft initialises one factor to zero (ΔW = 0): make every adapter tensor non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                noise = torch.randn(param.shape, generator=gen) * 0.3
                param.copy_(param + noise if "magnitude" in name else noise)


def _lycoris_delta(t: dict[str, torch.Tensor], stem: str, base: torch.Tensor) -> torch.Tensor:
    """ΔW of one module from the file's tensors: LyCORIS maths, γ as A1111 / ComfyUI apply it."""
    alpha = float(t[f"{stem}.alpha"])
    if f"{stem}.hada_w1_a" in t:
        w1b = t[f"{stem}.hada_w1_b"]
        delta = ly_loha.diff_weight(
            w1b,
            t[f"{stem}.hada_w1_a"],
            t[f"{stem}.hada_w2_b"],
            t[f"{stem}.hada_w2_a"],
            t.get(f"{stem}.hada_t1"),
            t.get(f"{stem}.hada_t2"),
            gamma=alpha / w1b.shape[0],
            backend="torch",
        )
    elif any(k.startswith(f"{stem}.lokr_") for k in t):
        parts = {k: t.get(f"{stem}.lokr_{k}") for k in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2")}
        if parts["w1"] is not None and parts["w2"] is not None:
            gamma = 1.0  # both factors full: every reader ignores alpha
        else:
            rank = (parts["w1_b"] if parts["w1"] is None else parts["w2_b"]).shape[0]
            gamma = alpha / rank
        delta = ly_lokr.kron_weight(*parts.values(), scale=gamma, backend="torch")
    else:
        down, up = t[f"{stem}.lora_down.weight"], t[f"{stem}.lora_up.weight"]
        delta = ly_locon.diff_weight(down, up, None, gamma=alpha / down.shape[0], backend="torch")
        if f"{stem}.dora_scale" in t:
            merged = weight_decompose(
                base + delta.reshape(base.shape), t[f"{stem}.dora_scale"], 1, True, backend="torch"
            )
            return merged - base
    return delta.reshape(base.shape)


def _peft_delta(layer) -> torch.Tensor:
    """peft's full-strength change of the base weight (merge for DoRA, which is not additive)."""
    base = layer.get_base_layer().weight
    if getattr(layer, "lora_magnitude_vector", None) and ADAPTER in layer.lora_magnitude_vector:
        before = base.detach().clone()
        layer.merge(adapter_names=[ADAPTER])
        after = base.detach().clone()
        layer.unmerge()
        return after - before
    return layer.get_delta_weight(ADAPTER).detach()


def _check_file_matches_peft(models: dict[str, nn.Module], tmp_path, **export_kwargs) -> int:
    path = save_checkpoint(tmp_path / "net.safetensors", export_tensors(models, **export_kwargs), {})
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    checked = 0
    used: set[str] = set()
    for role, model in models.items():
        prefix = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[role]
        for name, layer, _ in adapter_layers(model):
            stem = module_stem(prefix, role, name)
            base = layer.get_base_layer().weight.detach().clone()
            expected = _peft_delta(layer)
            got = _lycoris_delta(tensors, stem, base)
            assert expected.abs().max() > 1e-3, f"{stem}: vacuous test, ΔW is zero"
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"{stem}")
            used |= {k for k in tensors if k.startswith(stem + ".")}
            checked += 1
    assert used == set(tensors), f"keys no module accounts for: {sorted(set(tensors) - used)[:5]}"
    return checked


CASES = {
    "lora": {"algo": "lora", "rank": 4, "alpha": 2.0},
    "locon-patterns": {"algo": "locon", "rank": 4, "alpha": 3.0, "conv_rank": 2, "conv_alpha": 1.0},
    "lora-rslora": {"algo": "lora", "rank": 4, "alpha": 2.0, "rslora": True},
    "dora": {"algo": "dora", "rank": 4, "alpha": 8.0, "targets": "full"},
    "loha": {"algo": "loha", "rank": 4, "alpha": 2.0, "targets": "full"},
    "loha-tucker": {"algo": "loha", "rank": 3, "alpha": 2.0, "targets": "full", "tucker": True},
    "lokr-factored": {"algo": "lokr", "rank": 2, "alpha": 3.0, "targets": "full", "decompose_factor": 4},
    "lokr-both-factored": {
        "algo": "lokr",
        "rank": 2,
        "alpha": 3.0,
        "targets": "full",
        "decompose_factor": 4,
        "decompose_both": True,
    },
    "lokr-full": {"algo": "lokr", "rank": 64, "alpha": 3.0, "targets": "full"},
    "lokr-tucker": {
        "algo": "lokr",
        "rank": 2,
        "alpha": 3.0,
        "targets": "full",
        "tucker": True,
        "decompose_factor": 4,
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_small_module_export_matches_peft(case, tmp_path):
    config = NetworkConfig(**CASES[case])
    model = Small()
    conv_targets = ["conv"] if config.trains_convs else []
    inject_adapter_in_model(
        peft_config(config, ["lin", "point", *conv_targets], conv_targets), model, ADAPTER
    )
    _randomise(model)
    assert _check_file_matches_peft({"unet": model}, tmp_path) == 2 + len(conv_targets)


def test_lokr_with_both_factors_full_writes_alpha_equal_rank(tmp_path):
    model = Small()
    config = NetworkConfig(algo="lokr", rank=64, alpha=3.0)
    inject_adapter_in_model(peft_config(config, ["lin"], []), model, ADAPTER)
    _randomise(model)
    tensors = export_tensors({"unet": model})
    assert "lora_unet_lin.lokr_w1" in tensors and "lora_unet_lin.lokr_w2" in tensors
    assert float(tensors["lora_unet_lin.alpha"]) == 64.0  # γ = 1 whatever the reader does
    # and peft's alpha / r = 3/64 went into w1
    torch.testing.assert_close(tensors["lora_unet_lin.lokr_w1"], model.lin.lokr_w1[ADAPTER].detach() * 3 / 64)


def test_alpha_pattern_and_rslora_give_trained_scale():
    model = Small()
    config = NetworkConfig(algo="locon", rank=4, alpha=3.0, conv_rank=2, conv_alpha=1.0, rslora=True)
    inject_adapter_in_model(peft_config(config, ["lin", "conv"], ["conv"]), model, ADAPTER)
    tensors = export_tensors({"unet": model})
    assert tensors["lora_unet_conv.lora_down.weight"].shape[0] == 2
    for stem, scale in (("lin", 3.0 / 4**0.5), ("conv", 1.0 / 2**0.5)):
        rank = tensors[f"lora_unet_{stem}.lora_down.weight"].shape[0]
        assert float(tensors[f"lora_unet_{stem}.alpha"]) / rank == pytest.approx(scale)


def test_text_encoder_stems_are_kohya_names():
    # transformers 5 drops the text_model. prefix from module names; kohya keys keep it.
    assert module_stem("lora_te_", "text_encoder", "encoder.layers.0.self_attn.q_proj") == (
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    )
    assert module_stem("lora_te_", "text_encoder", "text_model.encoder.layers.0.mlp.fc1") == (
        "lora_te_text_model_encoder_layers_0_mlp_fc1"
    )
    assert module_stem("lora_unet_", "unet", "mid_block.attentions.0.proj_in") == (
        "lora_unet_mid_block_attentions_0_proj_in"
    )


@pytest.mark.parametrize("algo", ["dora", "loha", "lokr"])
def test_tiny_unet_and_text_encoder_files_match_peft(algo, tmp_path):
    """Every adapted module of a real (tiny) SD1 UNet + CLIP, convs included, read back from the file."""
    pipe = tiny_sd1_pipeline()
    config = NetworkConfig(algo=algo, rank=4, alpha=2.0, targets="full", train_text_encoder=True)
    network = add_network(pipe, config)
    for model in network.models.values():
        _randomise(model, seed=1)
    checked = _check_file_matches_peft(network.models, tmp_path, dtype=torch.float32)
    assert checked == len(network.targets["unet"]) + len(network.targets["text_encoder"])


@pytest.mark.parametrize("algo", ["locon", "dora", "loha", "lokr"])
def test_checkpoint_reader_reads_the_files_as_peft_trained_them(algo, tmp_path):
    """lorasel's own reader (lorasel.checkpoints) gives every module the ΔW peft applies."""
    from lorasel.checkpoints import module_delta, read_checkpoint
    from lorasel.checkpoints.deltas import dora_delta

    pipe = tiny_sd1_pipeline()
    network = add_network(
        pipe, NetworkConfig(algo=algo, rank=4, alpha=2.0, targets="full", train_text_encoder=True)
    )
    for model in network.models.values():
        _randomise(model, seed=2)
    path = save_checkpoint(
        tmp_path / "x.safetensors", export_tensors(network.models), {"ss_base_model_version": "sd_v1"}
    )
    checkpoint = read_checkpoint(path)
    assert checkpoint.base_family == "sd1" and checkpoint.format in ("kohya", "lycoris")
    by_name = {m.name: m for m in checkpoint.modules}
    count = 0
    for role, model in network.models.items():
        prefix = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[role]
        for name, layer, _ in adapter_layers(model):
            module = by_name[module_stem(prefix, role, name)]
            base = layer.get_base_layer().weight.detach()
            delta = module_delta(module).reshape(base.shape)
            if module.algo == "dora":
                delta = dora_delta(base, delta, module.dora_scale, module.dora_on_output)
            torch.testing.assert_close(delta, _peft_delta(layer), rtol=1e-4, atol=1e-5, msg=module.name)
            count += 1
    assert count == len(by_name) == sum(len(t) for t in network.targets.values())
