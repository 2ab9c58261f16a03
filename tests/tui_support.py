"""Helpers for the TUI tests: a run on disk with synthetic results, and waiting for workers."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pandas as pd
from rich.console import Console

from lorasel.results import Results
from lorasel.tui import make_app
from lorasel.tui.headless import settle  # noqa: F401 (the tests import it from here)
from tests.synthetic_results import make_results

HOSTILE = {
    "ss_output_name": "[bold]zkz[/bold]",
    "click": "[@click=app.quit]quit[/]",
    "link": "[link=https://example.invalid]x[/link]",
    "ansi": "\x1b[31mred\x1b[0m",
    "[red]key[/red]": "plain",
}


def synthetic_run(root: Path, *, checkpoints: int = 4, strengths=(0.5, 0.75, 1.0), seeds: int = 2,
                  metadata: dict | None = None, loss: bool = True, fixed_paths: bool = True,
                  **kwargs) -> Results:  # fmt: skip
    """Results with one PNG per render under ``root/lorasel``, and a loss log where training
    loss keeps falling (the last checkpoint has the lowest loss, as in overfitting)."""
    results = make_results(
        checkpoints=checkpoints, strengths=strengths, seeds=seeds, state_dir=root / "lorasel", seed=2,
        metadata=metadata, image_size=16, **kwargs,
    )  # fmt: skip
    if fixed_paths:  # screenshots must not show the temporary folder
        results.checkpoints["path"] = "/runs/zkz/checkpoints/" + results.checkpoints["checkpoint"]
    if loss:
        write_loss(root, checkpoints)
    return results


def write_loss(root: Path, checkpoints: int, steps_per_epoch: int = 10) -> None:
    rows = [
        {"step": s, "epoch": (s - 1) // steps_per_epoch + 1, "loss": 1.0 / ((s - 1) // steps_per_epoch + 1), "lr": 1e-4}
        for s in range(1, checkpoints * steps_per_epoch + 1)
    ]  # fmt: skip
    (root / "logs").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "logs" / "loss.csv", index=False)


def tui(root: Path, results: Results | None = None, **kwargs):
    """The app as the CLI builds it, with the evaluator's store replaced by ``results``."""
    kwargs.setdefault("graphics", "halfcell")
    kwargs.setdefault("poll_interval", None)
    if results is not None:
        kwargs.setdefault("results_loader", lambda path, workdir: results)
    return make_app(root, **kwargs)


def plain(renderable, width: int = 120) -> str:
    """What a Rich renderable shows, as plain text."""
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def screen_text(app) -> str:
    """The text on the app's screen (from an SVG screenshot, as a person would read it)."""
    svg = app.export_screenshot()
    lines = re.findall(r"<text [^>]*>(.*?)</text>", svg)
    return unescape("".join(lines)).replace("\xa0", " ")
