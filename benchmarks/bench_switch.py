"""Section "switch": how much a checkpoint/strength switch costs next to a render, and what a merged
checkpoint costs at inference, on the full-size SD1.5 UNet architecture.

Setup: diffusers' SD1.5 UNet config written in code, random weights (speed does not depend on the
values); two kohya-format rank-32 LoRAs (alpha 16) on every attention (to_q/k/v/out) and
feed-forward (ff.net.0.proj, ff.net.2) layer; CUDA in fp16 when present, else CPU in fp32.

Measured in one run, interleaved, ratios of the best of N:
- one UNet step at 512×512 with CFG (batch 2): bare base, our merged checkpoint, and diffusers'
  unfused PEFT path (``add_adapter`` + ``set_adapters``, the extra low-rank matmuls per layer);
  a 20-step render is extrapolated as 20 × one step on CPU (a real 20-step render on CPU takes
  many minutes), measured directly on CUDA;
- a switch: ``apply`` of the other checkpoint (restore + ΔW + W0 + s·ΔW), and a strength change
  of the same checkpoint (cached ΔW), and the first apply (pristine copies made).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
RANK, ALPHA = 32, 16.0


def sd15_unet():
    """The SD1.5 UNet architecture (runwayml/stable-diffusion-v1-5 unet/config.json), random weights."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
        act_fn="silu",
        center_input_sample=False,
        downsample_padding=1,
        flip_sin_to_cos=True,
        freq_shift=0,
        mid_block_scale_factor=1,
        norm_eps=1e-05,
    )


def target_layers(unet) -> dict[str, torch.nn.Linear]:
    return {
        name: layer
        for name, layer in unet.named_modules()
        if isinstance(layer, torch.nn.Linear) and "transformer_blocks" in name and name.endswith(TARGETS)
    }


def kohya_file(unet, path: Path, seed: int) -> Path:
    from lorasel.checkpoints import save_checkpoint

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, layer in target_layers(unet).items():
        out_dim, in_dim = layer.weight.shape
        stem = "lora_unet_" + name.replace(".", "_")
        tensors[f"{stem}.lora_down.weight"] = (torch.randn(RANK, in_dim, generator=gen) / in_dim**0.5).half()
        tensors[f"{stem}.lora_up.weight"] = (torch.randn(out_dim, RANK, generator=gen) * 0.01).half()
        tensors[f"{stem}.alpha"] = torch.tensor(ALPHA)
    return save_checkpoint(path, tensors, {"ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA)})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def run(out_dir: Path) -> str:
    from lorasel.checkpoints import apply, read_checkpoint, restore

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    steps_measured = 20 if device.type == "cuda" else 1
    reps = 5 if device.type == "cuda" else 3
    torch.manual_seed(0)
    build = time.perf_counter()
    unet = sd15_unet().to(device=device, dtype=dtype).eval()
    build = time.perf_counter() - build
    n_params = sum(p.numel() for p in unet.parameters())
    layers = target_layers(unet)
    touched = sum(layer.weight.numel() for layer in layers.values())

    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 64, 64, generator=gen).to(device, dtype)
    context = torch.randn(2, 77, 768, generator=gen).to(device, dtype)

    def render():
        with torch.inference_mode():
            for i in range(steps_measured):
                unet(latents, torch.tensor([999 - 50 * i] * 2, device=device), context)

    with tempfile.TemporaryDirectory() as tmp:
        files = [kohya_file(unet, Path(tmp) / f"lora_{i}.safetensors", seed=10 + i) for i in range(2)]
        read = time.perf_counter()
        checkpoints = [read_checkpoint(f) for f in files]
        read = (time.perf_counter() - read) / 2
        file_mb = files[0].stat().st_size / 1e6

    from peft import LoraConfig

    def peft_on():
        """diffusers' unfused path: PEFT LoRA layers + set_adapters, an extra low-rank matmul per layer."""
        unet.add_adapter(
            LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(TARGETS)), adapter_name="bench"
        )
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.01)
        unet.set_adapters(["bench"], weights=[1.0])

    _timed(render, device)  # warm-up: allocator, kernels
    # Interleaved reps (base, merged, PEFT): ratios are taken within a rep, so a busy machine's
    # drifting load cancels out; the reported ratio is the median over reps.
    base_times, merged_times, peft_times = [], [], []
    first_apply = None
    for _ in range(reps):
        base_times.append(_timed(render, device))
        t = _timed(lambda: apply(unet, checkpoints[0], 1.0), device)
        first_apply = t if first_apply is None else first_apply
        merged_times.append(_timed(render, device))
        restore(unet)
        peft_on()
        peft_times.append(_timed(render, device))
        unet.delete_adapters("bench")

    # Switches: to the other checkpoint (restore + ΔW + apply), and strength changes (cached ΔW).
    apply(unet, checkpoints[0], 1.0)
    switch_ckpt, switch_strength = [], []
    for i in range(6):
        switch_ckpt.append(_timed(lambda i=i: apply(unet, checkpoints[(i + 1) % 2], 1.0), device))
    for s in (0.5, 0.75, 1.0, 0.5, 0.75, 1.0):
        switch_strength.append(_timed(lambda s=s: apply(unet, checkpoints[1], s), device))
    restore(unet, release=True)

    # Best of the reps: on a shared machine the minimum is the estimate least touched by others' load.
    base = min(base_times)
    merged_ratio = min(merged_times) / base
    peft_ratio = min(peft_times) / base
    spread = ", ".join(f"{m / b:.3f}" for m, b in zip(merged_times, base_times, strict=True))
    per_render = 20 / steps_measured
    render_20 = base * per_render
    ckpt_switch = statistics.median(switch_ckpt)
    strength_switch = statistics.median(switch_strength)
    where = f"{device.type} ({dtype})".replace("torch.", "")
    extrapolated = (
        "measured directly (20 steps)"
        if steps_measured == 20
        else f"extrapolated: {per_render:.0f} × one measured UNet step (CFG batch 2), a real one takes minutes here"
    )
    rows = [
        ("one 512×512 20-step render, bare base", f"{render_20:.1f} s", extrapolated),
        ("checkpoint switch (restore + ΔW + apply)", f"{ckpt_switch:.3f} s", f"median of {len(switch_ckpt)}"),
        ("  as a fraction of one render", f"**{ckpt_switch / render_20:.2%}**", "target ≤ 5%"),
        (
            "strength switch, same checkpoint (cached ΔW)",
            f"{strength_switch:.3f} s",
            f"{strength_switch / render_20:.2%} of a render",
        ),
        ("first apply (pristine copies made once)", f"{first_apply:.3f} s", "once per pipeline"),
        (
            "render with merged checkpoint ÷ bare base",
            f"**{merged_ratio:.3f}**",
            f"target ≤ 1.02; rep by rep {spread}",
        ),
        (
            "diffusers unfused PEFT (`set_adapters`) ÷ bare base",
            f"{peft_ratio:.3f}",
            "what merging avoids",
        ),
        ("merged ÷ unfused PEFT", f"{merged_ratio / peft_ratio:.3f}", ""),
        (
            "read_checkpoint of one file",
            f"{read:.3f} s",
            f"{file_mb:.0f} MB, {len(checkpoints[0].modules)} modules",
        ),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    return f"""## switch: checkpoint and strength switches on the SD1.5 UNet

What: the full-size SD1.5 UNet architecture ({n_params / 1e6:.0f} M parameters, random weights, built in
{build:.0f} s) on {where}, two rank-{RANK} kohya LoRAs on all {len(layers)} attention and feed-forward
layers ({touched / 1e6:.0f} M weights touched, pristine copies {touched * unet.dtype.itemsize / 1e9:.2f} GB).
Renders: {reps} reps of (base, merged, PEFT) interleaved; ratios of the best (minimum) times, with the
merged ÷ base ratio of each rep beside it to show the machine's noise; switch times the median of 6.

| measure | value | note |
|---|---|---|
{table}

Reproduce: `python -m benchmarks.run switch` (CUDA fp16 when a GPU is present, else CPU fp32).
"""


if __name__ == "__main__":
    print(run(Path(tempfile.gettempdir())))
