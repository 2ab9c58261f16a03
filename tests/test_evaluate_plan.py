"""The render plan: common random numbers, deterministic batches, sharding; option parsing."""

from __future__ import annotations

import pytest

from lorasel.errors import EvaluationError
from lorasel.evaluate import EvalOptions, parse_size, parse_strengths
from lorasel.evaluate.plan import Candidate, build_plan, canonical_strength, render_key, render_seed, shard
from lorasel.evaluate.prompts import Prompt
from lorasel.results import BASE

PROMPTS = [
    Prompt(f"in_domain/{i}", "in_domain", f"a zkz star number {i}", f"a star number {i}") for i in range(3)
]
GOLDEN_SEED, GOLDEN_EMPTY = 3153837784445637933, 2168471946935945417
CANDIDATES = [Candidate(f"c{i}.safetensors", f"hash{i}") for i in range(2)]


def _plan(batch_size=4, strengths=(0.5, 1.0), seeds=2):
    return build_plan(CANDIDATES, strengths, PROMPTS, seeds, batch_size, "settings")


def test_plan_covers_base_once_and_every_checkpoint_strength():
    plan = _plan()
    items = [it for b in plan for it in b.items]
    groups = [(it.checkpoint, it.strength) for it in items]
    assert groups.count((BASE, 0.0)) == 3 * 2
    for c in CANDIDATES:
        for s in (0.5, 1.0):
            assert groups.count((c.checkpoint, s)) == 3 * 2
    assert len(items) == (1 + 2 * 2) * 3 * 2
    assert len({it.key for it in items}) == len(items)
    assert plan[0].checkpoint == BASE
    # Fixed chunks of one (checkpoint, strength): 6 items at batch size 4 → 4 + 2.
    assert [len(b.items) for b in plan] == [4, 2] * 5
    assert all(len({(it.checkpoint, it.strength) for it in b.items}) == 1 for b in plan)


def test_seed_depends_only_on_prompt_and_seed_index():
    items = [it for b in _plan() for it in b.items]
    seeds = {}
    for it in items:
        seeds.setdefault((it.prompt.text, it.seed_index), set()).add(it.seed)
    assert all(len(s) == 1 for s in seeds.values())  # the same noise for every candidate
    assert len({next(iter(s)) for s in seeds.values()}) == len(seeds)  # distinct otherwise
    assert 0 <= render_seed("x", 0) < 2**63


def test_seed_is_a_stable_hash_not_pythons_hash():
    # Golden values: Python's hash() of a str changes with every interpreter (PYTHONHASHSEED),
    # and a changed seed function would silently invalidate every cached render.
    assert render_seed("a red zkz star", 3) == GOLDEN_SEED
    assert render_seed("", 0) == GOLDEN_EMPTY


def test_render_key_depends_on_every_part():
    base = render_key("h", 0.5, "p", 1, "s")
    assert render_key("h", 0.5, "p", 1, "s") == base
    others = [render_key("h2", 0.5, "p", 1, "s"), render_key("h", 0.75, "p", 1, "s"),
              render_key("h", 0.5, "q", 1, "s"), render_key("h", 0.5, "p", 2, "s"), render_key("h", 0.5, "p", 1, "t")]  # fmt: skip
    assert base not in others and len(set(others)) == 5
    assert render_key("h", 0.1 + 0.2, "p", 1, "s") == render_key("h", 0.3, "p", 1, "s")
    assert canonical_strength(-0.0) == 0.0


def test_plan_is_deterministic():
    assert [b.keys for b in _plan()] == [b.keys for b in _plan()]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_plan(count):
    plan = _plan(batch_size=3)
    shares = [shard(plan, i, count) for i in range(count)]
    assert [b for share in shares for b in share] == plan  # contiguous, in order, no overlap
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shard_sizes_match_accelerate():
    from accelerate import PartialState

    # accelerate with one process gives everything; the split rule for more is documented
    # (first len % n processes get one more) and checked above.
    with PartialState().split_between_processes(list(range(10))) as mine:
        assert mine == list(range(10)) == shard(list(range(10)), 0, 1)
    assert [len(shard(list(range(10)), i, 3)) for i in range(3)] == [4, 3, 3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.5,0.75,1.0", (0.5, 0.75, 1.0)), (" 1, 0.5,1 ", (1.0, 0.5)), ("0,1", (1.0,)), ("2", (2.0,))],
)
def test_parse_strengths(text, expected):
    assert parse_strengths(text) == expected


@pytest.mark.parametrize(("text", "match"), [("0.5,x", "'x'"), ("2.5", "outside"), ("-0.1", "outside"),
                                             ("nan", "outside"), ("0", "no strength above 0"), ("", "no strength")])  # fmt: skip
def test_bad_strengths(text, match):
    with pytest.raises(EvaluationError, match=match):
        parse_strengths(text)


def test_parse_size():
    assert parse_size("512x768") == (512, 768)
    assert parse_size("64") == (64, 64)
    for bad in ("64by64", "0x64", "x", "-8x8"):
        with pytest.raises(EvaluationError, match="WIDTHxHEIGHT"):
            parse_size(bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"seeds": 0}, "seeds"), ({"seeds": -2}, "seeds"), ({"seeds": 1.5}, "seeds"), ({"steps": 0}, "steps"),
     ({"batch_size": 0}, "batch size"), ({"guidance": -1.0}, "guidance"), ({"size": (64, 0)}, "size")],
)  # fmt: skip
def test_bad_options(kwargs, match):
    with pytest.raises(EvaluationError, match=match):
        EvalOptions(**kwargs)


def test_config_text_ignores_diffusers_bookkeeping():
    """diffusers keeps ``_use_default_values`` in set order, which changes between interpreters:
    a cache key built from it would change on every run."""
    from diffusers import DDIMScheduler

    from lorasel.evaluate.render import config_text

    a, b = DDIMScheduler().config, DDIMScheduler(steps_offset=1).config
    shuffled = {
        **a,
        "_use_default_values": list(reversed(a["_use_default_values"])),
        "_diffusers_version": "0",
    }
    assert config_text(shuffled) == config_text(a)
    assert config_text(b) != config_text(a)  # a real setting still counts


def test_config_text_ignores_transformers_bookkeeping():
    """transformers writes its own version, the class names and the saved dtype into a config (an
    upgrade or a save_pretrained changes them): they must not change the cache keys."""
    from transformers import CLIPTextConfig

    from lorasel.evaluate.render import config_text

    a = CLIPTextConfig(hidden_size=32, num_hidden_layers=2)
    b = CLIPTextConfig(hidden_size=32, num_hidden_layers=2)
    b.transformers_version, b.architectures, b.dtype = "0.0.1", ["CLIPTextModel"], "float16"
    assert config_text(b) == config_text(a)
    assert config_text(b, legacy=True) != config_text(a, legacy=True)  # as lorasel keyed them before
    assert config_text(CLIPTextConfig(hidden_size=64, num_hidden_layers=2)) != config_text(a)


def test_progress_rate_and_eta():
    from lorasel.evaluate.progress import RenderProgress

    now = [100.0]
    events = []
    progress = RenderProgress(events.append, total=30, cached=10, clock=lambda: now[0])
    now[0] += 4.0
    progress.advance(8, checkpoint="c", strength=1.0)
    (event,) = events
    assert (event.done, event.total, event.cached) == (18, 30, 10)
    assert event.rate == pytest.approx(2.0) and event.eta_s == pytest.approx(6.0)
    progress.warn("careful")
    assert events[-1].phase == "warning" and events[-1].message == "careful"


def test_toy_defaults_apply_to_a_loaded_toy_pipeline_too():
    from types import SimpleNamespace

    from lorasel.evaluate.job import _default_prompts, _render_defaults
    from lorasel.toyworld import DEFAULT_GUIDANCE, DEFAULT_STEPS

    loaded_toy = SimpleNamespace(_lorasel_family="toy")
    assert _render_defaults(loaded_toy) == _render_defaults("toy") == (DEFAULT_STEPS, DEFAULT_GUIDANCE)
    assert _default_prompts(loaded_toy) == "toy"
    assert _render_defaults("org/some-sd15") == (30, 7.0) and _default_prompts("./sd15") == "object"


def test_changed_render_settings_names_each_change_and_the_options_that_continue():
    from lorasel.evaluate.record import changed_render_settings

    before = {"base": "toy", "steps": 12, "guidance": 5.0, "size": "64x64", "dtype": "float32", "seeds": 2}
    assert changed_render_settings(None, before) is None
    assert changed_render_settings({}, before) is None
    # seeds (and prompts, strengths) change which renders, not how: no note
    assert changed_render_settings(before, {**before, "seeds": 4}) is None
    note = changed_render_settings(before, {**before, "steps": 20, "guidance": 7.5, "dtype": "float16"})
    assert note == (
        "the last evaluation here rendered with steps 12 (now 20), guidance 5 (now 7.5), dtype float32 "
        "(now float16): its renders are not reused; pass --steps 12 --guidance 5 to continue it"
    )
    # what no option sets is named without a hint; a value with spaces is quoted
    note = changed_render_settings({"negative": "blurry, low quality"}, {"negative": ""})
    assert (
        note
        == "the last evaluation here rendered with negative 'blurry, low quality' (now ''): its renders are not reused"
    )
    # a field the old record lacks (an older lorasel) is not a change
    assert changed_render_settings({"steps": 12}, {"steps": 12, "clip_skip": 2}) is None


def test_relocated_puts_checkpoints_under_the_folder_evaluated_and_keeps_outside_ones(tmp_path):
    from dataclasses import replace

    from lorasel.evaluate.runner import relocated
    from tests.synthetic_results import make_results

    results = make_results(checkpoints=3, strengths=(1.0,), seeds=1)
    frame = results.checkpoints.copy()
    # ids are paths relative to the folder evaluated; one checkpoint lay outside it (a symlink)
    frame["checkpoint"] = ["checkpoints/a.safetensors", "b.safetensors", "/elsewhere/c.safetensors"]
    frame["path"] = [
        "/old/run/checkpoints/a.safetensors",
        "/old/run/b.safetensors",
        "/elsewhere/c.safetensors",
    ]
    moved = relocated(replace(results, checkpoints=frame), tmp_path / "run")
    assert list(moved.checkpoints["path"]) == [
        str(tmp_path / "run" / "checkpoints" / "a.safetensors"),
        str(tmp_path / "run" / "b.safetensors"),
        "/elsewhere/c.safetensors",
    ]
    assert frame["path"].iloc[0] == "/old/run/checkpoints/a.safetensors"  # the input is not changed
