"""What a checkpoint's metadata and names say: epoch, step, trigger, base family.

Metadata comes from strangers' files: every value is parsed defensively (a bad value
means "unknown", never an exception) and text that reaches a person or a prompt is
cleaned of control characters and capped in length.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping

from lorasel.checkpoints.keys import SGM_UNET
from lorasel.checkpoints.model import LoraModule

MAX_TEXT = 200


def clean_text(value: str, limit: int = MAX_TEXT) -> str:
    """One line of printable text: control/format characters dropped, whitespace folded, capped."""
    kept = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in value)
    return " ".join(kept.split())[:limit]


def _int(value: object) -> int | None:
    """A non-negative int from a string or number, else None (hostile input never raises)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10**12 else None
    if isinstance(value, float) and value.is_integer():
        return _int(int(value))
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,12}\s*", value):
        return int(value)
    return None


def _flag(value: object) -> bool | None:
    """A boolean as trainers write one in metadata ("True", "true", "1", ...), else None."""
    text = str(value).strip().lower() if value is not None else ""
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def _json(value: str | None) -> object:
    if not value or len(value) > 10_000_000:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


# ---------------------------------------------------------------- epoch and step from names

_KOHYA_EPOCH = re.compile(r"^(?P<run>.+)-(?P<epoch>\d{6})$")
_KOHYA_STEP = re.compile(r"^(?P<run>.+)-step(?P<step>\d{8})$")
_AI_TOOLKIT = re.compile(r"^(?P<run>.+)_(?P<step>\d{9})$")
# OneTrainer puts a save-time timestamp between its prefix and "-save-": not part of the run.
_ONETRAINER = re.compile(
    r"^(?P<run>.*?)(?:\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})?-save-(?P<step>\d+)-(?P<epoch>\d+)-(?P<epoch_step>\d+)$"
)
_DIFFUSERS_DIR = re.compile(r"^checkpoint-(?P<step>\d+)$")
# ComfyUI's Save LoRA Weights node: ``{prefix}_{steps}_steps_{counter:05}_``.
_COMFYUI = re.compile(r"^(?P<run>.+?)_(?P<step>\d+)_steps_\d{5}_?$")


def parse_name(stem: str) -> dict:
    """What a file name (without suffix) says: ``run``, ``epoch``, ``step``, ``scheme``.

    kohya ``name-000004`` (epoch 4), ``name-step00000500``; ai-toolkit ``job_000000500``;
    ComfyUI ``prefix_500_steps_00001_``;
    OneTrainer ``prefix-save-{global_step}-{epoch}-{epoch_step}`` (0-based epoch counter:
    an epoch-end save, epoch_step 0, belongs to the epoch it ends, else to the running one).
    A name matching none is a run's final (or only) file.
    """
    if m := _ONETRAINER.match(stem):
        epoch, epoch_step = int(m["epoch"]), int(m["epoch_step"])
        return {
            "run": m["run"].rstrip("-_ ") or "onetrainer",
            "step": int(m["step"]),
            "epoch": epoch if epoch_step == 0 and epoch > 0 else epoch + 1,
            "scheme": "onetrainer",
        }
    if m := _KOHYA_STEP.match(stem):
        return {"run": m["run"], "step": int(m["step"]), "epoch": None, "scheme": "kohya-step"}
    if m := _KOHYA_EPOCH.match(stem):
        return {"run": m["run"], "step": None, "epoch": int(m["epoch"]), "scheme": "kohya-epoch"}
    if m := _COMFYUI.match(stem):
        return {"run": m["run"], "step": int(m["step"]), "epoch": None, "scheme": "comfyui"}
    if m := _AI_TOOLKIT.match(stem):
        return {"run": m["run"], "step": int(m["step"]), "epoch": None, "scheme": "ai-toolkit"}
    return {"run": stem, "step": None, "epoch": None, "scheme": None}


def parse_checkpoint_dir(name: str) -> int | None:
    """The step of a diffusers/SimpleTuner ``checkpoint-{step}`` folder."""
    m = _DIFFUSERS_DIR.match(name)
    return int(m["step"]) if m else None


# ---------------------------------------------------------------- epoch and step from metadata


def progress_from_metadata(metadata: Mapping[str, str], scheme: str | None) -> tuple[int | None, int | None]:
    """(epoch, step) from kohya ``ss_epoch``/``ss_steps`` or ai-toolkit ``training_info``.

    kohya writes ``ss_epoch`` = epoch + 1 in epoch saves but the 0-based running epoch in
    step saves (REFERENCE §2); lorasel's epoch is 1-based, the epoch the save belongs to.
    """
    step = _int(metadata.get("ss_steps"))
    epoch = _int(metadata.get("ss_epoch"))
    if epoch is not None and scheme == "kohya-step":
        epoch += 1
    info = _json(metadata.get("training_info"))
    if isinstance(info, dict):
        step = step if step is not None else _int(info.get("step"))
        epoch = epoch if epoch is not None else _int(info.get("epoch"))
    return epoch, step


# ---------------------------------------------------------------- trigger and class word


def _folder_concept(folder: str) -> tuple[str, str | None] | None:
    """kohya dataset folder ``<repeats>_<trigger> <class>`` → (trigger, class word)."""
    m = re.fullmatch(r"\s*\d+_(.+)", folder)
    if not m:
        return None
    words = clean_text(m[1]).split()
    if not words:
        return None
    return words[0], (" ".join(words[1:]) or None)


def trigger_and_class(metadata: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The trigger (``modelspec.trigger_phrase``, else the first word of the dataset folder name
    in ``ss_tag_frequency`` / ``ss_dataset_dirs``) and the class word (the folder's other words)."""
    concepts: list[tuple[str, str | None]] = []
    for field in ("ss_tag_frequency", "ss_dataset_dirs"):
        folders = _json(metadata.get(field))
        if isinstance(folders, dict):
            concepts += [c for f in folders if isinstance(f, str) and (c := _folder_concept(f))]
    phrase = clean_text(metadata.get("modelspec.trigger_phrase") or "")
    if phrase:
        first = phrase.split()[0].strip(",")
        class_word = next((c for t, c in concepts if t == first and c), None)
        return phrase, class_word
    if concepts:
        return concepts[0]
    return None, None


# ---------------------------------------------------------------- base family


def family_from_metadata(metadata: Mapping[str, str]) -> str | None:
    """sd1 | sd2 | sdxl from ``ss_base_model_version`` / ``modelspec.architecture`` / ``ss_v2``."""
    version = (metadata.get("ss_base_model_version") or "").lower()
    arch = (metadata.get("modelspec.architecture") or "").lower()
    for text in (version, arch):
        if "xl" in text:
            return "sdxl"
        if re.search(r"(sd_?|stable-diffusion-)v?2", text):
            return "sd2"
        if re.search(r"(sd_?|stable-diffusion-)v?1", text):
            return "sd1"
    if _flag(metadata.get("ss_v2")):
        return "sd2"
    return None


_SGM = ("input_blocks", "middle_block", "output_blocks", "label_emb")
# Width of the cross-attention context (attn2.to_k's input) and of the text encoder.
_CROSS_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_TEXT_WIDTH = {768: "sd1", 1024: "sd2"}


def family_from_modules(modules: Iterable[LoraModule]) -> str | None:
    """sd1 | sd2 | sdxl from key names and layer widths, when they are decisive."""
    modules = list(modules)
    for m in modules:
        flat = m.flat_target
        if m.component == "text_encoder_2" or m.name.startswith(("lora_te1_", "lora_te2_")):
            return "sdxl"
        if m.component == "unet" and not m.dotted and flat.startswith(_SGM):
            return "sdxl"
        if "add_embedding" in flat or (m.component == "unet" and flat.startswith("label_emb")):
            return "sdxl"  # the size conditioning only SDXL's UNet has (diffusers' / SGM's name)
    modules = [m for m in modules if m.in_features is not None]  # OFT, (IA)³: no input width
    for m in modules:
        if m.flat_target.endswith(("attn2_to_k", "attn2_to_v")) and m.in_features in _CROSS_WIDTH:
            return _CROSS_WIDTH[m.in_features]
    for m in modules:
        te1 = m.component in ("text_encoder", None)
        if te1 and m.flat_target.endswith("self_attn_q_proj") and m.in_features in _TEXT_WIDTH:
            return _TEXT_WIDTH[m.in_features]
    return None


def base_family(modules: Iterable[LoraModule], metadata: Mapping[str, str]) -> str:
    """Keys and shapes first (they cannot lie), then metadata, else ``unknown``."""
    return family_from_modules(modules) or family_from_metadata(metadata) or "unknown"


# ---------------------------------------------------------------- prediction type

#: Empty tensors by which a file says it predicts v (``v_pred``) on a zero-terminal-SNR schedule
#: (``ztsnr``), as ComfyUI and Forge read them: in base models (NoobAI-XL v-pred) and in the LoRAs
#: some trainers save for them.
PREDICTION_MARKERS = ("v_pred", "ztsnr")
#: What a model predicts, in lorasel's words: ε, v, or v on a zero-terminal-SNR schedule.
PREDICTIONS = ("epsilon", "v", "v-ztsnr")
#: The prediction types as summaries and warnings name them.
PREDICTION_WORDS = {
    "epsilon": "ε-prediction",
    "v": "v-prediction",
    "v-ztsnr": "v-prediction on a zero-terminal-SNR schedule",
}
_SAYS_V = frozenset({"v", "v_prediction", "v-prediction", "vpred", "v_pred", "v-pred", "velocity"})
_SAYS_EPSILON = frozenset({"epsilon", "eps", "noise"})


def stated_prediction(metadata: Mapping[str, str], keys: Iterable[str] = ()) -> str | None:
    """What a file says its model predicts (one of :data:`PREDICTIONS`), else None.

    Read from Stability's ``modelspec.prediction_type`` (``v`` / ``epsilon``; kohya writes it
    for every checkpoint), ``ss_v_parameterization`` (other trainers), kohya's
    ``ss_zero_terminal_snr`` and the :data:`PREDICTION_MARKERS` among ``keys``. A statement of v
    wins over one of ε: some trainers write ``epsilon`` whatever they trained, none writes v
    by accident."""
    keys = set(keys)
    kind = str(metadata.get("modelspec.prediction_type") or "").strip().lower()
    v_flag = _flag(metadata.get("ss_v_parameterization"))
    if kind in _SAYS_V or v_flag or "v_pred" in keys:
        zsnr = "ztsnr" in keys or _flag(metadata.get("ss_zero_terminal_snr"))
        return "v-ztsnr" if zsnr else "v"
    if kind in _SAYS_EPSILON or v_flag is False:
        return "epsilon"
    return None


# ---------------------------------------------------------------- LoRAs for other models

#: Words in kohya's ``ss_base_model_version`` or Stability's ``modelspec.architecture`` that name
#: a model lorasel does not render (its bases are SD 1.x, 2.x and SDXL), and how to say it.
_OTHER_MODELS = (
    (("flux",), "Flux"),
    (("sd3", "stable-diffusion-3"), "SD 3"),
    (("chroma",), "Chroma"),
    (("lumina",), "Lumina"),
    (("hunyuan",), "Hunyuan"),
    (("qwen",), "Qwen-Image"),
    (("z-image", "z_image", "zimage"), "Z-Image"),
    (("hidream",), "HiDream"),
    (("wan2", "wan-", "wan_"), "Wan"),
    (("auraflow",), "AuraFlow"),
    (("pixart",), "PixArt"),
)
# Module paths of diffusion transformers: Flux's double and single stream blocks (kohya's, ComfyUI's
# and BFL's names); diffusers' and PEFT's ``transformer`` (Flux, SD 3, ...); SD 3's T5 (``lora_te3_``).
_DIT_KEY = re.compile(
    r"(^|[._])(double_blocks|single_blocks)[._]"
    r"|^(transformer\.|lora_transformer_|base_model\.model\.(single_)?transformer_blocks\.)"
)


def other_model(keys: Iterable[str] = (), metadata: Mapping[str, str] | None = None) -> str | None:
    """The model a LoRA is for when it is not SD 1.x, 2.x or SDXL, as its keys or metadata say
    ("Flux", "SD 3", "a diffusion transformer", ...), else None. Only LoRA keys count (with
    "lora" in them): a full Flux or SD 3 model is not a LoRA for one."""
    for key in keys:
        if "lora" not in key.lower():
            continue
        if key.startswith("lora_te3_"):
            return "SD 3"
        if _DIT_KEY.search(key):
            return "Flux" if ("double_blocks" in key or "single_blocks" in key) else "a diffusion transformer"
        if key.startswith("diffusion_model.") and not key[len("diffusion_model.") :].startswith(SGM_UNET):
            return "a diffusion transformer"  # ComfyUI's names; its SD UNet paths are SGM's
    metadata = metadata or {}
    text = " ".join(str(metadata.get(k) or "") for k in ("ss_base_model_version", "modelspec.architecture"))
    text = text.lower()
    for words, name in _OTHER_MODELS:
        if any(word in text for word in words):
            return name
    return None
