"""Regenerate the README's TUI screenshot, ``reports/demo/tui.png``, from a demo run.

    python -m benchmarks.tui_screenshot RUN_DIR [--out reports/demo/tui.png] [--keys KEYS]

RUN_DIR is what ``lorasel demo --workdir W`` wrote (``W/run``). The TUI is driven headless by
Textual's pilot at 120×42 with the images drawn in half-cell blocks, ``--keys`` pressed (default
``down,c,up,i``: the runner-up (the last epoch, toy-000010, in the demo) marked for comparison,
back to the pick, the images pane), and exported as Textual's SVG screenshot; headless Chromium
(on PATH as ``chromium``, ``chromium-browser`` or ``google-chrome``) turns it into the PNG.
Without one, the SVG is written beside the PNG's name and the command says so.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SIZE = (120, 42)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: Width of the PNG in pixels; the SVG (window frame included) is scaled to it.
WIDTH_PX = 1300


async def _svg(run: Path, keys: list[str], **app_options) -> str:
    from lorasel.tui import make_app
    from lorasel.tui.headless import settle

    app = make_app(run, graphics="halfcell", poll_interval=None, **app_options)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, rounds=600, tick=0.02)
        for key in keys:
            await pilot.press(key)
            await settle(pilot, rounds=600, tick=0.02)
        return app.export_screenshot(title="lorasel")


def _to_png(svg: str, out: Path, browser: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "shot.html"
        page.write_text(
            "<!doctype html><html><body style='margin:0;background:#fff'>"
            f"<div style='width:{WIDTH_PX}px'>{svg}</div></body></html>",
            encoding="utf-8",
        )
        png = Path(tmp) / "shot.png"
        height = _height(svg)
        subprocess.run(
            [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             f"--screenshot={png}", f"--window-size={WIDTH_PX},{height}", page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(png, out)


def _height(svg: str) -> int:
    """The page height that shows the whole SVG at ``WIDTH_PX`` wide (from its viewBox)."""
    box = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg)
    if box is None:
        return 800
    w, h = float(box.group(1)), float(box.group(2))
    return round(WIDTH_PX * h / w)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a demo run directory (lorasel demo --workdir W: W/run)")
    parser.add_argument("--out", type=Path, default=Path("reports/demo/tui.png"))
    parser.add_argument(
        "--keys", default="down,c,up,i", help="keys to press before the screenshot, comma-separated"
    )
    args = parser.parse_args(argv)
    if not (args.run / "lorasel").is_dir():
        print(f"error: {args.run} has no evaluation (hint: give the run folder of lorasel demo --workdir W, i.e. W/run)",
              file=sys.stderr)  # fmt: skip
        return 2
    keys = [k for k in args.keys.split(",") if k]
    svg = asyncio.run(_svg(args.run, keys))
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        out = args.out.with_suffix(".svg")
        out.write_text(svg, encoding="utf-8")
        print(f"no headless browser found ({', '.join(BROWSERS)}); wrote {out}")
        return 0
    _to_png(svg, args.out, browser)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
