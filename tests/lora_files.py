"""Build LoRA files in every format from a pipeline's layers, with seeded random factors.

Test helpers: the key names are written here from the formats' definitions (REFERENCE §2),
independently of lorasel's parser, so that tests compare lorasel with other loaders.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tests.ldm_files import ldm_unet_name


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is faster than two fighting over a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


UNET_ATTENTION = re.compile(r"(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)|proj_in|proj_out)$")
TEXT_LAYERS = re.compile(r"(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))$")
RESNET_CONVS = re.compile(r"resnets\.\d+\.(conv1|conv2)$")


def target_layers(module: nn.Module, pattern: re.Pattern) -> dict[str, nn.Module]:
    return {
        name: layer
        for name, layer in module.named_modules()
        if isinstance(layer, (nn.Linear, nn.Conv2d)) and pattern.search(name)
    }


def _factors(
    layer: nn.Module, rank: int, gen: torch.Generator, std: float
) -> tuple[torch.Tensor, torch.Tensor]:
    w = layer.weight
    out_dim, in_dim, *kernel = w.shape
    if kernel:
        down = torch.randn(rank, in_dim, *kernel, generator=gen) * std
        up = torch.randn(out_dim, rank, 1, 1, generator=gen) * std
    else:
        down = torch.randn(rank, in_dim, generator=gen) * std
        up = torch.randn(out_dim, rank, generator=gen) * std
    return down, up


def sdxl_sgm_name(name: str, layers_per_block: int = 2) -> str:
    """diffusers UNet layer path → the original SGM path kohya writes for SDXL."""
    return ldm_unet_name(name, layers_per_block)


def kohya_lora(
    pipeline,
    rank: int = 4,
    alpha: float | None = 2.0,
    seed: int = 0,
    *,
    conv: bool = False,
    text: bool = True,
    sgm: bool = False,
    std: float = 0.2,
    only: str | None = None,
    omi: bool = False,
) -> dict[str, torch.Tensor]:
    """kohya keys: ``lora_unet_`` + flattened path (SGM for SDXL when ``sgm``), ``lora_te[12]_``.

    ``only``: a regex the layer path must also match (fewer modules, faster tests).
    ``omi``: the same tensors under the Open Model Initiative's names, as OneTrainer writes them
    (its ``convert_sd_lora`` / ``convert_sdxl_lora`` key sets): ``unet.`` + the dotted SGM path
    for SD 1.x and SDXL alike, ``clip_l.`` / ``clip_g.`` + the text encoder's dotted path.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    parts = [("unet", pipeline.unet, UNET_ATTENTION)]
    if conv:
        parts.append(("unet", pipeline.unet, RESNET_CONVS))
    if text:
        sdxl = getattr(pipeline, "text_encoder_2", None) is not None
        parts.append(("te1" if sdxl else "te", pipeline.text_encoder, TEXT_LAYERS))
        if sdxl:
            parts.append(("te2", pipeline.text_encoder_2, TEXT_LAYERS))
    for prefix, module, pattern in parts:
        for name, layer in target_layers(module, pattern).items():
            if only and not re.search(only, name):
                continue
            path = sdxl_sgm_name(name) if ((sgm or omi) and prefix == "unet") else name
            if prefix != "unet" and not path.startswith("text_model."):
                path = "text_model." + path  # kohya's names, from transformers 4's CLIPTextModel
            if omi:
                stem = {"unet": "unet", "te": "clip_l", "te1": "clip_l", "te2": "clip_g"}[prefix] + "." + path
            else:
                stem = f"lora_{prefix}_" + path.replace(".", "_")
            down, up = _factors(layer, rank, gen, std)
            out[f"{stem}.lora_down.weight"] = down
            out[f"{stem}.lora_up.weight"] = up
            if alpha is not None:
                out[f"{stem}.alpha"] = torch.tensor(float(alpha))
    return out


# ------------------------------------------------------------------ shared tiny pipelines

_PIPES: dict[str, object] = {}


def shared_pipeline(kind: str):
    """One tiny pipeline per kind and process ("sd1", "sd1-ref", "sdxl", "sdxl-ref"): tests that
    change it must put it back (``restore(pipe, release=True)``, ``unload_lora_weights()``)."""
    if kind not in _PIPES:
        from tests.tiny_models import tiny_sd1_pipeline, tiny_sdxl_pipeline

        _PIPES[kind] = tiny_sdxl_pipeline() if kind.startswith("sdxl") else tiny_sd1_pipeline()
    return _PIPES[kind]


# ------------------------------------------------------------------ LyCORIS networks

LYCORIS_TARGETS = ["Transformer2DModel", "ResnetBlock2D"]


def lycoris_network(
    module: nn.Module, algo: str, *, dim: int = 2, alpha: float = 1.0, seed: int = 0, **kwargs
):
    """A LyCORIS network (the ``lycoris-lora`` package) on ``module``, hooked in, with seeded
    random factors (LyCORIS initialises ΔW to zero) so that every factor matters."""
    import logging

    from lycoris import LycorisNetwork, create_lycoris
    from lycoris.logging import logger

    logger.setLevel(logging.ERROR)
    saved = LycorisNetwork.TARGET_REPLACE_MODULE
    LycorisNetwork.apply_preset({"target_module": LYCORIS_TARGETS})
    try:
        net = create_lycoris(
            module,
            1.0,
            linear_dim=dim,
            linear_alpha=alpha,
            conv_dim=dim,
            conv_alpha=alpha,
            algo=algo,
            **kwargs,
        )
    finally:
        LycorisNetwork.TARGET_REPLACE_MODULE = saved
    net.apply_to()
    randomise_lycoris(net, seed)
    return net


def randomise_lycoris(net: nn.Module, seed: int, std: float = 0.25) -> None:
    """Seeded random factors (LyCORIS initialises ΔW to zero); DoRA magnitudes perturbed around ‖W‖."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("dora_scale"):
                p.mul_(1 + 0.2 * noise)
            else:
                p.copy_(noise * std)


def render_small(pipe, prompt: str = "a red circle"):
    """A 32 px, 2-step render without CFG: the cheapest call that runs every component."""
    gen = torch.Generator().manual_seed(0)
    return pipe(
        prompt,
        num_inference_steps=2,
        generator=gen,
        output_type="np",
        guidance_scale=1.0,
        height=32,
        width=32,
    ).images


def lycoris_reference_delta(lora) -> torch.Tensor:
    """γ·ΔW of one LyCORIS module by the package's functional maths, γ = the module's own scale."""
    from lycoris.functional import locon, loha, lokr
    from lycoris.modules.full import FullModule
    from lycoris.modules.locon import LoConModule
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.norms import NormModule

    with torch.no_grad():
        if isinstance(lora, (FullModule, NormModule)):
            return lora.get_diff_weight(1)[0]  # ΔW itself (full rank)
        if isinstance(lora, LoConModule):
            mid = lora.lora_mid.weight if lora.tucker else None
            return locon.diff_weight(lora.lora_down.weight, lora.lora_up.weight, mid, gamma=lora.scale)
        if isinstance(lora, LohaModule):
            t1, t2 = (lora.hada_t1, lora.hada_t2) if lora.tucker else (None, None)
            return loha.diff_weight(
                lora.hada_w1_b, lora.hada_w1_a, lora.hada_w2_b, lora.hada_w2_a, t1, t2, gamma=lora.scale
            )
        get = lambda n: getattr(lora, n, None)  # noqa: E731
        w1 = get("lokr_w1") if lora.use_w1 else None
        w2 = get("lokr_w2") if lora.use_w2 else None
        t2 = get("lokr_t2") if (lora.tucker and not lora.use_w2) else None
        return lokr.kron_weight(
            w1, None if w1 is not None else get("lokr_w1_a"), None if w1 is not None else get("lokr_w1_b"),
            w2, None if w2 is not None else get("lokr_w2_a"), None if w2 is not None else get("lokr_w2_b"),
            t2, scale=lora.scale,
        )  # fmt: skip


def unet_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded (latents, timestep, text states) for a tiny SD 1.x UNet's forward."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([10]), torch.randn(1, 7, 32, generator=gen)


def unet_forward(unet, inputs) -> torch.Tensor:
    with torch.no_grad():
        return unet(*inputs).sample


def merged_forward(unet, checkpoint, strength: float, inputs) -> torch.Tensor:
    """The UNet's output on ``inputs`` with ``checkpoint`` applied at ``strength``; the base restored."""
    from lorasel.checkpoints import apply, restore

    try:
        apply(unet, checkpoint, strength)
        return unet_forward(unet, inputs)
    finally:
        restore(unet, release=True)


def merged_unet_state(pipe, checkpoint, strength: float) -> dict[str, torch.Tensor]:
    """A copy of the UNet's state with ``checkpoint`` applied at ``strength``; the base restored."""
    from lorasel.checkpoints import apply, restore

    try:
        apply(pipe, checkpoint, strength)
        return {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    finally:
        restore(pipe, release=True)


def assert_changed_to(before, after, expected, rtol=1e-4, atol=1e-5) -> None:
    """Exactly the tensors named in ``expected`` differ between the state dicts ``before`` and
    ``after``, each now close to its expected value."""
    assert {k for k in before if not torch.equal(before[k], after[k])} == set(expected)
    for key, want in expected.items():
        torch.testing.assert_close(after[key], want, rtol=rtol, atol=atol)


def lycoris_saved(unet, algo: str, path, inputs, multipliers=(1.0,), **network_kwargs):
    """Save a LyCORIS network (``lycoris_network(unet, algo, **network_kwargs)``) to ``path`` and
    return what the package itself says of it: per module name, ``get_diff_weight(1)`` and the base
    weight, and the UNet's output under the network at each multiplier. The UNet is restored."""
    net = lycoris_network(unet, algo, **network_kwargs)
    try:
        outputs = []
        for multiplier in multipliers:
            for lora in net.loras:
                lora.multiplier = multiplier
            outputs.append(unet_forward(unet, inputs))
        net.save_weights(str(path), torch.float32, {"ss_network_module": "lycoris.kohya"})
        with torch.no_grad():
            references = {lora.lora_name: lora.get_diff_weight(1)[0] for lora in net.loras}
        weights = {lora.lora_name: lora.org_weight.detach().clone() for lora in net.loras}
    finally:
        net.restore()
    return references, weights, outputs
