"""peft adapters → kohya / LyCORIS checkpoint tensors, with each tool's scale conventions.

Key stems are kohya's: ``lora_unet_`` / ``lora_te_`` (``lora_te1_`` / ``lora_te2_`` for SDXL)
plus the module path with ``.`` → ``_``. Per algorithm (REFERENCE §2, "Exporting peft adapters"):

- LoRA / LoCon: ``.lora_down.weight`` (peft ``lora_A``), ``.lora_up.weight`` (``lora_B``) and an
  explicit ``.alpha`` = peft's scaling × rank, so ``alpha / rank`` is the trained scale for any
  ``alpha_pattern`` and for rsLoRA (alpha·√r).
- DoRA: LoRA's keys plus ``.dora_scale`` = peft's ``lora_magnitude_vector`` reshaped to
  LyCORIS's per-output-row shape ``[out, 1, ...]``.
- LoHa: ``hada_w1_a/b``, ``hada_w2_a/b`` (+ ``hada_t1/t2``), same names and shapes as LyCORIS.
- LoKr: ``lokr_w1`` / ``lokr_w1_a/b``, ``lokr_w2`` / ``lokr_w2_a/b`` (+ ``lokr_t2``). When both
  Kronecker factors are full matrices, LyCORIS, A1111 and ComfyUI use γ = 1 whatever alpha says,
  while peft scales by alpha / r: the scale is folded into ``lokr_w1`` and alpha = r is written.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.network import ADAPTER

PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}
SDXL_PREFIXES = {**PREFIXES, "text_encoder": "lora_te1_"}

LOHA_KEYS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_KEYS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


def module_stem(prefix: str, role: str, name: str) -> str:
    """kohya's key stem for module ``name`` of model ``role``.

    transformers ≥ 5 names CLIP text layers ``encoder.layers...`` (no ``text_model.``), but every
    tool reading kohya files expects ``lora_te_text_model_encoder_layers_...``.
    """
    if role != "unet" and not name.startswith("text_model."):
        name = f"text_model.{name}"
    return prefix + name.replace(".", "_")


def _param(container, adapter: str = ADAPTER) -> torch.Tensor | None:
    """``container[adapter]`` of a peft ParameterDict / ModuleDict, as a detached tensor."""
    if adapter not in container:
        return None
    value = container[adapter]
    return (value.weight if isinstance(value, nn.Module) else value).detach()


def _lora_tensors(layer, stem: str) -> dict[str, torch.Tensor]:
    down = _param(layer.lora_A)
    up = _param(layer.lora_B)
    rank = layer.r[ADAPTER]
    out = {
        f"{stem}.lora_down.weight": down,
        f"{stem}.lora_up.weight": up,
        f"{stem}.alpha": torch.tensor(float(layer.scaling[ADAPTER]) * rank, dtype=torch.float32),
    }
    magnitudes = getattr(layer, "lora_magnitude_vector", None)
    if magnitudes is not None and ADAPTER in magnitudes:
        magnitude = _param(magnitudes)
        base = layer.get_base_layer().weight
        out[f"{stem}.dora_scale"] = magnitude.reshape(base.shape[0], *[1] * (base.dim() - 1))
    return out


def _loha_tensors(layer, stem: str) -> dict[str, torch.Tensor]:
    out = {}
    for key in LOHA_KEYS:
        value = _param(getattr(layer, key))
        if value is not None:
            out[f"{stem}.{key}"] = value
    rank = layer.r[ADAPTER]
    out[f"{stem}.alpha"] = torch.tensor(float(layer.scaling[ADAPTER]) * rank, dtype=torch.float32)
    return out


def _lokr_tensors(layer, stem: str) -> dict[str, torch.Tensor]:
    parts = {key: _param(getattr(layer, key)) for key in LOKR_KEYS}
    parts = {k: v for k, v in parts.items() if v is not None}
    rank = layer.r[ADAPTER]
    scaling = float(layer.scaling[ADAPTER])
    if "lokr_w1" in parts and "lokr_w2" in parts:
        # Readers apply γ = 1 here: carry peft's alpha / r inside w1 instead.
        parts["lokr_w1"] = parts["lokr_w1"] * scaling
        alpha = float(rank)
    else:
        alpha = scaling * rank
    out = {f"{stem}.{k}": v for k, v in parts.items()}
    out[f"{stem}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    return out


def adapter_layers(model: nn.Module):
    """(name, peft layer, algo family) for every adapted layer of ``model``."""
    from peft.tuners.loha.layer import LoHaLayer
    from peft.tuners.lokr.layer import LoKrLayer
    from peft.tuners.lora.layer import LoraLayer

    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            yield name, module, "lora"
        elif isinstance(module, LoHaLayer) and ADAPTER in module.hada_w1_a:
            yield name, module, "loha"
        elif isinstance(module, LoKrLayer) and ADAPTER in module.r:
            yield name, module, "lokr"


def export_tensors(
    models: dict[str, nn.Module], *, sdxl: bool = False, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """All adapters of ``models`` (by role) as one kohya / LyCORIS state dict.

    Weights are cast to ``dtype``; ``.alpha`` stays float32 (alpha·√r is not exact in fp16).
    """
    prefixes = SDXL_PREFIXES if sdxl else PREFIXES
    out: dict[str, torch.Tensor] = {}
    builders = {"lora": _lora_tensors, "loha": _loha_tensors, "lokr": _lokr_tensors}
    for role, model in models.items():
        for name, layer, family in adapter_layers(model):
            stem = module_stem(prefixes[role], role, name)
            for key, value in builders[family](layer, stem).items():
                value = value.detach().float().cpu()
                out[key] = value if key.endswith(".alpha") else value.to(dtype)
    return {k: v.contiguous() for k, v in out.items()}
