"""`lorasel inspect CHECKPOINT [--json]`: what a LoRA file is, module by module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorasel.cli.app import app

# Metadata keys worth a line in the human view, in this order; the rest is counted.
SHOWN_METADATA = (
    "ss_output_name", "modelspec.title", "ss_network_module", "ss_network_dim", "ss_network_alpha",
    "ss_network_args", "ss_base_model_version", "modelspec.architecture", "ss_sd_model_name",
    "ss_learning_rate", "ss_unet_lr", "ss_text_encoder_lr", "ss_optimizer", "ss_num_train_images",
    "ss_num_epochs", "ss_resolution", "ss_seed", "ss_training_finished_at", "training_info",
)  # fmt: skip


@app.command()
def inspect(
    checkpoint: Annotated[
        Path, typer.Argument(help="A LoRA .safetensors file (kohya, LyCORIS, PEFT, diffusers).")
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object (see README).")] = False,
) -> None:
    """Show a checkpoint's format, base family, epoch/step, metadata and modules."""
    from lorasel.checkpoints import read_checkpoint
    from lorasel.checkpoints.summary import checkpoint_info, summary_line

    loaded = read_checkpoint(checkpoint)
    info = checkpoint_info(loaded)
    if json_output:
        import json

        typer.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    _print_human(info, summary_line(loaded))


def _print_human(info: dict, summary: str) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from lorasel.checkpoints.metadata import clean_text

    console = Console(highlight=False, soft_wrap=False)
    # Everything from the file is stranger text: plain Text (no markup), control characters removed.
    plain = lambda value, limit=120: Text(clean_text(str(value), limit))  # noqa: E731
    console.print(Text.assemble(("checkpoint ", "bold"), plain(info["path"], 400)))
    meta = info["metadata"]
    shown = [k for k in SHOWN_METADATA if k in meta]
    if shown:
        table = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
        table.add_column("key", style="dim")
        table.add_column("value", overflow="fold")
        for key in shown:
            table.add_row(plain(key), plain(meta[key]))
        console.print(table)
    others = len(meta) - len(shown)
    if others:
        console.print(Text(f"(+{others} more metadata keys: lorasel inspect --json)", style="dim"))
    modules = Table(box=box.SIMPLE_HEAD)
    modules.add_column("module", overflow="fold")
    for name in ("algo", "rank", "alpha", "scale", "ΔW norm"):
        modules.add_column(name, justify="right" if name != "algo" else "left", no_wrap=True)
    for m in info["modules"]:
        norm = "-" if m["delta_norm"] is None else f"{m['delta_norm']:.4g}"
        modules.add_row(
            plain(m["name"], 300),
            m["algo"],
            "-" if m["rank"] is None else str(m["rank"]),
            "-" if m["alpha"] is None else f"{m['alpha']:g}",
            f"{m['scale']:.4g}",
            norm,
        )
    console.print(modules)
    console.print(plain(summary, 2000))
