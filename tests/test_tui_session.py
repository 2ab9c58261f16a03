"""The TUI's pure parts: view state, table order, evaluation stages, safe text, render cache."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from rich.text import Text

from lorasel.errors import ConfigError
from lorasel.rank import DEFAULT_WEIGHTS, Weights, rank
from lorasel.results import BASE
from lorasel.tui.evaluation import (
    EvaluationRequest,
    continued_options,
    run_evaluation,
    strength_stages,
)
from lorasel.tui.render_cache import RenderCache
from lorasel.tui.session import ViewState, ordered, parse_row_key, row_key
from lorasel.tui.text import clean, safe
from lorasel.tui.views import ResultsIndex, epoch_series, sparkline
from tests.synthetic_results import make_results


@pytest.fixture(scope="module")
def ranking():
    table = rank(make_results(checkpoints=4, strengths=(0.5, 1.0), seeds=2, seed=3), n_boot=50).table.copy()
    table.loc[table["checkpoint"] != BASE, "loss"] = [0.4, 0.4, 0.3, 0.3, 0.2, 0.2, np.nan, np.nan][
        : len(table) - 1
    ]
    return table


def test_weight_adjustment_clamps_at_zero_and_refuses_all_zero():
    state = ViewState(
        weights=Weights(fidelity=0.25, flexibility=0.0, adherence=0.0, diversity=0.0, preservation=0.0)
    )
    with pytest.raises(ConfigError, match="all weights are zero"):
        state.adjust_weight(-0.25)
    lower = ViewState().next_weight(3).adjust_weight(-0.25)  # diversity 0 stays 0
    assert lower.weights.diversity == 0.0 and lower.weight_name == "diversity"
    assert lower.adjust_weight(-0.25) is lower  # already 0: nothing changes
    assert ViewState().adjust_weight(0.25).weights.fidelity == 1.25
    assert ViewState().next_weight(-1).weight_name == "preservation"
    adherence = ViewState().next_weight(2).adjust_weight(-0.25)
    assert adherence.weight_name == "adherence" and adherence.weights.adherence == 0.75


def test_strength_filter_cycles_through_every_strength_and_back_to_all():
    seen = []
    state = ViewState()
    for _ in range(4):
        state = state.cycle_strength([1.0, 0.5, 0.75])
        seen.append(state.strength)
    assert seen == [0.5, 0.75, 1.0, None]


def test_sort_order_best_first_missing_last_base_last(ranking):
    rows = ordered(ranking, ViewState(sort="fidelity"))
    contest = rows[rows["checkpoint"] != BASE]
    assert list(contest["fidelity"]) == sorted(contest["fidelity"], reverse=True)
    assert rows["checkpoint"].iloc[-1] == BASE
    rows = ordered(ranking, ViewState().sorted_by("epoch").sorted_by("epoch"))  # again: reversed
    assert list(rows["epoch"].iloc[:-1]) == sorted(rows["epoch"].iloc[:-1], reverse=True)
    assert rows["checkpoint"].iloc[-1] == BASE
    rows = ordered(ranking, ViewState(sort="loss"))
    losses = rows["loss"].iloc[:-1].to_numpy()
    assert np.all(np.diff(losses[~np.isnan(losses)]) >= 0) and np.isnan(losses[-1])  # NaN last
    by_rank = ordered(ranking, ViewState())
    assert list(by_rank.index) == list(ranking.index)  # the ranking's own order


def test_loss_mode_orders_as_picking_by_loss_would(ranking):
    rows = ordered(ranking, ViewState(by_loss=True))
    first = rows.iloc[0]
    assert first["loss"] == pytest.approx(0.2) and first["strength"] == 1.0  # full strength first
    assert rows.iloc[1]["loss"] == pytest.approx(0.2) and rows.iloc[1]["strength"] == 0.5
    assert rows["checkpoint"].iloc[-1] == BASE
    assert ViewState(by_loss=True).sorted_by("score").by_loss is False


def test_row_keys_survive_any_checkpoint_name():
    for key in [("a\x00b/c.safetensors", 0.75), ("[bold]x", 1.0), (BASE, 0.0)]:
        assert parse_row_key(row_key(key)) == key


def test_strength_stages():
    assert strength_stages(None) == [None]
    assert strength_stages([0.5, 0.75, 1.0]) == [(1.0,), (0.75, 1.0), (0.5, 0.75, 1.0)]
    # Already evaluated strengths come first and stay; then the one nearest 1.0.
    assert strength_stages([0.5, 1.0, 1.5], evaluated=[0.5]) == [(0.5, 1.0), (0.5, 1.0, 1.5)]
    assert strength_stages([0.5, 1.0], evaluated=[0.5, 1.0]) == [(0.5, 1.0)]


def test_continued_options_keep_stored_settings_unless_overridden():
    settings = {"base": "toy", "scorer": "toy", "prompt_set": "toy", "seeds": 3, "steps": "8",
                "strengths": [0.5, 1.0], "guidance": 5.0, "trigger": None, "size": "512x768",
                "references": "/data/zkz"}  # fmt: skip
    out = continued_options(settings, {"base": "/models/sd15", "scorer": None})
    assert out == {"base": "/models/sd15", "scorer": "toy", "prompts": "toy", "seeds": 3, "guidance": 5.0,
                   "reference": "/data/zkz", "size": (512, 768), "strengths": (0.5, 1.0)}  # fmt: skip
    assert (
        continued_options({"strengths": ["x"], "size": "big", "seeds": True, "prediction": "sample"}, {})
        == {}
    )
    assert continued_options({"prediction": "v-ztsnr", "clip_skip": 2}, {}) == {
        "prediction": "v-ztsnr",
        "clip_skip": 2,
    }
    assert continued_options({"size": [64, 64]}, {})["size"] == (64, 64)


def test_run_evaluation_stages_the_evaluators_default_strengths():
    class Evaluator:
        def __init__(self):
            self.calls = []

        def __call__(self, path, *, workdir, progress, strengths=None):
            self.calls.append(strengths)
            return strengths

        def default_strengths(self):
            return (0.5, 0.75, 1.0)

    evaluate = Evaluator()
    run_evaluation(evaluate, EvaluationRequest("run"), on_progress=print, on_results=lambda *a: None,
                   should_stop=lambda: False)  # fmt: skip
    assert evaluate.calls == [[1.0], [0.75, 1.0], [0.5, 0.75, 1.0]]


def test_run_evaluation_refines_in_the_last_stage_only():
    calls = []

    def evaluate(path, *, workdir, progress, strengths, seeds, refine=0, weights=None):
        calls.append((tuple(strengths), refine, weights))
        return "results"

    settings = {"seeds": 2, "refine": 2, "strengths": [0.5, 1.0]}
    request = EvaluationRequest("run", None, {**continued_options(settings, {}), "weights": "w"})
    run_evaluation(evaluate, request, on_progress=print, on_results=lambda *a: None,
                   should_stop=lambda: False)  # fmt: skip
    assert calls == [((1.0,), 0, None), ((0.5, 1.0), 2, "w")]
    assert "refine" not in continued_options({"refine": "2"}, {})


def test_run_evaluation_runs_each_stage_and_stops_when_asked():
    calls, progress, delivered = [], [], []

    def evaluate(path, *, workdir, progress, strengths, seeds):
        calls.append((path, workdir, tuple(strengths), seeds))
        for i in range(3):
            progress(SimpleNamespace(phase="render", done=i, total=3, message=""))
        return f"results {strengths}"

    request = EvaluationRequest("run", None, {"strengths": (0.5, 1.0), "seeds": 2})
    done = run_evaluation(
        evaluate, request, on_progress=lambda s, n, e: progress.append((s, n, e.done)),
        on_results=lambda r, s, n: delivered.append((r, s, n)), should_stop=lambda: False,
    )  # fmt: skip
    assert done is True
    assert calls == [("run", None, (1.0,), 2), ("run", None, (0.5, 1.0), 2)]
    assert delivered == [("results [1.0]", 1, 2), ("results [0.5, 1.0]", 2, 2)]
    assert progress[:3] == [(1, 2, 0), (1, 2, 1), (1, 2, 2)]

    stop = iter([False, True])
    calls.clear()
    done = run_evaluation(
        evaluate, request, on_progress=lambda *a: None, on_results=delivered.append,
        should_stop=lambda: next(stop, True),
    )  # fmt: skip
    assert done is False and len(calls) == 1  # stopped inside the first stage's progress


def test_clean_spells_out_control_characters_and_safe_never_parses_markup():
    assert clean("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert clean("a\nb\tc\u202e") == "a b c\\u202e"
    assert clean("x" * 10, limit=5) == "xxxx…"
    text = safe("[bold]x[/bold] [@click=app.quit]q[/]")
    assert isinstance(text, Text)
    assert text.plain == "[bold]x[/bold] [@click=app.quit]q[/]" and not text.spans


def test_sparkline_and_epoch_series():
    assert sparkline([0.0, 0.5, 1.0, math.nan]) == "▁▅█ "
    assert sparkline([2.0, 2.0]) == "▅▅"
    table = rank(make_results(checkpoints=3, strengths=(0.5, 1.0), seeds=2), n_boot=20).table
    series = epoch_series(table, 1.0)
    assert list(series["epoch"]) == [1, 2, 3]


def test_results_index_per_prompt_values_match_the_renders():
    results = make_results(checkpoints=2, strengths=(1.0,), seeds=3, seed=4)
    index = ResultsIndex(results)
    key = ("zkz-000002.safetensors", 1.0)
    rows = {r.prompt_id: r for r in index.prompt_rows(key)}
    renders = results.renders
    mine = renders[(renders["checkpoint"] == key[0]) & (renders["prompt_id"] == "out_of_domain/1")]
    assert rows["out_of_domain/1"].value == pytest.approx(mine["flexibility"].mean())
    base = renders[(renders["checkpoint"] == BASE) & (renders["prompt_id"] == "out_of_domain/1")]
    assert rows["out_of_domain/1"].base_value == pytest.approx(base["flexibility"].mean())
    div = results.diversity
    d = div[(div["checkpoint"] == key[0]) & (div["prompt_id"] == "in_domain/0")]["diversity"].mean()
    assert rows["in_domain/0"].diversity == pytest.approx(d)
    assert [u.kind for u in index.units][:3] == ["in_domain"] * 3  # kinds in order, seeds inside
    assert len(index.units) == 4 * 2 * 3


def test_render_cache_reads_downscales_and_never_leaves_the_state_folder(tmp_path):
    state = tmp_path / "state"
    (state / "renders").mkdir(parents=True)
    Image.new("RGB", (600, 300), (10, 20, 30)).save(state / "renders" / "a.png")
    (state / "renders" / "bad.png").write_bytes(b"not a png")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    cache = RenderCache(state)
    image = cache.get("renders/a.png")
    assert image.size == (256, 128) and image.getpixel((5, 5)) == (10, 20, 30)
    assert cache.get("renders/a.png") is image  # cached
    assert cache.get("../outside.png") is None
    assert cache.get(str(tmp_path / "outside.png")) is None
    assert cache.get("renders/bad.png") is None and cache.get("renders/missing.png") is None
    assert cache.get(None) is None


def test_default_weights_are_the_rankers():
    assert ViewState().weights == DEFAULT_WEIGHTS


def test_no_viewer_is_started_without_a_display(monkeypatch):
    """Over SSH, webbrowser would start a text browser that takes the TUI's terminal."""
    import webbrowser

    from lorasel.tui import jobs

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda uri: opened.append(uri) or True)
    monkeypatch.setattr(jobs.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert jobs.open_in_viewer("file:///r.html") is False and opened == []
    monkeypatch.setenv("DISPLAY", ":0")
    assert jobs.open_in_viewer("file:///r.html") is True and opened == ["file:///r.html"]
