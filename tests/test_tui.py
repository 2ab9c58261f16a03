"""The TUI through Textual's pilot: table, sorting, live weights, loss mode, detail, images,
compare, export, the pick, evaluation from the TUI, a changing store, small terminals."""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from lorasel.errors import ResultsError
from lorasel.rank import Weights, choose, rank, read_loss
from lorasel.results import BASE
from lorasel.tui.screens.help import HelpScreen
from lorasel.tui.screens.no_results import NoResultsScreen
from lorasel.tui.screens.too_small import TooSmallScreen
from lorasel.tui.widgets.key_bar import KeyBar
from lorasel.tui.widgets.ranking_table import MARK_COMPARE, MARK_LOSS, MARK_PICK, MARK_TIED, RankingTable
from lorasel.tui.widgets.render_view import RenderView
from tests.synthetic_results import from_table
from tests.tui_support import HOSTILE, plain, screen_text, settle, synthetic_run, tui

SIZE = (100, 30)
pytestmark = pytest.mark.anyio


@pytest.fixture
def run(tmp_path):
    root = tmp_path / "run"
    results = synthetic_run(root)
    return SimpleNamespace(root=root, results=results, loss=read_loss(root))


def table_of(app) -> RankingTable:
    return app.query_one(RankingTable)


def first_cells(app, row: int = 0) -> list[str]:
    return [cell.plain for cell in table_of(app).get_row_at(row)]


async def test_table_is_the_ranking_with_pick_ties_and_base_last(run):
    app = tui(run.root, run.results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        expected = rank(run.results, loss=run.loss)
        order = table_of(app).order
        assert order == [
            (c, round(s, 6))
            for c, s in zip(expected.table["checkpoint"], expected.table["strength"], strict=False)
        ]
        assert order[-1] == (BASE, 0.0)
        assert first_cells(app)[0] == f"1{MARK_PICK}"
        tied = expected.table.index[expected.table["tied"] & (expected.table.index > 0)]
        assert len(tied) > 0  # the synthetic run has candidates it cannot tell apart
        for i in tied:
            assert first_cells(app, int(i))[0].endswith(MARK_TIED)
        assert first_cells(app, len(order) - 1)[:2] == ["-", "base"]
        best = expected.best
        assert best.label == "zkz-000003"  # the synthetic run's pick under the default weights
        assert f"pick {best.label} @ {best.strength:g}" in screen_text(app)


async def test_sorting_by_key_and_header(run):
    app = tui(run.root, run.results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")  # rank -> epoch
        table = table_of(app)
        epochs = [int(first_cells(app, i)[2]) for i in range(len(table.order) - 1)]
        assert epochs == sorted(epochs) and app.state.sort == "epoch"
        await pilot.press("r")
        epochs = [int(first_cells(app, i)[2]) for i in range(len(table.order) - 1)]
        assert epochs == sorted(epochs, reverse=True)
        assert table.order[-1] == (BASE, 0.0)
        columns = list(table.columns.values())
        x = sum(c.get_render_width(table) for c in columns[: table.get_column_index("flexibility")])
        await pilot.click(RankingTable, offset=(x + 2, 0))  # the "flex" header
        await settle(pilot)
        assert app.state.sort == "flexibility"
        flex = [float(first_cells(app, i)[5]) for i in range(len(table.order) - 1)]
        assert flex == sorted(flex, reverse=True)


#: a draws the concept best, b obeys prompts best, c balances them; c wins by a small margin
#: that one step of either weight (0.25) overturns.
TRADE_OFF = [
    {"checkpoint": "a", "strength": 1.0, "fidelity": 0.90, "flexibility": 0.200, "diversity": 2.0, "preservation": 0.9},
    {"checkpoint": "b", "strength": 1.0, "fidelity": 0.60, "flexibility": 0.320, "diversity": 2.0, "preservation": 0.9},
    {"checkpoint": "c", "strength": 1.0, "fidelity": 0.75, "flexibility": 0.266, "diversity": 2.0, "preservation": 0.9},
]  # fmt: skip


async def test_weights_change_the_ranking_live(tmp_path):
    results = from_table(TRADE_OFF)  # no adherence: the default scores fidelity alone here
    app = tui(tmp_path, results, loss_loader=lambda root: None)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.ranking.best.label == "a"
        await pilot.press("w", *["equals_sign"] * 4)  # flexibility 0 -> 1
        await settle(pilot)
        assert app.state.weights == Weights(
            fidelity=1.0, flexibility=1.0, adherence=1.0, diversity=0.0, preservation=0.0
        )
        assert app.ranking.best.label == "c" and table_of(app).order[0] == ("c.safetensors", 1.0)
        assert "flex 1" in screen_text(app)
        await pilot.press("equals_sign")  # flexibility 1 -> 1.25
        await settle(pilot)
        assert app.state.weights.flexibility == 1.25
        assert app.ranking.best.label == "b"
        assert "flex 1.25" in screen_text(app)
        assert app.pick_json() == choose(rank(results, weights=app.state.weights)).to_json()
        await pilot.press("minus")
        await settle(pilot)
        assert app.ranking.best.label == "c"
        await pilot.press("0")  # back to the default
        await settle(pilot)
        assert app.state.weights == Weights() and app.ranking.best.label == "a"


async def test_weights_cannot_all_be_zero(tmp_path):
    results = from_table(TRADE_OFF)
    app = tui(
        tmp_path,
        results,
        weights=Weights(fidelity=0.25, flexibility=0, adherence=0, diversity=0, preservation=0),
    )
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("minus")
        await settle(pilot)
        assert app.state.weights.fidelity == 0.25
        assert any("all weights are zero" in n.message for n in app._notifications)
        assert app.ranking.best.label == "a"  # fidelity alone


async def test_results_without_adherence_are_a_notification_once(tmp_path):
    results = from_table(TRADE_OFF)  # its rows have no adherence: a store from before it was measured
    app = tui(tmp_path, results, loss_loader=lambda root: None)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("plus")  # re-rank: the same note is not repeated
        await settle(pilot)
        notes = [n.message for n in app._notifications if "adherence was not measured" in n.message]
        assert len(notes) == 1 and "press v" in notes[0]


async def test_few_units_are_a_notification_once(tmp_path):
    """1 seed of 2 prompts per kind: the bootstrap's few units are said once, not on every re-rank."""
    results = synthetic_run(tmp_path, seeds=1, checkpoints=3)
    app = tui(tmp_path, results, loss_loader=lambda root: None)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("plus")
        await settle(pilot)
        notes = [n.message for n in app._notifications if "rest on few (prompt, seed) units" in n.message]
        assert len(notes) == 1 and "(2 for adherence)" in notes[0] and "press v" in notes[0]


async def test_loss_toggle_shows_what_loss_would_pick(run):
    app = tui(run.root, run.results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        best = app.ranking.best
        await pilot.press("l")
        await settle(pilot)
        lowest = app.ranking.lowest_loss
        assert (lowest.label, lowest.strength) == ("zkz-000004", 1.0)  # loss keeps falling
        assert table_of(app).order[0] == ("zkz-000004.safetensors", 1.0)
        assert MARK_LOSS in first_cells(app)[0]
        text = screen_text(app)
        assert f"loss would pick zkz-000004 @ 1  rank {lowest.rank}/12" in text and "by LOSS" in text
        assert app.ranking.best == best  # the pick itself does not change
        await pilot.press("l")
        await settle(pilot)
        assert table_of(app).order[0] == (best.checkpoint, best.strength)


async def test_loss_toggle_without_a_loss_log_says_so(tmp_path):
    root = tmp_path / "run"
    results = synthetic_run(root, loss=False)
    app = tui(root, results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("l")
        assert not app.state.by_loss
        assert any("no training loss log" in n.message for n in app._notifications)


async def test_strength_filter_reranks_among_one_strength(run):
    app = tui(run.root, run.results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        assert app.state.strength == 0.5
        shown = table_of(app).order
        assert {s for c, s in shown if c != BASE} == {0.5} and len(shown) == 4 + 1
        contest = app.ranking.table[app.ranking.table["checkpoint"] != BASE]
        assert contest["p_best"].sum() == pytest.approx(1.0)
        expected = rank(run.results, strengths=[0.5], loss=run.loss)
        assert list(contest["checkpoint"]) == list(expected.table["checkpoint"].iloc[:-1])


async def test_detail_pane_follows_the_selection(run):
    app = tui(run.root, run.results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)
        key = table_of(app).selected
        assert key == table_of(app).order[1]
        text = plain(app.query_one("#detail-body").content)
        label = key[0].removesuffix(".safetensors")
        assert f"{label} @ strength {key[1]:g}   rank 2/12" in text
        assert "a out of domain prompt out_of_domain/1" in text  # every prompt listed
        assert "score by epoch" in text and "loss  by epoch" in text
        assert f"file /runs/zkz/checkpoints/{key[0]}" in text
        assert f"prompt tag <lora:{label}:{key[1]:g}>" in text  # as `lorasel pick` prints it
        assert "ss_output_name" in text


async def test_hostile_metadata_labels_and_prompts_are_plain_text(tmp_path):
    root = tmp_path / "run"
    label = "[red]zkz[/red]\x1b[2J-000001"
    results = synthetic_run(
        root, checkpoints=2, strengths=(1.0,), metadata=HOSTILE, labels=[label, "[@click=app.quit]x"],
        prompt_text=lambda pid, kind: f"a [bold]zkz[/bold] [link=https://example.invalid]{pid}[/link]",
    )  # fmt: skip
    app = tui(root, results)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        row = table_of(app).order.index((f"{label}.safetensors", 1.0))
        table_of(app).move_cursor(row=row)
        await settle(pilot)
        detail = plain(app.query_one("#detail-body").content, width=200)
        # The last: the file is "red]\x1b[2J-000001.safetensors" in a folder "[red]zkz[" (the label's "/").
        for value in ("[bold]zkz[/bold]", "[@click=app.quit]quit[/]", "[link=https://example.invalid]x[/link]",
                      "\\x1b[31mred\\x1b[0m", "[red]key[/red]", "[red]zkz[/red]\\x1b[2J-000001",
                      "a [bold]zkz[/bold] [link=https://example.invalid]in_domain/0[/link]",
                      "prompt tag <lora:red]\\x1b[2J-000001:1>"):  # fmt: skip
            assert value in detail
        assert "\x1b" not in detail
        shown = screen_text(app)
        assert "[red]zkz[/red]\\x1b[2J-000001" in shown and "[@click=app.quit]x" in shown
        await pilot.press("z")  # the detail pane alone, scrolled to the metadata at its end
        app.query_one("#detail").scroll_end(animate=False)
        await settle(pilot)
        shown = screen_text(app)
        assert "[@click=app.quit]quit[/]" in shown and "\\x1b[31mred\\x1b[0m" in shown
        assert "[link=https://example.invalid]x[/link]" in shown and "[red]key[/red]" in shown
        await pilot.press("z")
        await pilot.click(RankingTable, offset=(10, row + 1))  # clicking the hostile label runs nothing
        await settle(pilot)
        assert app.is_running


async def test_images_pane_shows_selected_compare_and_base_renders(run):
    app = tui(run.root, run.results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down", "c", "up", "i")
        await settle(pilot)
        table = table_of(app)
        assert app.state.compare == table.order[1]
        assert first_cells(app, 1)[0].endswith(MARK_COMPARE)
        renders = run.results.renders

        def expected_colour(key, prompt_id="in_domain/0", seed=0):
            rows = renders[(renders["checkpoint"] == key[0]) & (renders["strength"] == key[1])
                           & (renders["prompt_id"] == prompt_id) & (renders["seed_index"] == seed)]  # fmt: skip
            return Image.open(run.root / "lorasel" / rows["image"].iloc[0]).convert("RGB").getpixel((0, 0))

        def shown_colour(slot):
            picture = app.query_one(f"#render-{slot}", RenderView).query_one(".picture")
            return picture.image.getpixel((0, 0))

        assert shown_colour("selected") == expected_colour(table.order[0])
        assert shown_colour("compare") == expected_colour(table.order[1])
        assert shown_colour("base") == expected_colour((BASE, 0.0))
        assert len({shown_colour(s) for s in ("selected", "compare", "base")}) == 3
        assert "[1/16] in_domain/0 seed 0" in screen_text(app)
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert "[3/16] in_domain/1 seed 0" in screen_text(app)
        await pilot.press("down", "c")  # c on the compared row again unmarks it
        await settle(pilot)
        assert app.state.compare is None
        assert "press c on a row to mark it" in screen_text(app)


async def test_export_writes_csv_and_html_and_open_shows_the_report(tmp_path):
    run = SimpleNamespace(root=tmp_path / "run")
    run.results = synthetic_run(run.root, checkpoints=3, strengths=(1.0,), seeds=1, prompts_per_kind=1)
    opened = []
    app = tui(run.root, run.results, opener=lambda uri: opened.append(uri) or len(opened) < 3)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        csv_path, html_path = run.root / "report" / "scores.csv", run.root / "report" / "report.html"
        table = pd.read_csv(csv_path)
        assert list(table["checkpoint"]) == list(app.ranking.table["checkpoint"])
        assert "zkz-000002" in html_path.read_text()
        mtime = html_path.stat().st_mtime_ns
        await pilot.press("o")  # up to date: opened, not rewritten
        await settle(pilot)
        assert opened == [html_path.resolve().as_uri()] and html_path.stat().st_mtime_ns == mtime
        await pilot.press("plus", "o")  # the weights changed: rewritten, then opened
        await settle(pilot)
        assert len(opened) == 2 and html_path.stat().st_mtime_ns != mtime
        assert any("opened" in n.message for n in app._notifications)
        await pilot.press("o")  # no viewer (over SSH): say where the report is
        await settle(pilot)
        assert any(f"no graphical viewer here (over SSH?): the report is at {html_path}" in n.message
                   for n in app._notifications)  # fmt: skip


async def test_export_failure_is_a_notification(tmp_path, monkeypatch):
    import lorasel.report

    run = SimpleNamespace(root=tmp_path / "run")
    run.results = synthetic_run(run.root, checkpoints=2, strengths=(1.0,), seeds=1, prompts_per_kind=1)

    def fail(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lorasel.report, "write_csv", fail)
    app = tui(run.root, run.results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        assert app.is_running
        assert any(
            "export failed" in n.message and "Permission denied" in n.message for n in app._notifications
        )


async def test_print_pick_exits_with_the_pick_json(run):
    app = tui(run.root, run.results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("w", "w", "minus", "minus", "p")  # adherence 1 -> 0.5
        await pilot.pause()
    weights = Weights(fidelity=1.0, flexibility=0.0, adherence=0.5, diversity=0.0, preservation=0.0)
    assert app.return_value == choose(rank(run.results, weights=weights, loss=run.loss)).to_json()


async def test_quit_prints_the_pick_when_asked(run):
    app = tui(run.root, run.results, print_pick=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value == choose(rank(run.results, loss=run.loss)).to_json()


def staged_evaluator(full, gate: threading.Event | None = None):
    """A fake evaluate(): returns ``full`` restricted to the strengths asked for; the second
    stage waits for ``gate``."""
    calls = []

    def evaluate(path, *, workdir, progress, strengths=None, **options):
        calls.append({"strengths": strengths, **options})
        if gate is not None and len(calls) > 1:
            assert gate.wait(10)
        for i in range(1, 4):
            progress(SimpleNamespace(phase="render", done=i, total=3, message=""))
        keep = [0.0, *(strengths or [])]
        renders = full.renders[full.renders["strength"].isin(keep)]
        diversity = full.diversity[full.diversity["strength"].isin(keep)]
        return type(full)(renders=renders, diversity=diversity, checkpoints=full.checkpoints,
                          settings={**full.settings, "strengths": list(strengths or [])})  # fmt: skip

    return evaluate, calls


async def test_no_results_offers_the_evaluation_and_the_table_fills_in_by_stage(tmp_path):
    root = tmp_path / "run"
    full = synthetic_run(root, strengths=(0.5, 1.0))
    gate = threading.Event()
    evaluate, calls = staged_evaluator(full, gate)

    reads = []

    def not_evaluated(path, workdir):
        reads.append(path)
        if len(reads) > 1:
            raise ResultsError(
                f"{path}/lorasel/results.sqlite has no complete evaluation", hint="wait for it"
            )
        raise ResultsError(f"{path} has not been evaluated yet", hint="run `lorasel eval` first")

    app = tui(root, results_loader=not_evaluated, evaluate=evaluate,
              eval_options={"strengths": (0.5, 1.0), "base": "toy"})  # fmt: skip
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, NoResultsScreen)
        assert not app.main.query_one(RankingTable).loading  # no spinner redrawing the screen behind
        message = plain(app.screen.query_one("#no-results").content, width=300)
        assert f"{root} has not been evaluated yet" in message and "Press v to evaluate" in message
        assert "v start the evaluation" in screen_text(app) and "e export" not in screen_text(app)
        app.load()  # the store is read again (it changed) and still has nothing: the reason updates
        await settle(pilot)
        message = plain(app.screen.query_one("#no-results").content, width=300)
        assert "has no complete evaluation" in message and isinstance(app.screen, NoResultsScreen)
        await pilot.press("v")
        for _ in range(100):  # the first stage (strength 1) arrives while the second waits
            await pilot.pause(0.02)
            if app.ranking is not None:
                break
        assert not isinstance(app.screen, NoResultsScreen)
        assert {s for c, s in table_of(app).order if c != BASE} == {1.0}
        assert app.query_one("#progress").has_class("-running")
        gate.set()
        await settle(pilot)
        assert {s for c, s in table_of(app).order if c != BASE} == {0.5, 1.0}
        assert not app.query_one("#progress").has_class("-running")
        assert [c["strengths"] for c in calls] == [[1.0], [0.5, 1.0]]
        assert all(c["base"] == "toy" for c in calls)
        assert any(n.message == "evaluation finished" for n in app._notifications)


async def test_a_continued_refinement_refines_under_the_weights_on_screen(tmp_path):
    from lorasel.rank import Weights

    root = tmp_path / "run"
    full = synthetic_run(root, strengths=(0.5, 1.0))
    evaluate, calls = staged_evaluator(full)
    app = tui(root, evaluate=evaluate, eval_options={"strengths": (0.5, 1.0), "refine": 2})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        weights = Weights(fidelity=1, flexibility=1, adherence=0)
        app.set_state(replace(app.state, weights=weights))
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
    *earlier, last = [(c["strengths"], c.get("refine"), c.get("weights")) for c in calls]
    assert last == ([0.5, 1.0], 2, weights)  # the last stage refines, for the weights on screen
    assert all(refine is None and w is None for _, refine, w in earlier)


async def test_evaluation_can_be_stopped_and_its_errors_are_notifications(run):
    started = threading.Event()

    def endless(path, *, workdir, progress, **options):
        started.set()
        while True:
            progress(SimpleNamespace(phase="render", done=1, total=10, message=""))
            threading.Event().wait(0.002)  # faster than any UI: the worker must throttle

    app = tui(run.root, run.results, evaluate=endless)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("v")
        assert started.wait(5)
        await pilot.press("v")  # again: stop
        await settle(pilot)
        assert any("evaluation stopped" in n.message for n in app._notifications)
        assert app.ranking is not None  # the table stayed

    def broken(path, *, workdir, progress, **options):
        raise RuntimeError("CUDA out of memory [bold]")

    app = tui(run.root, run.results, evaluate=broken)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        assert any("evaluation failed: RuntimeError: CUDA out of memory [bold]" in n.message
                   for n in app._notifications)  # fmt: skip
        assert app.is_running and len(table_of(app).order) == 13


async def test_a_bug_in_a_worker_is_reported_not_hidden(run, monkeypatch):
    from lorasel.tui import jobs

    def broken(*args, **kwargs):
        raise KeyError("fidelity")

    monkeypatch.setattr(jobs, "rank_results", broken)
    app = tui(run.root, run.results)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert any("internal error in rank: KeyError" in n.message for n in app._notifications)
        assert not table_of(app).loading and app.is_running


async def test_a_changing_results_store_reloads_and_a_broken_one_keeps_the_table(tmp_path):
    root = tmp_path / "run"
    first = synthetic_run(root, strengths=(1.0,))
    second = synthetic_run(root, strengths=(0.5, 1.0))
    store = root / "lorasel" / "results.sqlite"
    store.write_bytes(b"v1")
    current = {"results": first}

    def loader(path, workdir):
        if isinstance(current["results"], Exception):
            raise current["results"]
        return current["results"]

    app = tui(root, results_loader=loader, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert len(table_of(app).order) == 4 + 1
        current["results"] = second
        store.write_bytes(b"v2 longer")
        for _ in range(100):
            await pilot.pause(0.02)
            if len(table_of(app).order) == 8 + 1:
                break
        assert len(table_of(app).order) == 8 + 1
        current["results"] = ResultsError(f"{store} is locked", hint="try again")
        store.write_bytes(b"v3 even longer")
        for _ in range(100):
            await pilot.pause(0.02)
            if any("could not reload" in n.message for n in app._notifications):
                break
        assert any("could not reload the results" in n.message and "is locked" in n.message
                   for n in app._notifications)  # fmt: skip
        assert len(table_of(app).order) == 8 + 1


async def test_too_small_terminal_shows_a_message_until_resized(run):
    app = tui(run.root, run.results)
    async with app.run_test(size=(60, 20)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, TooSmallScreen)
        assert "terminal too small (need 80×24, have 60×20)" in screen_text(app)
        await pilot.resize_terminal(79, 30)
        await settle(pilot)
        assert "have 79×30" in screen_text(app)
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        assert not isinstance(app.screen, TooSmallScreen)
        assert "pick zkz-000003" in screen_text(app)


async def test_every_key_is_in_the_footer_at_80x24_and_in_the_help(run):
    app = tui(run.root, run.results)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        shown = app.query_one(KeyBar).entries()
        expected = {b.action for b in [*app.main.BINDINGS, *app.BINDINGS] if b.show}
        described = {desc for _, desc in shown}
        assert len(shown) == len(expected) and "quit" in described and "eval" in described
        text = screen_text(app)
        for key, desc in shown:
            assert f"{key} {desc}" in text  # nothing scrolled out of sight
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        assert "raise (+ or =) or lower (-) the selected weight" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value is None  # without --print-pick, quitting prints nothing


def test_detail_pane_says_each_candidates_seeds_only_after_a_refinement():
    from rich.text import Text

    from lorasel.tui.views import RankingIndex, candidate_key
    from lorasel.tui.widgets.detail_pane import _summary
    from tests.synthetic_results import make_results, refined_results

    full = make_results(checkpoints=3, strengths=(1.0,), seeds=3)
    first = str(full.checkpoints["checkpoint"].iloc[0])
    shown = {}
    for name, results in (("plain", full), ("refined", refined_results(full, {(first, 1.0)}, seeds=2))):
        ranked = RankingIndex(rank(results, n_boot=50))
        for checkpoint in full.checkpoints["checkpoint"].astype(str):
            key = candidate_key(checkpoint, 1.0)
            text = Text()
            _summary(ranked.rows[key], key, ranked, text)
            shown[name, checkpoint == first] = text.plain
    assert not any("seeds per prompt" in shown["plain", f] for f in (True, False))
    assert "3 seeds per prompt" in shown["refined", True] and "2 seeds per prompt" in shown["refined", False]


def test_detail_pane_names_a_bundled_embedding_as_plain_text(tmp_path):
    """A pivotal-tuning LoRA: the detail pane says which embedding goes in the prompt; its name,
    from a stranger's file, is not Rich markup."""
    from pathlib import Path

    import torch
    from rich.text import Text
    from safetensors.torch import save_file

    from lorasel.tui.views import RankingIndex, candidate_key
    from lorasel.tui.widgets.detail_pane import _summary
    from tests.synthetic_results import make_results

    results = make_results(checkpoints=2, strengths=(1.0,), seeds=2, state_dir=tmp_path / "lorasel")
    ranked = RankingIndex(rank(results, n_boot=50))
    first, second = results.checkpoints["checkpoint"].astype(str)
    bundled = Path(ranked.rows[candidate_key(first, 1.0)].path)
    bundled.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "bundle_emb.[bold]x[/bold].clip_l": torch.zeros(1, 8),
            "lora_unet_a.lora_down.weight": torch.zeros(1, 8),
        },
        bundled,
    )
    shown = {}
    for checkpoint in (first, second):
        key = candidate_key(checkpoint, 1.0)
        text = Text()
        _summary(ranked.rows[key], key, ranked, text)
        shown[checkpoint] = text.plain
    assert "embedding [bold]x[/bold] bundled: write it in the prompt" in shown[first]
    assert "embedding" not in shown[second]
