"""`lorasel inspect CHECKPOINT [--json]`: what a LoRA file is, module by module; given a folder,
what ``lorasel eval`` would find there, a line a checkpoint, before any render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorasel.cli.app import app
from lorasel.cli.tables import print_table
from lorasel.text import counted

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
        Path,
        typer.Argument(
            help="A LoRA .safetensors file (kohya, LyCORIS, PEFT, diffusers, OneTrainer, ComfyUI), "
            "or a folder of them: what lorasel eval would find there."
        ),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object (see README).")] = False,
) -> None:
    """Show a checkpoint's format, base family, epoch/step, metadata and modules; for a folder,
    each checkpoint lorasel eval would evaluate, in training order, and why any cannot be."""
    from lorasel.checkpoints import read_checkpoint
    from lorasel.checkpoints.summary import checkpoint_info, summary_line

    if checkpoint.is_dir():
        _inspect_folder(checkpoint, json_output)
        return
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
        print_table(console, table)
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
    print_table(console, modules)
    console.print(plain(summary, 2000))


def _folder_rows(folder: Path) -> list[dict]:
    """One object a checkpoint ``discover`` finds: what it is, or the one-line reason it cannot
    be evaluated (``error``)."""
    from collections import Counter

    from lorasel.checkpoints import discover, read_checkpoint
    from lorasel.errors import CheckpointError

    entries = discover(folder)
    if not entries:
        raise CheckpointError(
            f"no LoRA checkpoints (.safetensors) found under {folder}",
            hint="pass the folder your trainer saves into (kohya's output_dir, OneTrainer's save/)",
        )
    rows = []
    for entry in entries:
        row = {"path": str(entry.path), "label": entry.label, "run": entry.run}
        row |= {"epoch": entry.epoch, "step": entry.step}
        try:
            loaded = read_checkpoint(entry.path)
        except CheckpointError as exc:
            rows.append(row | {"error": exc.message})
            continue
        pairs = Counter((m.rank, m.alpha) for m in loaded.modules).most_common(1)
        rows.append(
            row
            | {
                "format": loaded.format,
                "base_family": loaded.base_family,
                "algorithms": list(loaded.algorithms),
                "modules": len(loaded.modules),
                "rank": pairs[0][0][0] if pairs else None,
                "alpha": pairs[0][0][1] if pairs else None,
                "trigger": loaded.trigger,
                "embeddings": list(loaded.embeddings),
            }
        )
    return rows


def _inspect_folder(folder: Path, json_output: bool) -> None:
    rows = _folder_rows(folder)
    if json_output:
        import json

        typer.echo(json.dumps({"path": str(folder), "checkpoints": rows}, indent=2, ensure_ascii=False))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from lorasel.checkpoints.metadata import clean_text
    from lorasel.checkpoints.summary import FAMILY_LABELS

    console = Console(highlight=False, soft_wrap=False)
    plain = lambda value, limit=120: Text(clean_text(str(value), limit))  # noqa: E731
    console.print(Text.assemble(("folder ", "bold"), plain(folder, 400)))
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("checkpoint", "epoch", "step", "format", "for", "modules", "trigger"):
        table.add_column(name, justify="right" if name in ("epoch", "step") else "left", overflow="fold")
    dash = lambda v: "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    problems = []
    for r in rows:
        cells = [plain(r["label"], 200), dash(r["epoch"]), dash(r["step"])]
        if "error" in r:
            problems.append(r)
            table.add_row(*cells, "-", "-", "-", Text("cannot be evaluated (below)", style="red"))
            continue
        trigger = plain(r["trigger"] or "-", 60)
        if r["embeddings"]:
            trigger.append(" (bundled embedding)", style="dim")
        modules = f"{r['modules']} {'/'.join(r['algorithms'])}"
        if r["rank"] is not None or r["alpha"] is not None:  # (IA)³ has neither
            modules += f" r{dash(r['rank'])} a{dash(r['alpha'])}"
        family = FAMILY_LABELS.get(r["base_family"], r["base_family"])
        table.add_row(*cells, r["format"], family, modules, trigger)
    print_table(console, table)
    for r in problems:
        console.print(Text.assemble(plain(r["label"], 200), (": ", ""), plain(r["error"], 400)))
    runs = len({r["run"] for r in rows})
    note = f"{counted(len(rows), 'checkpoint')} in {counted(runs, 'run')}"
    note += (
        f"; {len(problems)} cannot be evaluated" if problems else "; lorasel eval renders them in this order"
    )
    console.print(Text(note))
