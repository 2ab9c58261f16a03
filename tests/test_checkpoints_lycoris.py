"""LoHa, LoKr, Tucker and DoRA files made by the ``lycoris-lora`` package, against its own maths.

Reference: LyCORIS' functional ``diff_weight``/``kron_weight`` with the module's own γ
(applied once: the training forward's meaning, not ``get_diff_weight``'s double γ), and
the output of the LyCORIS-wrapped UNet itself.
"""

from __future__ import annotations

import pytest
import torch
from lycoris.functional import lokr as lycoris_lokr

from lorasel.checkpoints import apply, module_delta, read_checkpoint, restore
from lorasel.checkpoints.deltas import lokr_delta
from tests.lora_files import (
    lycoris_network,
    lycoris_reference_delta,
    merged_forward,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    randomise_lycoris,
    render_small,
    shared_pipeline,
    unet_forward,
    unet_inputs,
)

CASES = {
    "locon": ("locon", {}),
    "locon-tucker": ("locon", {"use_tucker": True}),
    "loha": ("loha", {}),
    "loha-tucker": ("loha", {"use_tucker": True}),
    "lokr-w1-full-w2-factored": ("lokr", {}),
    "lokr-both-factored": ("lokr", {"decompose_both": True, "dim": 1}),
    "lokr-both-full": ("lokr", {"full_matrix": True}),
    "lokr-tucker": ("lokr", {"use_tucker": True}),
    "dora-output-rows": ("locon", {"dora_wd": True}),
    "dora-input-columns": ("locon", {"dora_wd": True, "wd_on_output": False}),
    "dora-loha": ("loha", {"dora_wd": True}),
    "full": ("full", {}),
    "locon-train-norm": ("locon", {"train_norm": True}),
    "lokr-train-norm": ("lokr", {"train_norm": True}),
}
EXPECTED_ALGOS = {
    "locon": {"lora", "locon"},
    "locon-tucker": {"lora", "lora_tucker"},
    "loha": {"loha"},
    "loha-tucker": {"loha"},
    "lokr-w1-full-w2-factored": {"lokr"},
    "lokr-both-factored": {"lokr"},
    "lokr-both-full": {"lokr"},
    "lokr-tucker": {"lokr"},
    "dora-output-rows": {"dora"},
    "dora-input-columns": {"dora"},
    "dora-loha": {"dora"},
    "full": {"full"},
    "locon-train-norm": {"lora", "locon", "norm"},
    "lokr-train-norm": {"lokr", "norm"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_lycoris_file_matches_lycoris(case, tmp_path):
    algo, kwargs = CASES[case]
    kwargs = dict(kwargs)
    dim = kwargs.pop("dim", 2)
    unet = shared_pipeline("sd1").unet
    inputs = unet_inputs()
    base_out = unet_forward(unet, inputs)
    net = lycoris_network(unet, algo, dim=dim, alpha=1.5, seed=hash(case) % 1000, **kwargs)
    try:
        lycoris_out = unet_forward(unet, inputs)  # LyCORIS' own forward at multiplier 1
        file = tmp_path / f"{case}.safetensors"
        net.save_weights(str(file), torch.float32, {"ss_network_module": "lycoris.kohya"})
        loras = {lora.lora_name: lora for lora in net.loras}
        references = {name: lycoris_reference_delta(lora) for name, lora in loras.items()}
    finally:
        net.restore()

    checkpoint = read_checkpoint(file)
    assert checkpoint.format == "lycoris"
    assert set(checkpoint.algorithms) == EXPECTED_ALGOS[case]
    assert {m.name for m in checkpoint.modules} == set(loras)
    for module in checkpoint.modules:
        lora = loras[module.name]
        assert module.scale == pytest.approx(getattr(lora, "scale", 1.0))  # full-rank ΔW: γ = 1
        ours = module_delta(module)
        ref = references[module.name]
        torch.testing.assert_close(ours.reshape(ref.shape), ref, rtol=1e-5, atol=1e-6)
        if module.algo in ("full", "norm"):  # and the bias, where the layer has one
            ref_bias = lora.get_diff_weight(1)[1]
            assert (module.bias_delta is None) == (ref_bias is None or not torch.is_tensor(ref_bias))
            if module.bias_delta is not None:
                torch.testing.assert_close(module.bias_delta.float(), ref_bias.detach().float())
        if module.algo == "dora":
            assert module.dora_on_output == lora.wd_on_out

    merged_out = merged_forward(unet, checkpoint, 1.0, inputs)
    assert not torch.allclose(lycoris_out, base_out, atol=1e-3)  # the LoRA does something
    torch.testing.assert_close(merged_out, lycoris_out, rtol=1e-4, atol=1e-4)
    assert torch.equal(unet_forward(unet, inputs), base_out)


LOKR_LAYOUTS = [
    (w1_factored, w2_form, conv)
    for w1_factored in (False, True)
    for w2_form in ("full", "factored", "tucker")
    for conv in (False, True)
    if conv or w2_form != "tucker"  # Tucker cores exist for convolutions only
]


@pytest.mark.parametrize(("w1_factored", "w2_form", "conv"), LOKR_LAYOUTS)
def test_lokr_every_factor_combination_matches_lycoris_maths(w1_factored, w2_form, conv):
    """All W1 × W2 layouts, including the ones LyCORIS' own network builder never picks."""
    gen = torch.Generator().manual_seed(7)
    rand = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    a, c, b, d, r, k = 3, 2, 4, 5, 2, (3, 3)
    f = {"w1": None, "w1a": None, "w1b": None, "w2": None, "w2a": None, "w2b": None, "t2": None}
    if w1_factored:
        f["w1a"], f["w1b"] = rand(a, r), rand(r, c)
    else:
        f["w1"] = rand(a, c)
    if w2_form == "full":
        f["w2"] = rand(b, d, *k) if conv else rand(b, d)
    elif w2_form == "factored":
        f["w2a"], f["w2b"] = rand(b, r), (rand(r, d * 9) if conv else rand(r, d))
    else:
        f["t2"], f["w2a"], f["w2b"] = rand(r, r, *k), rand(r, b), rand(r, d)
    gamma = 0.75
    ours = lokr_delta(**f, scale=gamma)
    ref = lycoris_lokr.kron_weight(*f.values(), scale=gamma)
    shape = (a * b, c * d, *k) if conv else (a * b, c * d)
    torch.testing.assert_close(ours.reshape(shape), ref.reshape(shape), rtol=1e-5, atol=1e-6)


def test_lycoris_kohya_network_renders_like_lycoris(tmp_path, monkeypatch):
    """A LoHa made by LyCORIS' kohya wrapper (``lora_unet_``/``lora_te_`` keys, UNet + text encoder,
    convs, conv_in/conv_out, time embedding): the merged pipeline renders what LyCORIS' own hooks render."""
    import logging

    from lycoris.config import PRESET
    from lycoris.kohya import create_network
    from lycoris.logging import logger

    logger.setLevel(logging.ERROR)
    pipe = shared_pipeline("sd1")
    base = render_small(pipe)
    # lycoris-lora 4.1.3's "full" preset names the time embedding both by class and by path, a
    # duplicate it then rejects; the same preset with the class only.
    monkeypatch.setitem(
        PRESET, "lorasel-test", {**PRESET["full"], "unet_target_name": ["conv_in", "conv_out"]}
    )
    net = create_network(
        1.0, 2, 1.0, pipe.vae, pipe.text_encoder, pipe.unet, algo="loha", conv_dim=2, preset="lorasel-test"
    )
    net.apply_to(pipe.text_encoder, pipe.unet, True, True)
    randomise_lycoris(net, seed=5, std=0.35)
    file = tmp_path / "loha.safetensors"
    try:
        theirs = render_small(pipe)
        net.save_weights(str(file), torch.float32, {"ss_network_module": "lycoris.kohya"})
    finally:
        for lora in net.text_encoder_loras + net.unet_loras:
            lora.restore()
    checkpoint = read_checkpoint(file)
    assert checkpoint.format == "lycoris" and checkpoint.algorithms == ("loha",)
    assert checkpoint.touches_text_encoder
    assert any(m.name == "lora_unet_conv_in" for m in checkpoint.modules)
    try:
        apply(pipe, checkpoint, 1.0)
        ours = render_small(pipe)
    finally:
        restore(pipe, release=True)
    assert abs(theirs - base).max() > 0.05
    assert abs(ours - theirs).max() < 1e-3
