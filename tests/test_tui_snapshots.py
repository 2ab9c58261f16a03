"""SVG snapshots of the TUI's screens at 80×24, the size it must work in (over SSH too).

Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs before committing them.
"""

from __future__ import annotations

import pytest

from lorasel.errors import ResultsError
from tests.tui_support import settle, synthetic_run, tui

SIZE = (80, 24)


@pytest.fixture
def app(tmp_path):
    root = tmp_path / "run"
    return tui(root, synthetic_run(root, metadata={"ss_output_name": "[bold]zkz[/bold]", "ss_epoch": "1"}))


def test_main_screen(app, snap_compare):
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_images_with_compare(app, snap_compare):
    async def mark_and_show(pilot):
        await settle(pilot)
        await pilot.press("down", "down", "c", "up", "up", "i", "right_square_bracket", "l")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=mark_and_show)


def test_help_screen(app, snap_compare):
    async def help_(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=help_)


def test_terminal_too_small(app, snap_compare):
    assert snap_compare(app, terminal_size=(70, 20), run_before=settle)


def test_no_results(tmp_path, snap_compare):
    def not_evaluated(path, workdir):
        raise ResultsError("run has not been evaluated yet (no run/lorasel/results.sqlite)",
                           hint="run `lorasel eval run` first")  # fmt: skip

    (tmp_path / "run").mkdir()
    app = tui(tmp_path / "run", results_loader=not_evaluated)
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)
