"""The toy CLIP's text tower as the base pipeline's ``CLIPTextModel``.

Real Stable Diffusion conditions its UNet on a frozen, pretrained CLIP text encoder; the toy
world does the same: the base's text encoder is the toy CLIP's text transformer, converted
from open_clip's layout to transformers' and frozen while the UNet learns to draw. (The UNet
never sees the concepts' shapes, so the base cannot draw them, whatever their words mean.)
"""

from __future__ import annotations

import torch


def open_clip_text_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an open_clip CLIP state dict's text tower to ``transformers.CLIPTextModel`` keys."""
    out = {
        "embeddings.token_embedding.weight": state["token_embedding.weight"],
        "embeddings.position_embedding.weight": state["positional_embedding"],
        "final_layer_norm.weight": state["ln_final.weight"],
        "final_layer_norm.bias": state["ln_final.bias"],
    }
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks.")})
    for i in layers:
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        q, k, v = state[src + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = state[src + "attn.in_proj_bias"].chunk(3)
        out |= {
            dst + "self_attn.q_proj.weight": q,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.q_proj.bias": qb,
            dst + "self_attn.k_proj.bias": kb,
            dst + "self_attn.v_proj.bias": vb,
            dst + "self_attn.out_proj.weight": state[src + "attn.out_proj.weight"],
            dst + "self_attn.out_proj.bias": state[src + "attn.out_proj.bias"],
            dst + "layer_norm1.weight": state[src + "ln_1.weight"],
            dst + "layer_norm1.bias": state[src + "ln_1.bias"],
            dst + "layer_norm2.weight": state[src + "ln_2.weight"],
            dst + "layer_norm2.bias": state[src + "ln_2.bias"],
            dst + "mlp.fc1.weight": state[src + "mlp.c_fc.weight"],
            dst + "mlp.fc1.bias": state[src + "mlp.c_fc.bias"],
            dst + "mlp.fc2.weight": state[src + "mlp.c_proj.weight"],
            dst + "mlp.fc2.bias": state[src + "mlp.c_proj.bias"],
        }
    return {k: v.clone() for k, v in out.items()}
