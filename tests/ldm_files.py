"""SD 1.x and SDXL pipelines written as one original-layout (LDM) checkpoint file, the format
A1111, ComfyUI and kohya's scripts save, for tests of loading such a file.

The names are those of the original modules, written from their structure:
``openaimodel.UNetModel`` under ``model.diffusion_model`` (a level is ``layers_per_block`` input
blocks, resnet ``.0`` and attention ``.1``, then a downsampler block; an up level has one block
more, its upsampler after the attention; SDXL's added embedding is ``label_emb``), the
autoencoder's ``Encoder``/``Decoder`` under ``first_stage_model``, and the text encoders:
SD 1.x's ``FrozenCLIPEmbedder`` under ``cond_stage_model.transformer``, SDXL's under
``conditioner.embedders.0.transformer`` and its OpenCLIP ViT-bigG as open_clip names it
(``resblocks``, one ``in_proj`` for q, k and v, ``text_projection`` as a matrix) under
``conditioner.embedders.1.model``.
"""

from __future__ import annotations

import re

import torch

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def ldm_unet_name(name: str, layers_per_block: int = 2, up_attention: tuple[bool, ...] = ()) -> str:
    """A diffusers UNet layer path or parameter key -> the original (LDM/SGM) one, as kohya also
    names SDXL's LoRA modules. ``up_attention``: whether each up level has attentions (where its
    upsampler sits); needed only for upsamplers."""
    per = layers_per_block + 1

    def resnet(rest: str) -> str:
        head, _, tail = rest.partition(".")
        return RESNET.get(head, head) + ("." + tail if tail else "")

    if top := next((k for k in UNET_TOP if name == k or name.startswith(k + ".")), None):
        return UNET_TOP[top] + name[len(top) :]
    if m := re.match(r"(down|up)_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)", name):
        side, level, kind, layer, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        block = (1 + level * per if side == "down" else level * per) + layer
        inner = f"1.{rest}" if kind == "attentions" else f"0.{resnet(rest)}"
        return f"{'input' if side == 'down' else 'output'}_blocks.{block}.{inner}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv(.*)", name):
        return f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op{m[2]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv(.*)", name):
        level = int(m[1])
        return f"output_blocks.{level * per + per - 1}.{2 if up_attention[level] else 1}.conv{m[2]}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)", name):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", name):
        return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
    raise KeyError(f"no LDM name for UNet {name}")


def unet_to_ldm(unet) -> dict:
    config = unet.config
    up_attention = tuple(t.startswith("CrossAttn") for t in config.up_block_types)
    return {
        f"model.diffusion_model.{ldm_unet_name(key, config.layers_per_block, up_attention)}": tensor
        for key, tensor in unet.state_dict().items()
    }


def vae_to_ldm(vae) -> dict:
    levels = len(vae.config.up_block_types)
    out = {}
    for key, tensor in vae.state_dict().items():
        new = key
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            new = f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}"
            if m[2] != "group_norm" and m[3] == "weight":
                tensor = tensor[:, :, None, None]  # ldm's attention projections are 1x1 convolutions
        elif m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
            new = f"{m[1]}.norm_out.{m[2]}"
        new = new.replace("conv_shortcut", "nin_shortcut")
        out[f"first_stage_model.{new}"] = tensor
    return out


def clip_to_ldm(text_encoder, prefix: str) -> dict:
    # As transformers 4 saved it (and so every file has it): the text model under ``text_model``.
    return {
        f"{prefix}text_model.{k.removeprefix('text_model.')}": v for k, v in text_encoder.state_dict().items()
    }


def open_clip_to_ldm(text_encoder, prefix: str) -> dict:
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    out = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
        "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    for layer in range(text_encoder.config.num_hidden_layers):
        here = f"encoder.layers.{layer}."
        there = f"transformer.resblocks.{layer}."
        for param in ("weight", "bias"):
            qkv = [state.pop(f"{here}self_attn.{p}_proj.{param}") for p in "qkv"]
            out[f"{there}attn.in_proj_{param}"] = torch.cat(qkv)
            for name, ldm in OPEN_CLIP_LAYER.items():
                out[f"{there}{ldm}.{param}"] = state.pop(f"{here}{name}.{param}")
    if state:
        raise KeyError(f"no open_clip name for {sorted(state)}")
    return {prefix + k: v for k, v in out.items()}


def sd1_to_ldm(pipe) -> dict:
    """An SD 1.x pipeline's UNet, VAE and text encoder as one original-layout state dict."""
    text = clip_to_ldm(pipe.text_encoder, "cond_stage_model.transformer.")
    return {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae), **text}


def sdxl_to_ldm(pipe) -> dict:
    """An SDXL pipeline's UNet, VAE and both text encoders as one original-layout state dict."""
    text = clip_to_ldm(pipe.text_encoder, "conditioner.embedders.0.transformer.")
    text_2 = open_clip_to_ldm(pipe.text_encoder_2, "conditioner.embedders.1.model.")
    return {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae), **text, **text_2}
