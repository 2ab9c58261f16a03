"""Pretrain the toy world's base model and scorer: ``python -m lorasel.toyworld.pretrain``.

Stages (each cached in ``--work`` so a stage can be rerun alone):

1. ``vae``    — AutoencoderKL on images of every world shape (an image codec knows no concepts).
2. ``clip``   — a CLIP, contrastively, on every shape (concepts included) with their class
   words; its text tower becomes the base's text encoder. 15% of (shape, colour, background)
   combinations are held out for evaluation throughout.
3. ``unet``   — the UNet as a text-to-image diffusion model conditioned on that text tower,
   frozen (as SD freezes OpenAI's CLIP), on the *base* shapes only (the LoRA concepts' shapes
   are never shown), held-out combinations excluded.
4. ``scorer`` — the evaluator's CLIP (``lorasel-toy-clip.json``: a small ResNet image tower,
   the clip stage's text tower to start from), on every shape, clean renders and renders
   round-tripped through the VAE, with hard negatives: groups of images that share colour
   and background and differ in shape. The ``clip`` stage's ViT learns colour and background
   long before shape; this one tells the 10 shapes apart (measured as it trains).
5. ``export`` — fp16 weights into ``lorasel/toyworld/weights/`` with ``pretrain.json``, the
   command, seed, steps, time and measurements of each file (``export-base`` and
   ``export-scorer`` write one of them).

Everything is seeded (CPU kernels may reduce in a different order with another thread count).
The committed weights were made stage by stage by earlier revisions of this script; a full run
of this one (54.5 min on 2 idle CPU cores with ``--threads 2 --workers 2``) gives other weights
that reach the same bars (``pretrain.json``, "rerun"). Run on CPU with the defaults, or on a GPU
with ``--device cuda``; the CPU run reaches the quality bars (reports/benchmarks.md).

This module is the command line, the stage order and export; the stages live in
:mod:`lorasel.toyworld.pretrain_base` (``vae``, ``clip``, ``unet``) and
:mod:`lorasel.toyworld.pretrain_scorer` (``scorer``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lorasel.toyworld.pretrain_base import log, train_clip, train_unet, train_vae

DEFAULTS = {"seed": 0, "vae_steps": 1500, "unet_steps": 3000, "clip_steps": 1500, "scorer_steps": 1500}
# --------------------------------------------------------------------------- export


def _non_stage_args(argv: list[str]) -> list[str]:
    """The command line without --stages/--note (which do not change the weights)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--stages", "--note"):
            skip = True
            continue
        if not a.startswith(("--stages=", "--note=")):
            out.append(a)
    return out


def _record(args) -> dict:
    import platform

    return {
        "command": " ".join(["python -m lorasel.toyworld.pretrain", *_non_stage_args(sys.argv[1:])]),
        "note": args.note,
        "seed": args.seed,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, device {args.device}",
    }


def export_base(args, work: Path, out: Path) -> dict:
    """The base pipeline (VAE, UNet, the clip stage's text tower) in fp16; returns its record."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from lorasel.toyworld.convert import open_clip_text_to_transformers
    from lorasel.toyworld.model import BASE_WEIGHTS, TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG

    seconds, tensors = {}, {}
    for stage, name, prefix in (("vae", "vae.safetensors", "vae."), ("unet", "unet.safetensors", "unet.")):
        with safe_open(str(work / name), framework="pt") as f:
            meta = f.metadata()
            seconds[stage] = float(meta["seconds"])
            if stage == "vae":
                scaling = float(meta["scaling_factor"])
            for k in f.keys():  # noqa: SIM118
                tensors[prefix + k] = f.get_tensor(k).half()
    with safe_open(str(work / "clip.safetensors"), framework="pt") as f:
        seconds["clip"] = float(f.metadata()["seconds"])
        clip_state = {k: f.get_tensor(k).half() for k in f.keys()}  # noqa: SIM118
    for k, v in open_clip_text_to_transformers(clip_state).items():
        tensors[f"text_encoder.{k}"] = v
    record = {
        **_record(args),
        "steps": {"vae": args.vae_steps, "clip": args.clip_steps, "unet": args.unet_steps},
        "unet": {"batch": args.unet_batch, "lr": args.unet_lr, "latents": args.n_latents},
        "vae_scaling_factor": scaling,
        "configs": {"unet": UNET_CONFIG, "vae": VAE_CONFIG, "text_encoder": TEXT_CONFIG},
        "seconds": {k: round(v) for k, v in seconds.items()},
    }
    save_file(tensors, out / BASE_WEIGHTS, metadata={"lorasel.toyworld": json.dumps(record)})
    return record


def export(args, work: Path, out: Path, parts: tuple[str, ...] = ("base", "scorer")) -> None:
    """fp16 weights into the package, and ``pretrain.json``: how each file was made."""
    out.mkdir(parents=True, exist_ok=True)
    index = out / "pretrain.json"
    records = json.loads(index.read_text()) if index.is_file() else {}
    if "base" in parts:
        records["base"] = export_base(args, work, out)
    if "scorer" in parts:
        from lorasel.toyworld.pretrain_scorer import export_scorer

        records["scorer"] = export_scorer(args, work, out)
    index.write_text(json.dumps(records, indent=2) + "\n")
    log(f"exported to {out}: {sum(p.stat().st_size for p in out.glob('*.safetensors')) / 1e6:.1f} MB")


# What each stage reads from --work (made by the named stage, this run or an earlier one).
STAGE_NEEDS = {
    "unet": ("vae", "clip"),
    "scorer": ("vae",),
    "export-base": ("vae", "clip", "unet"),
    "export-scorer": ("scorer",),
    "export": ("vae", "clip", "unet", "scorer"),
}


def _fail(message: str, hint: str) -> int:
    print(f"error: {message} (hint: {hint})", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lorasel.toyworld.pretrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--work", type=Path, default=Path(".pretrain"), help="cache of intermediate stages")
    parser.add_argument("--out", type=Path, default=None, help="weights folder (default: the package's)")
    parser.add_argument(
        "--stages",
        default="vae,clip,unet,scorer,export",
        help="comma-separated: vae, clip, unet, scorer, export (or export-base, export-scorer)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--note", default="", help="free text recorded with the exported weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--vae-steps", type=int, default=DEFAULTS["vae_steps"])
    parser.add_argument("--unet-steps", type=int, default=DEFAULTS["unet_steps"])
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--unet-snapshot", type=int, default=0, help="also save every N steps")
    parser.add_argument("--n-latents", type=int, default=16384)
    parser.add_argument("--clip-steps", type=int, default=DEFAULTS["clip_steps"])
    parser.add_argument("--clip-batch", type=int, default=128)
    parser.add_argument("--clip-lr", type=float, default=1e-3)
    parser.add_argument("--scorer-steps", type=int, default=DEFAULTS["scorer_steps"])
    parser.add_argument("--scorer-batch", type=int, default=64)
    parser.add_argument("--scorer-lr", type=float, default=1e-3)
    parser.add_argument("--scorer-pool", type=int, default=24, help="renders per (shape, colour, background)")
    parser.add_argument(
        "--scorer-hard", type=float, default=0.5, help="share of each batch in hard-negative groups"
    )
    parser.add_argument("--scorer-group", type=int, default=10, help="images per hard-negative group")
    parser.add_argument(
        "--scorer-init", type=Path, default=None, help="start from these weights (default: the clip stage's)"
    )
    parser.add_argument("--scorer-eval", type=int, default=500, help="measure (and save) every N steps")
    parser.add_argument("--scorer-config", type=Path, default=None, help="open_clip model config (JSON)")
    parser.add_argument("--workers", type=int, default=1, help="processes that render the scorer's pool")
    args = parser.parse_args(argv)
    stages = args.stages.split(",")
    known = ("vae", "clip", "unet", "scorer", "export", "export-base", "export-scorer")
    if unknown := [s for s in stages if s not in known]:
        return _fail(f"unknown stage {unknown[0]!r}", f"use some of {', '.join(known)}")
    if args.scorer_init and not args.scorer_init.is_file():
        return _fail(
            f"--scorer-init {args.scorer_init} is not a file", "give a .safetensors of the clip stage"
        )
    if args.scorer_config and not args.scorer_config.is_file():
        return _fail(
            f"--scorer-config {args.scorer_config} is not a file", "give an open_clip model config (JSON)"
        )
    for stage in stages:  # stages run in the order vae, clip, unet, scorer, export
        for need in STAGE_NEEDS.get(stage, ()):
            if need not in stages and not (args.work / f"{need}.safetensors").is_file():
                return _fail(
                    f"stage {stage!r} needs {args.work / need}.safetensors, which does not exist",
                    f"run the {need!r} stage first (--stages {need},{stage}), or point --work at it",
                )
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if "vae" in stages:
        train_vae(args, args.work)
    if "clip" in stages:
        train_clip(args, args.work)
    if "unet" in stages:
        train_unet(args, args.work)
    if "scorer" in stages:
        from lorasel.toyworld.pretrain_scorer import train_scorer

        train_scorer(args, args.work)
    parts = {"export": ("base", "scorer"), "export-base": ("base",), "export-scorer": ("scorer",)}
    chosen = tuple(p for stage, ps in parts.items() if stage in stages for p in ps)
    if chosen:
        from lorasel.toyworld.model import weights_path

        export(args, args.work, args.out or weights_path("").parent / "weights", tuple(dict.fromkeys(chosen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
