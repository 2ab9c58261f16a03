"""Section "switch": how much a checkpoint/strength switch costs next to a render, and what a merged
checkpoint costs at inference, on the full-size SD1.5 UNet architecture.

Setup: diffusers' SD1.5 UNet config written in code, random weights (speed does not depend on the
values); two kohya-format rank-32 LoRAs (alpha 16) on every attention (to_q/k/v/out) and
feed-forward (ff.net.0.proj, ff.net.2) layer; CUDA in fp16 when present, else CPU in fp32.

Measured in one run:
- a 20-step 512×512 render of the bare base (CFG, batch 2): measured on CUDA, extrapolated as
  20 × one measured UNet step on CPU (a real one takes many minutes there);
- render time with our merged checkpoint and with diffusers' unfused PEFT path (``add_adapter`` +
  ``set_adapters``: an extra low-rank matmul per layer), each ÷ the bare base, as the median of
  per-rep ratios over interleaved reps (256 px steps on CPU, 20-step 512 px renders on CUDA);
- a switch: ``apply`` of the other checkpoint (restore + ΔW + W0 + s·ΔW), a strength change of the
  same checkpoint (cached ΔW), and the first apply (pristine copies made);
- a switch to a checkpoint of each other algorithm lorasel merges (LoHa, LoKr, DoRA, OFT, GLoRA,
  (IA)³) on the same layers, as a ratio to a LoRA switch measured in the same rounds.
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


# The other algorithms lorasel merges, on the same layers at a size comparable with the rank-32
# LoRA's: their switch costs next to a LoRA's. LoHa's rank is half (its ΔW has rank r²); LoKr a
# factor of 8 with a rank-32 second factor; DoRA a LoRA with a magnitude per output row; OFT
# blocks of 32 rows; GLoRA rank 32.
ALGORITHMS = ("loha", "lokr", "dora", "oft", "glora", "ia3")
_ALGORITHM_LABELS = {
    "lora": "LoRA", "loha": "LoHa", "lokr": "LoKr", "dora": "DoRA", "oft": "OFT (diag-oft)",
    "glora": "GLoRA", "ia3": "(IA)³",
}  # fmt: skip


def algorithm_file(layers: dict[str, torch.nn.Linear], algo: str, path: Path, seed: int) -> Path:
    """A kohya (``lora``) or LyCORIS file of ``algo`` on ``layers`` (Linear): seeded random fp16 factors."""
    from lorasel.checkpoints import save_checkpoint

    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.01):
        return (torch.randn(*shape, generator=gen) * std).half()

    tensors = {}
    for name, layer in layers.items():
        out_dim, in_dim = layer.weight.shape
        stem = "lora_unet_" + name.replace(".", "_")
        t: dict[str, torch.Tensor] = {}
        if algo in ("lora", "dora"):
            t = {
                "lora_down.weight": rand(RANK, in_dim, std=in_dim**-0.5),
                "lora_up.weight": rand(out_dim, RANK),
            }
            if algo == "dora":
                t["dora_scale"] = (layer.weight.float().norm(dim=1, keepdim=True) * 1.01).half()
        elif algo == "loha":
            r = RANK // 2
            t = {"hada_w1_a": rand(out_dim, r, std=0.1), "hada_w1_b": rand(r, in_dim, std=0.1)}
            t |= {"hada_w2_a": rand(out_dim, r, std=0.1), "hada_w2_b": rand(r, in_dim, std=0.1)}
        elif algo == "lokr":
            t = {"lokr_w1": rand(8, 8, std=0.1), "lokr_w2_a": rand(out_dim // 8, RANK, std=0.1)}
            t["lokr_w2_b"] = rand(RANK, in_dim // 8, std=0.1)
        elif algo == "oft":
            t = {"oft_blocks": rand(out_dim // 32, 32, 32)}
        elif algo == "glora":
            t = {"a1.weight": rand(in_dim, RANK), "a2.weight": rand(RANK, in_dim, std=in_dim**-0.5)}
            t |= {"b1.weight": rand(out_dim, RANK), "b2.weight": rand(RANK, in_dim, std=in_dim**-0.5)}
        elif algo == "ia3":
            t = {"weight": rand(out_dim, std=0.05), "on_input": torch.tensor(0)}
        if algo not in ("ia3",):
            t["alpha"] = torch.tensor(0.0 if algo == "oft" else ALPHA)
        tensors |= {f"{stem}.{k}": v for k, v in t.items()}
    network = "networks.lora" if algo == "lora" else "lycoris.kohya"
    meta = {"ss_network_module": network, "ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA)}
    return save_checkpoint(path, tensors, meta)


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
    from peft import LoraConfig

    from benchmarks.selection_analysis import median_interval
    from lorasel.checkpoints import apply, read_checkpoint, restore

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    # CPU: a 512 px step takes ~20-40 s here, so the render is 20 × one step, and the ratios are
    # measured on many cheaper 256 px steps (same layers, same weights) for a stable median: 16
    # reps, as a shared 2-core machine's per-rep ratios spread ±15% (8 put the median 0.99-1.03).
    render_steps, ratio_latent, ratio_steps, reps = (20, 64, 20, 5) if cuda else (1, 32, 1, 16)
    torch.manual_seed(0)
    build = time.perf_counter()
    unet = sd15_unet().to(device=device, dtype=dtype).eval()
    build = time.perf_counter() - build
    n_params = sum(p.numel() for p in unet.parameters())
    layers = target_layers(unet)
    touched = sum(layer.weight.numel() for layer in layers.values())

    def make_render(latent: int, steps: int):
        gen = torch.Generator().manual_seed(1)
        latents = torch.randn(2, 4, latent, latent, generator=gen).to(device, dtype)  # CFG: batch 2
        context = torch.randn(2, 77, 768, generator=gen).to(device, dtype)

        def render():
            with torch.inference_mode():
                for i in range(steps):
                    unet(latents, torch.tensor([999 - 50 * i] * 2, device=device), context)

        return render

    render_512 = make_render(64, render_steps)
    render_ratio = make_render(ratio_latent, ratio_steps)

    with tempfile.TemporaryDirectory() as tmp:
        files = [
            algorithm_file(layers, "lora", Path(tmp) / f"lora_{i}.safetensors", seed=10 + i) for i in range(2)
        ]
        read = time.perf_counter()
        checkpoints = [read_checkpoint(f) for f in files]
        read = (time.perf_counter() - read) / 2
        file_mb = files[0].stat().st_size / 1e6

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

    _timed(render_512, device)  # warm-up: allocator, kernels
    base_512 = min(_timed(render_512, device) for _ in range(2))
    first_apply = _timed(lambda: apply(unet, checkpoints[0], 1.0), device)
    restore(unet)

    # Interleaved reps, the order reversed every other rep (base, merged, PEFT / PEFT, merged, base):
    # ratios within a rep cancel a busy machine's drifting load and any order effect; the median
    # over reps ignores its spikes.
    def measure(state: str) -> float:
        if state == "peft":
            restore(unet)
            peft_on()
            t = _timed(render_ratio, device)
            unet.delete_adapters("bench")
            return t
        if state == "merged":
            apply(unet, checkpoints[0], 1.0)
        else:
            restore(unet)
        return _timed(render_ratio, device)

    _timed(render_ratio, device)
    times: dict[str, list[float]] = {"base": [], "merged": [], "peft": []}
    for rep in range(reps):
        for state in ("base", "merged", "peft") if rep % 2 == 0 else ("peft", "merged", "base"):
            times[state].append(measure(state))
    restore(unet)
    base_t, merged_t, peft_t = times["base"], times["merged"], times["peft"]
    merged_reps = [m / b for m, b in zip(merged_t, base_t, strict=True)]
    peft_reps = [p / b for p, b in zip(peft_t, base_t, strict=True)]
    merged_ratio, peft_ratio = statistics.median(merged_reps), statistics.median(peft_reps)
    merged_low, merged_high = median_interval(merged_reps)
    peft_low, peft_high = median_interval(peft_reps)
    merged_best, peft_best = min(merged_t) / min(base_t), min(peft_t) / min(base_t)

    # Switches: to the other checkpoint (restore + ΔW + apply), and strength changes (cached ΔW).
    apply(unet, checkpoints[0], 1.0)
    switch_ckpt = [_timed(lambda i=i: apply(unet, checkpoints[(i + 1) % 2], 1.0), device) for i in range(6)]
    switch_strength = [
        _timed(lambda s=s: apply(unet, checkpoints[1], s), device) for s in (0.5, 0.75, 1.0) * 2
    ]
    # Every other algorithm's switch, in rounds with LoRA's (each round switches to each in turn,
    # alternating its two files): per-round ratios to LoRA's switch cancel the machine's drift.
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        others = {
            algo: [
                read_checkpoint(algorithm_file(layers, algo, folder / f"{algo}_{i}.safetensors", 20 + i))
                for i in range(2)
            ]
            for algo in ALGORITHMS
        }
    others["lora"] = checkpoints
    switches: dict[str, list[float]] = {algo: [] for algo in others}
    for rnd in range(4):
        for algo in ("lora", *ALGORITHMS):
            checkpoint = others[algo][rnd % 2]
            switches[algo].append(_timed(lambda c=checkpoint: apply(unet, c, 1.0), device))
    restore(unet, release=True)

    render_20 = base_512 * 20 / render_steps
    ckpt_switch = statistics.median(switch_ckpt)
    strength_switch = statistics.median(switch_strength)
    where = f"{device.type} ({dtype})".replace("torch.", "")
    how_render = (
        "measured (20 steps, best of 2)"
        if render_steps == 20
        else "extrapolated: 20 × one measured 512 px UNet step (CFG batch 2, best of 2)"
    )
    ratio_how = f"{ratio_latent * 8} px, median of {reps} interleaved reps"
    rows = [
        ("one 512×512 20-step render, bare base", f"{render_20:.1f} s", how_render),
        ("checkpoint switch (restore + ΔW + apply)", f"{ckpt_switch:.3f} s", f"median of {len(switch_ckpt)}"),
        ("  as a fraction of one render", f"**{ckpt_switch / render_20:.2%}**", "target ≤ 5%"),
        ("strength switch, same checkpoint (cached ΔW)", f"{strength_switch:.3f} s", f"{strength_switch / render_20:.2%} of a render"),
        ("first apply (pristine copies made once)", f"{first_apply:.3f} s", "once per pipeline"),
        ("render with merged checkpoint ÷ bare base", f"**{merged_ratio:.3f}**", f"target ≤ 1.02; {ratio_how} (95% interval {merged_low:.3f}–{merged_high:.3f}); best ÷ best {merged_best:.3f}"),
        ("diffusers unfused PEFT (`set_adapters`) ÷ bare base", f"{peft_ratio:.3f}", f"{ratio_how} (95% interval {peft_low:.3f}–{peft_high:.3f}); best ÷ best {peft_best:.3f}"),
        ("merged ÷ unfused PEFT", f"{merged_ratio / peft_ratio:.3f}", ""),
        ("read_checkpoint of one file", f"{read:.3f} s", f"{file_mb:.0f} MB, {len(checkpoints[0].modules)} modules"),
    ]  # fmt: skip
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    algo_rows = []
    for algo in ("lora", *ALGORITHMS):
        ratio = statistics.median(t / lo for t, lo in zip(switches[algo], switches["lora"], strict=True))
        took = statistics.median(switches[algo])
        algo_rows.append(
            f"| {_ALGORITHM_LABELS[algo]} | {took:.3f} s | {ratio:.2f} | {took / render_20:.2%} |"
        )
    algo_table = "\n".join(algo_rows)
    per_rep = ", ".join(f"{r:.3f}" for r in merged_reps)
    return f"""## switch: checkpoint and strength switches on the SD1.5 UNet

What: the full-size SD1.5 UNet architecture ({n_params / 1e6:.0f} M parameters, random weights, built in
{build:.0f} s) on {where}, two rank-{RANK} kohya LoRAs on all {len(layers)} attention and feed-forward
layers ({touched / 1e6:.0f} M weights touched, pristine copies {touched * dtype.itemsize / 1e9:.2f} GB).
Switch times are the median of 6. Merged ÷ base per rep: {per_rep} (the spread is the shared
machine's noise: merged and base run the same kernels on same-shaped weights).

| measure | value | note |
|---|---|---|
{table}

A checkpoint switch by algorithm, on the same {len(layers)} layers (median of 4 rounds; LoHa rank
{RANK // 2}, LoKr factor 8 with a rank-{RANK} second factor, DoRA rank {RANK}, OFT blocks of 32 rows,
GLoRA rank {RANK}). OFT's, GLoRA's and (IA)³'s ΔW are computed from the base weight, DoRA's
rescaled by it:

| algorithm | switch | ÷ LoRA switch (per round) | of one render |
|---|---|---|---|
{algo_table}

Reproduce: `python -m benchmarks.run switch` (CUDA fp16 when a GPU is present, else CPU fp32).
"""


if __name__ == "__main__":
    print(run(Path(tempfile.gettempdir())))
