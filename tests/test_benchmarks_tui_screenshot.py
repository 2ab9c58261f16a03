"""The README's TUI screenshot script (``python -m benchmarks.tui_screenshot``)."""

from __future__ import annotations

import asyncio
import re
from html import unescape

from benchmarks import tui_screenshot
from tests.tui_support import synthetic_run


def test_screenshot_shows_the_pick_beside_the_runner_up_and_the_base(tmp_path):
    results = synthetic_run(tmp_path)
    svg = asyncio.run(
        tui_screenshot._svg(tmp_path, ["down", "c", "up", "i"], results_loader=lambda p, w: results)
    )
    text = unescape("".join(re.findall(r"<text [^>]*>(.*?)</text>", svg))).replace("\xa0", " ")
    stems = [name.removesuffix(".safetensors") for name in results.checkpoints["checkpoint"]]
    assert all(stem in text for stem in stems)
    assert "images" in text and "compare" in text and "base model" in text
    assert "press c on a row" not in text  # the runner-up is marked for comparison
    assert tui_screenshot._height(svg) > 400


def test_screenshot_of_a_folder_without_an_evaluation_is_one_error(tmp_path, capsys):
    assert tui_screenshot.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "hint:" in err and err.count("\n") == 1
    assert not (tmp_path / "tui.png").exists()
