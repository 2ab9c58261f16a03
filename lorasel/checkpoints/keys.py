"""LoRA key names: which format a key is in, which factor it holds, which layer it names.

Names only (no tensors), so discovery can tell a LoRA from a base model by its header.
kohya/LyCORIS keys are ``<prefix><flattened path>.<suffix>``; PEFT/diffusers keys are
``<prefix><dotted path>.<suffix>``; OMI and ComfyUI keys are kohya's suffixes on dotted paths; older
diffusers spellings are first mapped to PEFT's by diffusers' own key maps
(``diffusers.utils.state_dict_utils``).
"""

from __future__ import annotations

import re

# suffix → (kind, canonical name). kind None: not a factor (alpha, DoRA magnitude).
_LYCORIS_FACTORS = {
    "hada_w1_a": ("loha", "w1a"), "hada_w1_b": ("loha", "w1b"), "hada_w2_a": ("loha", "w2a"),
    "hada_w2_b": ("loha", "w2b"), "hada_t1": ("loha", "t1"), "hada_t2": ("loha", "t2"),
    "lokr_w1": ("lokr", "w1"), "lokr_w1_a": ("lokr", "w1a"), "lokr_w1_b": ("lokr", "w1b"),
    "lokr_w2": ("lokr", "w2"), "lokr_w2_a": ("lokr", "w2a"), "lokr_w2_b": ("lokr", "w2b"),
    "lokr_t2": ("lokr", "t2"),
}  # fmt: skip
KOHYA_SUFFIXES = {
    "lora_down.weight": ("lora", "down"), "lora_up.weight": ("lora", "up"),
    "lora_mid.weight": ("lora", "mid"), **_LYCORIS_FACTORS,
    "alpha": (None, "alpha"), "dora_scale": (None, "dora_scale"),
    # LyCORIS' full-rank modules: "full" (ΔW itself, and Δbias) and train_norm's norm layers.
    "diff": ("full", "diff"), "diff_b": (None, "bias"), "w_norm": ("norm", "w"), "b_norm": (None, "bias"),
    # OFT (LyCORIS' diag-oft and boft, kohya's networks.oft): the blocks of a rotation, and
    # LyCORIS' per-row rescale; their alpha is the rotation's constraint.
    "oft_blocks": ("oft", "blocks"), "rescale": (None, "rescale"),
    # GLoRA (LyCORIS' glora): W·A + B, each a pair of low-rank factors.
    "a1.weight": ("glora", "a1"), "a2.weight": ("glora", "a2"), "b1.weight": ("glora", "b1"),
    "b2.weight": ("glora", "b2"),
    # (IA)³ (LyCORIS' ia3): a scale per channel, on the input columns when on_input is 1. A bare
    # ``weight`` is (IA)³'s only on a flat kohya/LyCORIS stem (elsewhere it is a full model's key).
    "weight": ("ia3", "w"), "on_input": (None, "on_input"),
}  # fmt: skip
_IA3_FORMATS = ("kohya", "lycoris")
# PEFT names its LoHa/LoKr tensors like LyCORIS does.
PEFT_SUFFIXES = {
    "lora_A.weight": ("lora", "down"), "lora_B.weight": ("lora", "up"), **_LYCORIS_FACTORS,
    "lora_magnitude_vector": (None, "dora_scale"), "lora_magnitude_vector.weight": (None, "dora_scale"),
    "alpha": (None, "alpha"),
}  # fmt: skip
_KOHYA_ORDER = sorted(KOHYA_SUFFIXES, key=len, reverse=True)
_PEFT_ORDER = sorted(PEFT_SUFFIXES, key=len, reverse=True)
KOHYA_PREFIXES = (
    ("lora_unet_", "unet"),
    ("oft_unet_", "unet"),  # kohya's networks.oft (UNet only)
    ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
    ("lora_te_", "text_encoder"),
)
DIFFUSERS_PREFIXES = (
    ("unet.", "unet"),
    ("text_encoder.", "text_encoder"),
    ("text_encoder_2.", "text_encoder_2"),
)
# Formats with kohya's suffixes on dotted paths, the UNet in the original SGM naming
# (``input_blocks.4.1.``, SD 1.x as well as SDXL), the text encoders named for the CLIP model:
# - "omi", the Open Model Initiative's (OneTrainer's OMI output and its backups, InvokeAI):
#   ``unet.`` / ``clip_l.`` / ``clip_g.``;
# - "comfyui", ComfyUI's own (its Train LoRA and Extract and Save Lora nodes):
#   ``diffusion_model.`` / ``text_encoders.clip_l.transformer.`` / ``text_encoders.clip_g.transformer.``.
SGM_STYLE_PREFIXES = (
    ("unet.", "unet", "omi"),
    ("clip_l.", "text_encoder", "omi"),
    ("clip_g.", "text_encoder_2", "omi"),
    ("diffusion_model.", "unet", "comfyui"),
    ("text_encoders.clip_l.transformer.", "text_encoder", "comfyui"),
    ("text_encoders.clip_g.transformer.", "text_encoder_2", "comfyui"),
)
SGM_UNET = ("input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "label_emb.", "out.")
PEFT_PREFIX = "base_model.model."
LYCORIS_PREFIX = "lycoris_"
# Older diffusers spellings, turned into PEFT ones with diffusers' own key maps.
_OLD_DIFFUSERS_MARKS = (
    ".lora.down.",
    ".lora.up.",
    "lora_linear_layer",
    "_lora.down.",
    "_lora.up.",
    ".processor.",
)


def split_suffix(key: str, peft: bool) -> tuple[str, tuple[str | None, str]] | None:
    """(stem, (kind, factor)) when the key ends in a known suffix of that key family."""
    table, order = (PEFT_SUFFIXES, _PEFT_ORDER) if peft else (KOHYA_SUFFIXES, _KOHYA_ORDER)
    for suffix in order:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], table[suffix]
    return None


def key_style(stem: str) -> tuple[str, str | None, str, bool] | None:
    """(format, component, target, dotted) for a key stem, or None when no LoRA prefix fits."""
    for prefix, component in KOHYA_PREFIXES:
        if stem.startswith(prefix):
            return "kohya", component, stem[len(prefix) :], False
    if stem.startswith(LYCORIS_PREFIX):
        return "lycoris", None, stem[len(LYCORIS_PREFIX) :], False
    if stem.startswith(PEFT_PREFIX):
        return "peft", None, stem[len(PEFT_PREFIX) :], True
    for prefix, component in sorted(DIFFUSERS_PREFIXES, key=lambda p: -len(p[0])):
        if stem.startswith(prefix):
            return "diffusers", component, stem[len(prefix) :], True
    return None


def sgm_style(stem: str) -> tuple[str, str, str, bool] | None:
    """(format, component, target, dotted) for an OMI or ComfyUI key stem, or None. ``unet.`` is
    diffusers' prefix too: these formats' UNet paths are in SGM naming, which diffusers' never are
    (and ComfyUI's DiT LoRAs, ``diffusion_model.`` + other paths, are not SD's)."""
    for prefix, component, fmt in SGM_STYLE_PREFIXES:
        if stem.startswith(prefix):
            target = stem[len(prefix) :]
            if component == "unet" and not target.startswith(SGM_UNET):
                return None
            return fmt, component, target, True
    return None


def _is_old_diffusers(key: str) -> bool:
    return key.startswith(("unet.", "text_encoder.", "text_encoder_2.")) and any(
        m in key for m in _OLD_DIFFUSERS_MARKS
    )


def modernise_diffusers_keys(keys: list[str]) -> dict[str, str]:
    """new key → original key, with older diffusers spellings mapped to PEFT's by diffusers."""
    if not any(_is_old_diffusers(k) for k in keys):
        return {k: k for k in keys}
    from diffusers.utils.state_dict_utils import (
        DIFFUSERS_OLD_TO_PEFT,
        DIFFUSERS_TO_PEFT,
        UNET_TO_DIFFUSERS,
        convert_state_dict,
    )

    out: dict[str, str] = {}
    for key in keys:
        new = key
        if _is_old_diffusers(key):
            if key.startswith("unet."):
                mapping = UNET_TO_DIFFUSERS
            elif "_lora." in key and "lora_linear_layer" not in key:
                mapping = DIFFUSERS_OLD_TO_PEFT
            else:
                mapping = DIFFUSERS_TO_PEFT
            new = next(iter(convert_state_dict({key: None}, mapping)))
            if new.endswith((".lora_A", ".lora_B")):
                new += ".weight"
        out[new] = key
    return out


def original_stem(original_key: str, stem: str) -> str:
    """The key stem as spelled in the file (older diffusers keys keep their own spelling)."""
    for suffix in (
        ".lora.down.weight", ".lora.up.weight", ".lora_linear_layer.down.weight",
        ".lora_linear_layer.up.weight", "_lora.down.weight", "_lora.up.weight",
    ):  # fmt: skip
        if original_key.endswith(suffix):
            return original_key[: -len(suffix)]
    return stem


def looks_like_lora(keys: list[str]) -> bool:
    """Cheap test on key names only (discovery): does any key name a LoRA factor?"""
    for key in modernise_diffusers_keys(keys):
        hit = classify(key)
        if hit is not None and hit[1][0] is not None:
            return True
    return False


def classify(key: str) -> tuple[str, tuple[str | None, str], tuple] | None:
    """(stem, (kind, factor), style) of one key, or None when it is not a LoRA key."""
    for peft in (False, True):
        split = split_suffix(key, peft)
        if not split:
            continue
        style = (None if peft else sgm_style(split[0])) or key_style(split[0])
        if split[1][0] == "ia3" and (not style or style[0] not in _IA3_FORMATS or "." in split[0]):
            continue  # kohya/LyCORIS stems are flat: ``<stem>.bm.weight`` is another algorithm's
        if style and (style[0] in ("peft", "diffusers")) == peft:
            return split[0], split[1], style
    return None


def natural_key(name: str) -> list:
    """Sort key with numbers compared as numbers: ``blocks_2`` before ``blocks_10``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]
