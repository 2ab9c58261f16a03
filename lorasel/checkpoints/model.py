"""What a LoRA checkpoint is, once read: per-module factor tensors with their scale.

Every key format (kohya, LyCORIS, PEFT, diffusers, OMI, ComfyUI) is normalised into these plain
records; the ΔW maths (``lorasel.checkpoints.deltas``) and the merge into a pipeline
(``lorasel.checkpoints.merge``) only ever see them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

FORMATS = ("kohya", "lycoris", "peft", "diffusers", "omi", "comfyui")
FAMILIES = ("sd1", "sd2", "sdxl", "unknown")
ALGOS = (
    "lora", "locon", "lora_tucker", "loha", "lokr", "dora", "full", "norm", "oft", "boft", "glora", "ia3",
)  # fmt: skip
OFT_KINDS = ("oft", "boft")  # rotations: LyCORIS' diag-oft (and kohya's OFT), and its butterfly
# Pipeline components a LoRA can touch, in the order a component-less key is tried.
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


@dataclass(frozen=True, eq=False)
class LoraModule:
    """One adapted layer: its factors, and how to scale them.

    ``name`` is the key stem exactly as in the file. ``kind`` is the factorisation
    (``lora`` | ``loha`` | ``lokr`` | ``full`` | ``norm`` | ``oft`` | ``boft`` | ``glora`` | ``ia3``)
    whatever ``algo`` says (``dora`` hides it). An OFT's ``delta_shape`` is (output rows,): it rotates
    the base's weight, whatever its input width; ``alpha`` is its constraint. An (IA)³'s is
    (channels,): the output rows it scales, or the input columns when ``on_input``.
    ``component`` is the pipeline part the key names (``None`` when the file does not
    say: ``lycoris_`` and bare PEFT keys), ``target`` the layer's path inside it, dotted
    (``down_blocks.0.attentions.0.proj_in``) or flattened with ``_`` as kohya writes it.
    """

    name: str
    algo: str
    kind: str
    rank: int | None
    alpha: float | None
    scale: float
    tensors: Mapping[str, torch.Tensor]
    component: str | None
    target: str
    dotted: bool
    delta_shape: tuple[int, ...]
    dora_scale: torch.Tensor | None = None
    dora_on_output: bool = True
    bias_delta: torch.Tensor | None = None  # Δb at full strength (LyCORIS' diff_b / b_norm)
    on_input: bool = False  # (IA)³: the scale is on the input columns, not the output rows

    @property
    def out_features(self) -> int | None:
        """Output width; None when the factors do not say (an (IA)³ on the input)."""
        return None if self.on_input else self.delta_shape[0]

    @property
    def in_features(self) -> int | None:
        """Input width (times the kernel area when the factors flatten a conv); a norm layer's
        width for its 1-D ΔW; None when the factors do not say (OFT, (IA)³ on the output)."""
        if self.kind in OFT_KINDS or (self.kind == "ia3" and not self.on_input):
            return None
        return self.delta_shape[1] if len(self.delta_shape) > 1 else self.delta_shape[0]

    @property
    def flat_target(self) -> str:
        return self.target.replace(".", "_")


@dataclass(frozen=True, eq=False)
class LoraCheckpoint:
    """A LoRA file, read and validated. Tensors stay on CPU in the file's dtype."""

    path: Path
    format: str
    base_family: str
    metadata: dict[str, str]
    epoch: int | None
    step: int | None
    modules: tuple[LoraModule, ...]
    trigger: str | None
    class_word: str | None
    sha256: str
    prediction: str | None = None  # what the file says its base predicts (stated_prediction)
    #: Textual-inversion embeddings bundled with the LoRA (pivotal tuning): name → {text encoder →
    #: vectors [n, width]}; ``apply`` adds them as tokens, ``restore`` takes them out again.
    embeddings: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms present, in order of first appearance."""
        return tuple(dict.fromkeys(m.algo for m in self.modules))

    @property
    def trains_text_encoder(self) -> bool:
        """Some module changes a text encoder's weights."""
        return any(m.component in TEXT_ENCODERS or _te_target(m) for m in self.modules)

    @property
    def touches_text_encoder(self) -> bool:
        """The prompts' encoding changes: text-encoder modules, or bundled embeddings."""
        return self.trains_text_encoder or bool(self.embeddings)

    @property
    def touches_unet(self) -> bool:
        return any(m.component == "unet" or (m.component is None and not _te_target(m)) for m in self.modules)


def _te_target(module: LoraModule) -> bool:
    """A component-less key (``lycoris_``, bare PEFT) that names a CLIP text-encoder layer."""
    return module.component is None and module.flat_target.startswith(("text_model_", "encoder_layers_"))
