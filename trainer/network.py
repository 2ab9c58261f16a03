"""The trained network: peft adapters on the diffusers UNet (and optionally the text encoders).

Which layers are adapted follows kohya (REFERENCE §2):

- ``attention``: to_q / to_k / to_v / to_out.0 of the attention blocks;
- ``kohya``: every Linear and 1×1 Conv2d inside ``Transformer2DModel`` (sd-scripts' default);
- ``full``: kohya's plus every Linear / Conv2d inside ``ResnetBlock2D``, ``Downsample2D`` and
  ``Upsample2D`` (LoCon; 3×3 convs get the conv rank and alpha). ``algo = "locon"`` implies it.

Text encoders get ``CLIPAttention`` (+ ``CLIPMLP`` unless ``attention``) Linear layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from trainer.config import NetworkConfig

ADAPTER = "default"
TRANSFORMER_BLOCKS = ("Transformer2DModel",)
CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_BLOCKS = ("CLIPAttention", "CLIPMLP")
ATTENTION_LEAVES = ("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "out_proj")


def _is_target_layer(module: nn.Module, *, convs: bool) -> bool:
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d):
        return convs or module.kernel_size == (1, 1)
    return False


def _is_conv3(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)


def find_targets(
    model: nn.Module, blocks: tuple[str, ...], *, attention_only: bool = False, convs: bool = False
) -> list[str]:
    """Dotted names of the layers to adapt: Linear / Conv2d inside modules of class ``blocks``."""
    names: list[str] = []
    for block_name, block in model.named_modules():
        if type(block).__name__ not in blocks:
            continue
        for child_name, child in block.named_modules():
            if not child_name or not _is_target_layer(child, convs=convs):
                continue
            if attention_only and not child_name.endswith(ATTENTION_LEAVES):
                continue
            full = f"{block_name}.{child_name}" if block_name else child_name
            if full not in names:
                names.append(full)
    return names


def unet_targets(unet: nn.Module, config: NetworkConfig) -> list[str]:
    if config.targets == "attention":
        return find_targets(unet, TRANSFORMER_BLOCKS, attention_only=True)
    names = find_targets(unet, TRANSFORMER_BLOCKS)
    if config.trains_convs:
        names += [n for n in find_targets(unet, CONV_BLOCKS, convs=True) if n not in names]
    return names


def text_encoder_targets(text_encoder: nn.Module, config: NetworkConfig) -> list[str]:
    return find_targets(text_encoder, TEXT_BLOCKS, attention_only=config.targets == "attention")


def peft_config(config: NetworkConfig, targets: list[str], conv_targets: list[str]):
    """The peft config of ``config.algo`` for exactly ``targets`` (3×3 convs in ``conv_targets``)."""
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    # Exact module names as patterns: peft matches rank/alpha patterns as regex suffixes.
    rank_pattern = {re.escape(n): config.effective_conv_rank for n in conv_targets}
    alpha_pattern = {re.escape(n): config.effective_conv_alpha for n in conv_targets}
    common = {"target_modules": list(targets), "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern}
    if config.algo in ("lora", "locon", "dora"):
        return LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            use_rslora=config.rslora,
            use_dora=config.algo == "dora",
            init_lora_weights=True,
            **common,
        )
    lycoris = {
        "r": config.rank,
        "alpha": config.alpha,
        "rank_dropout": config.rank_dropout,
        "module_dropout": config.module_dropout,
        "use_effective_conv2d": config.tucker,
        **common,
    }
    if config.algo == "loha":
        return LoHaConfig(**lycoris)
    return LoKrConfig(
        decompose_both=config.decompose_both, decompose_factor=config.decompose_factor, **lycoris
    )


@dataclass
class Network:
    """The adapted models by role (``unet``, ``text_encoder``, ``text_encoder_2``) and their targets."""

    config: NetworkConfig
    models: dict[str, nn.Module] = field(default_factory=dict)
    targets: dict[str, list[str]] = field(default_factory=dict)

    def parameters(self, role: str) -> list[nn.Parameter]:
        return [p for p in self.models[role].parameters() if p.requires_grad]

    @property
    def roles(self) -> list[str]:
        return list(self.models)

    def named_trainable(self) -> dict[str, nn.Parameter]:
        """Every trainable parameter, named ``role.dotted.path`` (the training state's keys)."""
        return {
            f"{role}.{n}": p
            for role, m in self.models.items()
            for n, p in m.named_parameters()
            if p.requires_grad
        }


def text_encoders(pipeline) -> dict[str, nn.Module]:
    out = {}
    for role in ("text_encoder", "text_encoder_2"):
        model = getattr(pipeline, role, None)
        if model is not None:
            out[role] = model
    return out


def add_network(pipeline, config: NetworkConfig, *, seed: int = 0) -> Network:
    """Freeze the pipeline and inject fresh adapters; adapter weights are float32 (trained in fp32).

    The adapters' initialisation draws from torch's RNG, so it is seeded here.
    """
    from peft import inject_adapter_in_model

    network = Network(config=config)
    roles: dict[str, nn.Module] = {"unet": pipeline.unet}
    if config.train_text_encoder:
        roles.update(text_encoders(pipeline))
    for model in (pipeline.unet, pipeline.vae, *text_encoders(pipeline).values()):
        model.requires_grad_(False)
    torch.manual_seed(seed)
    for role, model in roles.items():
        targets = unet_targets(model, config) if role == "unet" else text_encoder_targets(model, config)
        modules = dict(model.named_modules())
        conv_targets = [n for n in targets if _is_conv3(modules[n])]
        inject_adapter_in_model(peft_config(config, targets, conv_targets), model, ADAPTER)
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
        network.models[role] = model
        network.targets[role] = targets
    return network
