"""Prompt sets: the shipped ones parse and expand; bad ones fail naming the key at fault."""

from __future__ import annotations

import re

import pytest

from lorasel.errors import EvaluationError
from lorasel.evaluate import builtin_prompt_sets, load_prompt_set
from lorasel.evaluate.kohya_prompts import parse_kohya_prompts
from lorasel.evaluate.prompts import parse_prompt_set
from lorasel.results import KINDS


def test_shipped_sets_are_the_four_documented_ones():
    assert set(builtin_prompt_sets()) >= {"toy", "character", "object", "style"}


@pytest.mark.parametrize("name", builtin_prompt_sets())
def test_shipped_set_parses_and_expands(name):
    prompt_set = load_prompt_set(name)
    assert 8 <= len(prompt_set.templates) <= 16
    assert {t.kind for t in prompt_set.templates} == set(KINDS)
    prompts = prompt_set.expand("zkz", prompt_set.class_word or "thing")
    assert len({p.text for p in prompts}) == len(prompts)
    for p in prompts:
        assert "{" not in p.text and "}" not in p.text
        assert ("zkz" in p.text) == (p.kind != "unrelated"), p
        assert "zkz" not in p.scoring_text, p  # flexibility never sees the trigger
    ids = [p.prompt_id for p in prompts]
    assert ids[0] == "in_domain/0" and len(set(ids)) == len(ids)


def test_toy_set_uses_the_toy_grammar():
    prompts = load_prompt_set("toy").expand("zkz", "star")
    by_kind = {k: [p.text for p in prompts if p.kind == k] for k in KINDS}
    assert by_kind["in_domain"][0] == "a red zkz star on a white background"
    assert all(t.endswith(("white background", "black background")) for t in by_kind["in_domain"])
    assert not any(t.endswith(("white background", "black background")) for t in by_kind["out_of_domain"])


def test_scoring_text_replaces_trigger_by_class_word():
    ps = parse_prompt_set(
        '[prompts]\nout_of_domain = ["a {trigger} {class} in the snow", "{trigger} in pixel art"]\n',
        source="t.toml",
        name="t",
    )
    a, b = ps.expand("zkz", "dog")
    assert (a.text, a.scoring_text) == ("a zkz dog in the snow", "a dog in the snow")
    assert (b.text, b.scoring_text) == ("zkz in pixel art", "dog in pixel art")


def test_user_file_with_concept(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        '[concept]\ntrigger = "ohwx"\nclass = "man"\nnegative = "blurry"\n[prompts]\ntrigger = "{trigger} {class}"\n'
    )
    ps = load_prompt_set(str(path))
    assert (ps.trigger, ps.class_word, ps.negative, ps.name) == ("ohwx", "man", "blurry", "mine")
    assert load_prompt_set(ps.spec) == ps and load_prompt_set(load_prompt_set("toy").spec).name == "toy"
    assert [p.text for p in ps.expand(ps.trigger, ps.class_word)] == ["ohwx man"]


BAD = [
    ('[prompts]\nsideways = ["a {trigger}"]\n', "prompts.sideways"),
    ('[prompts]\nin_domain = ["a {subject} {trigger}"]\n', "prompts.in_domain[0]"),
    ('[prompts]\nin_domain = ["ok {trigger}", "a {trigger"]\n', "prompts.in_domain[1]"),
    ('[prompts]\nin_domain = ["a {trigger!r}"]\n', "prompts.in_domain[0]"),
    ('[prompts]\nin_domain = ["a {}"]\n', "prompts.in_domain[0]"),
    ('[prompts]\ntrigger = ["a {class}"]\n', "prompts.trigger[0]"),
    ('[prompts]\nunrelated = ["a {trigger} cat"]\n', "prompts.unrelated[0]"),
    ('[prompts]\nunrelated = [""]\n', "prompts.unrelated[0]"),
    ("[prompts]\nunrelated = [3]\n", "prompts.unrelated[0]"),
    ('[prompts]\nunrelated = ["a", "a"]\n', "prompts.unrelated[1]"),
    ('[concept]\ntriger = "zkz"\n[prompts]\nunrelated = ["a"]\n', "concept.triger"),
    ('[concept]\ntrigger = 3\n[prompts]\nunrelated = ["a"]\n', "concept.trigger"),
    ('colour = 1\n[prompts]\nunrelated = ["a"]\n', "colour"),
    ("[concept]\n", "[prompts]"),
    ("[prompts\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "named"), BAD)
def test_bad_prompt_set_names_the_key(text, named):
    with pytest.raises(EvaluationError) as info:
        parse_prompt_set(text, source="bad.toml", name="bad")
    assert named in info.value.message and "bad.toml" in info.value.message
    assert info.value.hint


def test_missing_trigger_or_class_is_an_error():
    ps = load_prompt_set("toy")
    with pytest.raises(EvaluationError, match="needs a trigger") as info:
        ps.expand(None, "star")
    assert "--trigger" in info.value.hint
    with pytest.raises(EvaluationError, match="class word"):
        ps.expand("zkz", None)


def test_unknown_set_and_missing_file(tmp_path):
    with pytest.raises(EvaluationError, match="unknown prompt set 'nope'"):
        load_prompt_set("nope")
    with pytest.raises(EvaluationError, match="not found"):
        load_prompt_set(str(tmp_path / "missing.toml"))


def test_toy_resolves_to_the_concepts_own_set():
    from lorasel.evaluate.prompts import resolve_prompt_spec

    assert resolve_prompt_spec("toy", "star") == "toy-star"
    assert resolve_prompt_spec("toy", "teapot") == "toy"
    assert resolve_prompt_spec("toy", None) == "toy"
    assert resolve_prompt_spec("character", "star") == "character"


def test_toy_concept_sets_match_the_concepts_training_images():
    """in_domain = the training colours × backgrounds; out_of_domain = backgrounds never trained on."""
    concepts = pytest.importorskip("lorasel.toyworld.concepts").CONCEPTS
    from lorasel.toyworld.world import COLORS

    sets = [name for name in builtin_prompt_sets() if name.startswith("toy-")]
    assert sorted(sets) == sorted(f"toy-{c.class_word}" for c in concepts.values())
    for concept in concepts.values():
        prompts = load_prompt_set(f"toy-{concept.class_word}").expand(concept.trigger, concept.class_word)
        by_kind = {k: [p.text for p in prompts if p.kind == k] for k in KINDS}
        expected = {
            f"a {c} {concept.token} on a {b} background" for c in concept.colors for b in concept.backgrounds
        }
        assert set(by_kind["in_domain"]) == expected
        for text in by_kind["out_of_domain"]:
            words = text.split()
            color, background = words[1], words[-2]
            assert {color, background} <= set(COLORS) and color != background
            assert background not in concept.backgrounds, text


def test_hostile_trigger_is_inserted_literally():
    ps = parse_prompt_set('[prompts]\ntrigger = ["a {trigger} {class}"]\n', source="t.toml", name="t")
    (p,) = ps.expand("{class}{0}{__import__}", "x}")
    assert p.text == "a {class}{0}{__import__} x}"


KOHYA = """# kohya sd-scripts --sample_prompts
zkz star, on a beach --n lowres, bad hands --w 512 --h 768 --d 42 --l 7.5 --s 28
a photo of a ZKZ Star in {space} --n lowres, bad hands
zkzx star alone
a cat on a sofa

zkz, a drawing --s 20
"""


def test_kohya_sample_prompts_are_a_prompt_set(tmp_path):
    """Lines with the trigger word measure the concept (in-domain), lines without it what leaks
    (unrelated); the trigger and the class word right after it become placeholders, so the
    scoring text names the class once; --n is the negative, the other options are dropped."""
    path = tmp_path / "sample_prompts.txt"
    path.write_text(KOHYA)
    ps = load_prompt_set(str(path))
    assert (
        ps.negative == "lowres, bad hands" and ps.spec == str(path.resolve()) and ps.name == "sample_prompts"
    )
    expanded = [(p.prompt_id, p.text, p.scoring_text) for p in ps.expand("zkz", "star")]
    assert expanded == [
        ("in_domain/0", "zkz star, on a beach", "star, on a beach"),
        ("in_domain/1", "a photo of a zkz star in {space}", "a photo of a star in {space}"),
        ("in_domain/2", "zkz, a drawing", "star, a drawing"),
        ("trigger/0", "zkz star", "star"),
        ("unrelated/0", "zkzx star alone", "zkzx star alone"),  # another word, not the trigger
        ("unrelated/1", "a cat on a sofa", "a cat on a sofa"),
    ]
    assert {p.kind for p in ps.expand("zkz", "star")} == {"in_domain", "trigger", "unrelated"}
    # Without a class word the trigger prompt is the trigger alone, and scoring keeps the trigger.
    plain = [(p.prompt_id, p.text, p.scoring_text) for p in ps.expand("zkz", None)]
    assert ("trigger/0", "zkz", "zkz") in plain and (
        "in_domain/2",
        "zkz, a drawing",
        "zkz, a drawing",
    ) in plain
    # A line that is the trigger prompt already is not added twice.
    again = parse_kohya_prompts("zkz star\nzkz star on grass\n", source="s.txt", name="s")
    assert [p.text for p in again.expand("zkz", "star") if p.kind == "trigger"] == []


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("# only a comment\n\n", "has no prompts"),
        ("zkz star --n a\nzkz star on grass --n b\n", "the negative prompts differ (line 1, line 2)"),
        ("# a\nzkz star\n\nzkz star --s 20\n", "line 4 repeats the prompt of line 2: 'zkz star'"),
        ("zkz star\n--n lowres\n", "line 2 has options but no prompt"),
        ("zkz " + "x" * 1001 + "\n", "line 1 is longer than 1000 characters"),
    ],
)
def test_bad_kohya_prompts_name_the_line(text, named):
    with pytest.raises(EvaluationError, match=re.escape(named)) as info:
        parse_kohya_prompts(text, source="bad.txt", name="bad")
    assert info.value.hint and "bad.txt" in str(info.value)


def test_kohya_prompts_without_the_trigger_measure_nothing(tmp_path):
    ps = parse_kohya_prompts("a cat\na dog --n blurry\n", source="s.txt", name="s")
    with pytest.raises(EvaluationError, match="no prompt contains the trigger word 'zkz'") as info:
        ps.expand("zkz", "star")
    assert "--trigger" in info.value.hint
    with pytest.raises(EvaluationError, match="not found"):
        load_prompt_set(str(tmp_path / "missing.txt"))
    # Two lines that differ only in how the trigger and class word are written: one prompt.
    twice = parse_kohya_prompts("zkz star on grass\nZKZ Star on grass\n", source="s.txt", name="s")
    with pytest.raises(
        EvaluationError, match="'ZKZ Star on grass' and 'zkz star on grass' are the same prompt"
    ):
        twice.expand("zkz", "star")


def test_kohyas_toml_and_json_sample_prompts(tmp_path):
    """sd-scripts also reads a .toml ([prompt] defaults, [[prompt.subset]] tables) and a .json
    (a list of objects): the same prompts and negative as the .txt form."""
    toml = tmp_path / "samples.toml"
    toml.write_text(
        '[prompt]\nnegative_prompt = "lowres"\nwidth = 512\nsample_steps = 28\n\n'
        '[[prompt.subset]]\nprompt = "zkz star on a beach"\nseed = 1\n\n'
        '[[prompt.subset]]\nprompt = "a cat on a sofa"\n'
    )
    js = tmp_path / "samples.json"
    js.write_text(
        '[{"prompt": "zkz star on a beach", "negative_prompt": "lowres", "width": 512},'
        ' {"prompt": "a cat on a sofa", "negative_prompt": "lowres"}]'
    )
    for path in (toml, js):
        ps = load_prompt_set(str(path))
        assert ps.negative == "lowres"
        assert [(p.prompt_id, p.text) for p in ps.expand("zkz", "star")] == [
            ("in_domain/0", "zkz star on a beach"),
            ("trigger/0", "zkz star"),
            ("unrelated/0", "a cat on a sofa"),
        ]


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("s.json", "[{'prompt': 1}]", "is not valid JSON"),
        ("s.json", '{"prompt": "zkz"}', "is not kohya sample prompts"),
        ("s.json", '[{"prompt": 3}]', "entry 1 has no prompt text"),
        ("s.json", '[{"prompt": "zkz", "negative_prompt": "a"}, {"prompt": "x", "negative_prompt": "b"}]',
         "the negative prompts differ (entry 1, entry 2)"),
        ("s.toml", '[prompt]\n[[prompt.subset]]\nwidth = 5\n', "prompt.subset 1 has no prompt text"),
        ("s.toml", '[prompt]\n[[prompt.subset]]\nprompt = " "\n', "prompt.subset 1 has an empty prompt"),
        ("s.json", "[]", "has no prompts"),
    ],
)  # fmt: skip
def test_bad_structured_kohya_prompts_name_the_entry(tmp_path, name, text, named):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(EvaluationError, match=re.escape(named)) as info:
        load_prompt_set(str(path))
    assert info.value.hint and name in str(info.value)
