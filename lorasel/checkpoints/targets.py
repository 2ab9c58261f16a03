"""Map a checkpoint's modules onto a pipeline's layers, strictly.

kohya-style stems are the layer's dotted path with ``_`` for ``.`` (``lora_unet_`` +
``down_blocks_0_attentions_0_proj_in``): they are matched against the same flattening of
every Linear/Conv layer of the UNet and the text encoders, exactly as kohya, A1111 and
ComfyUI name them. SDXL files name UNet layers the original SGM way
(``input_blocks_4_1_...``), and OMI and ComfyUI files every UNet (``unet.input_blocks.4.1...``,
``diffusion_model.input_blocks.4.1...``): those stems go through diffusers' own conversion
(``_maybe_map_sgm_blocks_to_diffusers`` and the kohya→diffusers key map) first, after naming the
norm layers and the attention-less upsampler that conversion does not know.

A module that matches no layer, or whose ΔW does not fit the layer's weight, is an
error: a LoRA made for another base must never half-apply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from lorasel.checkpoints.deltas.oft import OFT_KINDS
from lorasel.checkpoints.keys import SGM_UNET
from lorasel.checkpoints.model import COMPONENTS, TEXT_ENCODERS, LoraCheckpoint, LoraModule
from lorasel.errors import CheckpointError

# Layers a module can change: LoRA-style ΔW on Linear/Conv, LyCORIS train_norm's on norm layers.
_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm)
# The SGM block names (keys.SGM_UNET) as a flattened target starts with them.
_SGM_MARKS = tuple(prefix.replace(".", "_") for prefix in SGM_UNET)
FAMILY_NAMES = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "toy": "SD1-style toy", "unknown": "unknown"}


@dataclass(frozen=True)
class Target:
    """A checkpoint module bound to the layer it changes."""

    module: LoraModule
    key: str  # "<component>.<layer path>", unique per layer
    layer: nn.Module

    @property
    def weight(self) -> torch.Tensor:
        return self.layer.weight


def components(pipeline) -> dict[str, nn.Module]:
    """The parts a LoRA can touch; a bare ``nn.Module`` (a UNet alone) counts as the UNet."""
    if isinstance(pipeline, nn.Module):
        return {"unet": pipeline}
    found = {}
    for name in COMPONENTS:
        part = getattr(pipeline, name, None)
        if isinstance(part, nn.Module):
            found[name] = part
    return found


def layer_index(component: nn.Module, text_encoder: bool = False) -> dict[str, tuple[str, nn.Module]]:
    """flattened name → (dotted name, layer) for every Linear/Conv layer of a component.

    A layer wrapped by PEFT (``to_q.base_layer``) is also found under its own name. In a text
    encoder, names are found with and without the ``text_model.`` level: kohya, A1111 and PEFT
    files were written against transformers 4 (``text_model.encoder.layers.0``), while
    transformers 5's ``CLIPTextModel`` has no such level (``encoder.layers.0``).
    """
    index: dict[str, tuple[str, nn.Module]] = {}
    for name, layer in component.named_modules():
        if not isinstance(layer, _LAYER_TYPES):
            continue
        aliases = {name, name.removesuffix(".base_layer")}
        if text_encoder:
            aliases |= {a.removeprefix("text_model.") for a in aliases}
            aliases |= {"text_model." + a for a in aliases if not a.startswith("text_model.")}
        for alias in aliases:
            flat = alias.replace(".", "_")
            if flat in index and index[flat][1] is not layer:
                index[flat] = ("", layer)  # two layers flatten alike: ambiguous, match neither
            else:
                index[flat] = (name, layer)
    return index


def sgm_to_diffusers(stem: str, unet_config) -> str | None:
    """The diffusers layer path of a kohya SDXL stem in SGM naming, by diffusers' own maps."""
    if not stem.startswith("lora_unet_") or getattr(unet_config, "layers_per_block", None) is None:
        return None
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    placeholder = torch.empty(0)
    state = {f"{stem}.lora_down.weight": placeholder, f"{stem}.lora_up.weight": placeholder}
    try:
        state = _maybe_map_sgm_blocks_to_diffusers(state, unet_config)
        converted, _ = _convert_non_diffusers_lora_to_diffusers(state)
        converted = convert_unet_state_dict_to_peft(converted)
    except (ValueError, KeyError, IndexError):
        return None
    for key in converted:
        if key.startswith("unet.") and key.endswith(".lora_A.weight"):
            return key[len("unet.") : -len(".lora_A.weight")]
    return None


def _sgm_upsampler(flat: str, unet_config) -> str | None:
    """The upsampler of an up level without attention, ``output_blocks_<k>_1_conv`` in SGM naming
    (SD 1.x/2.x's first up level: ComfyUI's names), which diffusers' map takes for an attention."""
    m = re.fullmatch(r"output_blocks_(\d+)_1_conv", flat)
    per = getattr(unet_config, "layers_per_block", None)
    types = getattr(unet_config, "up_block_types", None)
    if not m or not isinstance(per, int) or not types:
        return None
    level, last = divmod(int(m[1]), per + 1)
    if last != per or level >= len(types) - 1 or "CrossAttn" in types[level]:
        return None
    return f"up_blocks.{level}.upsamplers.0.conv"


def _sgm_norms(flat: str) -> str:
    """SGM names of the norm layers diffusers' LoRA key maps do not know (no LoRA trains them;
    ComfyUI's and LyCORIS' full-rank changes do): a resnet's ``in_layers_0`` / ``out_layers_0``,
    and ``out_0``, the UNet's last norm."""
    if flat == "out_0":
        return "conv_norm_out"
    return re.sub(r"_in_layers_0$", "_norm1", re.sub(r"_out_layers_0$", "_norm2", flat))


def fits(delta_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> bool:
    """ΔW fits W if equal, or equal after flattening everything but the output rows
    (a 1×1 conv LoRA on a Linear, LyCORIS' flattened conv factors)."""
    if tuple(delta_shape) == tuple(weight_shape):
        return True
    return (
        len(delta_shape) >= 2
        and len(weight_shape) >= 2
        and delta_shape[0] == weight_shape[0]
        and math.prod(delta_shape[1:]) == math.prod(weight_shape[1:])
        and (delta_shape[1] == weight_shape[1] or len(delta_shape) == 2 or len(weight_shape) == 2)
    )


def _weight_fits(module: LoraModule, weight_shape: tuple[int, ...]) -> bool:
    if module.kind in (*OFT_KINDS, "ia3"):  # its factors fix one axis of W (the other is None)
        out, width = module.out_features, module.in_features
        return len(weight_shape) >= 2 and out in (None, weight_shape[0]) and width in (None, weight_shape[1])
    return fits(module.delta_shape, weight_shape)


def _bias_fits(module: LoraModule, layer: nn.Module) -> bool:
    bias = getattr(layer, "bias", None)
    return module.bias_delta is None or (
        bias is not None and tuple(bias.shape) == tuple(module.bias_delta.shape)
    )


def _dora_fits(module: LoraModule, weight_shape: tuple[int, ...]) -> bool:
    if module.dora_scale is None:
        return True
    want = weight_shape[0] if module.dora_on_output else weight_shape[1]
    return module.dora_scale.numel() == want


class Resolver:
    """Layer indexes of one pipeline, built once and reused for every checkpoint.

    Holds layers, never the pipeline itself: the merge registry is keyed weakly by the pipeline.
    """

    def __init__(self, pipeline) -> None:
        parts = components(pipeline)
        self.names = tuple(parts)
        self.unet_config = getattr(parts.get("unet"), "config", None)
        self.indexes = {name: layer_index(part, name in TEXT_ENCODERS) for name, part in parts.items()}

    def _lookup(self, module: LoraModule) -> list[tuple[str, str, nn.Module]]:
        """Candidate (component, dotted name, layer) for a module, best first."""
        names = [module.component] if module.component else list(self.names)
        hits = []
        for comp in names:
            index = self.indexes.get(comp)
            if index is None:
                continue
            hit = index.get(module.flat_target)
            if hit is None and comp == "unet" and module.flat_target.startswith(_SGM_MARKS):
                path = _sgm_upsampler(module.flat_target, self.unet_config) or sgm_to_diffusers(
                    "lora_unet_" + _sgm_norms(module.flat_target), self.unet_config
                )
                hit = index.get(path.replace(".", "_")) if path else None
            if hit is not None and hit[0]:
                hits.append((comp, hit[0], hit[1]))
        return hits

    def resolve(self, checkpoint: LoraCheckpoint, base_family: str) -> list[Target]:
        """Bind every module to a layer, or raise CheckpointError naming what does not fit."""
        targets: list[Target] = []
        unmatched: list[str] = []
        misfits: list[str] = []
        seen: dict[str, str] = {}
        for module in checkpoint.modules:
            hits = self._lookup(module)
            if not hits:
                unmatched.append(module.name)
                continue
            fitting = [
                h
                for h in hits
                if getattr(h[2], "weight", None) is not None
                and _weight_fits(module, tuple(h[2].weight.shape))
                and _dora_fits(module, tuple(h[2].weight.shape))
                and _bias_fits(module, h[2])
            ]
            if not fitting:
                comp, name, layer = hits[0]
                weight = getattr(layer, "weight", None)
                have = list(weight.shape) if weight is not None else "without weights"
                what = f"ΔW {list(module.delta_shape)}"
                if module.kind in OFT_KINDS:
                    what = f"a rotation of {module.out_features} output rows"
                if module.kind == "ia3":
                    what = f"a scale of {module.delta_shape[0]} {'input' if module.on_input else 'output'} channels"
                if module.bias_delta is not None:
                    bias = getattr(layer, "bias", None)
                    what += f", Δb {list(module.bias_delta.shape)}"
                    have = f"{have}, bias {list(bias.shape) if bias is not None else 'none'}"
                misfits.append(f"{module.name} ({what} vs {comp}.{name} {have})")
                continue
            comp, name, layer = fitting[0]
            key = f"{comp}.{name}"
            if key in seen:
                raise CheckpointError(
                    f"{checkpoint.path}: modules {seen[key]!r} and {module.name!r} both address layer {key}",
                    hint="the file holds two LoRAs for the same layer; re-save it with one",
                )
            seen[key] = module.name
            targets.append(Target(module=module, key=key, layer=layer))
        if unmatched:
            raise _unmatched_error(checkpoint, unmatched, base_family)
        if misfits:
            raise CheckpointError(
                f"{checkpoint.path}: {len(misfits)} module(s) do not fit the base's layer shapes, e.g. "
                + "; ".join(misfits[:3]),
                hint=_family_hint(checkpoint.base_family, base_family),
            )
        return targets


def _family_hint(file_family: str, base_family: str) -> str:
    if file_family not in ("unknown", base_family) and not (file_family == "sd1" and base_family == "toy"):
        return (
            f"it looks like an {FAMILY_NAMES[file_family]} LoRA; the base is "
            f"{FAMILY_NAMES.get(base_family, base_family)}: pass a matching base with --base"
        )
    return "use the base model the LoRA was trained on (--base)"


def _unmatched_error(checkpoint: LoraCheckpoint, unmatched: list[str], base_family: str) -> CheckpointError:
    total = len(checkpoint.modules)
    sample = ", ".join(repr(n) for n in unmatched[:3])
    what = f"{len(unmatched)} of {total} modules match no layer of the base"
    if checkpoint.base_family not in ("unknown", base_family) and not (
        checkpoint.base_family == "sd1" and base_family == "toy"
    ):
        what += (
            f" (an {FAMILY_NAMES[checkpoint.base_family]} LoRA; the base is "
            f"{FAMILY_NAMES.get(base_family, base_family)})"
        )
    return CheckpointError(
        f"{checkpoint.path}: {what}, e.g. {sample}",
        hint=_family_hint(checkpoint.base_family, base_family),
    )
