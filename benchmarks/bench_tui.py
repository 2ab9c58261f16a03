"""The TUI's responsiveness on a large run, against the ranking it has to recompute.

Run alone: ``python -m benchmarks.run tui``.

A synthetic evaluation of 20 checkpoints × 5 strengths × 40 prompts × 2 seeds (8,080 renders;
those of the prompt shown are 512 px PNGs on disk) is shown in the TUI, driven headless by Textual's pilot at 120×40. Measured
(median of several repeats): the baseline, one ``rank()`` call (what ``lorasel rank`` computes,
1000 bootstrap rounds); the time from start to the first table; from a weight key to the
re-ranked table on screen; from a cursor move to the detail pane redrawn; from a cursor move to
the three renders (selected, compared, base) on screen, decoded from disk or from the cache.
Times include the pilot's own waiting (it polls for idle), so they are upper bounds.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from lorasel.rank import rank
from tests.synthetic_results import make_results

SIZE = (120, 40)
REPEATS = 7


async def _until(pilot, done, timeout: float = 30.0) -> float:
    start = time.perf_counter()
    while not done():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the TUI did not update")
        await pilot.pause(0.002)
    return time.perf_counter() - start


async def _drive(root: Path, results) -> dict[str, list[float]]:
    from lorasel.tui import make_app

    times: dict[str, list[float]] = {
        k: [] for k in ("start", "weight", "detail", "images_cold", "images_warm")
    }
    start = time.perf_counter()
    app = make_app(root, results_loader=lambda p, w: results, graphics="halfcell", poll_interval=None)
    async with app.run_test(size=SIZE) as pilot:
        await _until(pilot, lambda: app.ranking is not None and len(app.main.query_one("#table").order) > 0)
        times["start"].append(time.perf_counter() - start)
        for k in range(REPEATS):
            t = time.perf_counter()
            await pilot.press("plus" if k % 2 == 0 else "minus")
            await _until(pilot, lambda: app._ranked_generation == app._generation)
            await pilot.pause()
            times["weight"].append(time.perf_counter() - t)
        for _ in range(REPEATS):
            t = time.perf_counter()
            await pilot.press("down")
            times["detail"].append(time.perf_counter() - t)
        await pilot.press("home", "i")
        await pilot.pause()
        for key in ["down"] * REPEATS + ["up"] * REPEATS:  # new rows, then the same rows again
            t = time.perf_counter()
            await pilot.press(key)
            await _until(pilot, lambda: app.main.images_shown == app.main._pending_images[0])
            times["images_cold" if key == "down" else "images_warm"].append(time.perf_counter() - t)
    return times


def _write_first_unit(results, state: Path) -> int:
    """512 px noisy PNGs (they compress like real renders) for the one (prompt, seed) shown."""
    import numpy as np
    from PIL import Image

    renders = results.renders
    first = renders[(renders["prompt_id"] == "in_domain/0") & (renders["seed_index"] == 0)]
    rng = np.random.default_rng(0)
    for rel in first["image"]:
        path = state / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(path)
    return len(first)


def run(out_dir: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        t = time.perf_counter()
        results = make_results(
            checkpoints=20, strengths=(0.25, 0.5, 0.75, 1.0, 1.25), prompts_per_kind=10, seeds=2,
            state_dir=None,
        )  # fmt: skip
        shown = _write_first_unit(results, root / "lorasel")
        setup = time.perf_counter() - t
        base = []
        for _ in range(REPEATS):
            t = time.perf_counter()
            rank(results)
            base.append(time.perf_counter() - t)
        times = asyncio.run(_drive(root, results))
    baseline = statistics.median(base)

    def row(name: str, key: str) -> str:
        value = statistics.median(times[key])
        return f"| {name} | {value * 1e3:.0f} ms | {value / baseline:.1f}× |\n"

    return (
        "## TUI\n\n"
        "`python -m benchmarks.run tui`: a synthetic run of 20 checkpoints × 5 strengths × 40 prompts × "
        f"2 seeds ({len(results.renders):,} renders; the {shown} of the prompt shown are 512 px noise PNGs on "
        f"disk, built in {setup:.0f} s), shown at "
        f"{SIZE[0]}×{SIZE[1]} and driven headless by Textual's pilot; medians of {REPEATS}. Times include the "
        "pilot's polling, so they are upper bounds.\n\n"
        "| step | time | vs one `rank()` |\n|---|---|---|\n"
        f"| one `rank()` call, 1000 bootstrap rounds (baseline) | {baseline * 1e3:.0f} ms | 1× |\n"
        + row("start to the first ranked table", "start")
        + row("weight key to the re-ranked table on screen", "weight")
        + row("cursor move to the detail pane redrawn", "detail")
        + row("cursor move to 3 renders shown, decoded from PNG", "images_cold")
        + row("cursor move to 3 renders shown, from the cache", "images_warm")
        + "\nRanking, decoding and loading run in worker threads: keys are answered while they work, "
        "and a re-rank started before the previous one finished supersedes it.\n"
    )
