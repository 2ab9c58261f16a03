"""kohya sd-scripts' sample prompts as a prompt set: its ``.txt`` (``--sample_prompts``: one
prompt a line, ``#`` comments, options after `` --``), its ``.json`` (a list of objects) and its
``.toml`` (``[prompt]`` defaults, ``[[prompt.subset]]`` tables). ``--n`` / ``negative_prompt`` is
the set's one negative; ``--w --h --d --l --s`` and the rest are left to lorasel's settings, the
same for every checkpoint. The prompts are kept written out (``PromptSet.literal``); their kinds
wait for the trigger (:func:`kohya_templates`).
"""

from __future__ import annotations

import re

from lorasel.errors import EvaluationError
from lorasel.evaluate.prompts import MAX_PROMPT_CHARS, PromptSet, PromptTemplate, _collapse


def kohya_templates(
    literal: tuple[str, ...], trigger: str, class_word: str | None, *, source: str
) -> tuple[PromptTemplate, ...]:
    """Templates of written-out prompts, now that the trigger is known: a prompt with the trigger
    word (whole word, any case) is ``in_domain``, one without it ``unrelated``, and
    ``{trigger} {class}`` is added as the ``trigger`` prompt. The trigger word (and the class word
    right after it) become placeholders, so the scoring text names the class once, as for a TOML
    set's ``{trigger} {class}``."""
    has_class = bool(class_word and class_word.strip())
    pattern = rf"(?<!\w){re.escape(trigger)}(?!\w)"
    if has_class:
        pattern += rf"(?:\s+({re.escape(str(class_word).strip())})(?!\w))?"
    word = re.compile(pattern, re.IGNORECASE)

    def escape(text: str) -> str:
        return text.replace("{", "{{").replace("}", "}}")

    kinds: dict[str, list[str]] = {"in_domain": [], "trigger": [], "unrelated": []}
    made: dict[str, str] = {}  # template -> the prompt it came from
    for line in literal:
        pieces, last = [], 0
        for match in word.finditer(line):
            pieces.append(escape(line[last : match.start()]))
            pieces.append("{trigger} {class}" if has_class and match.group(1) else "{trigger}")
            last = match.end()
        template = "".join(pieces) + escape(line[last:])
        if template in made:  # e.g. "zkz star" and "ZKZ Star": one prompt once the trigger is filled in
            raise EvaluationError(
                f"prompt file {source}: {line!r} and {made[template]!r} are the same prompt "
                f"with the trigger {trigger!r} filled in",
                hint="every prompt of a set must be different: remove one of them",
            )
        made[template] = line
        kinds["in_domain" if pieces else "unrelated"].append(template)
    if not kinds["in_domain"]:
        raise EvaluationError(
            f"prompt file {source}: no prompt contains the trigger word {trigger!r}, "
            "so none measures the LoRA",
            hint="write the trigger into the prompts that should show the concept, or pass --trigger WORD",
        )
    alone = "{trigger} {class}" if has_class else "{trigger}"
    if alone not in kinds["in_domain"]:
        kinds["trigger"].append(alone)
    return tuple(
        PromptTemplate(f"{kind}/{i}", kind, t) for kind, items in kinds.items() for i, t in enumerate(items)
    )


def parse_kohya_prompts(text: str, *, source: str, name: str, spec: str | None = None) -> PromptSet:
    """kohya sd-scripts' sample prompts (``--sample_prompts prompts.txt``) as a prompt set: each
    line ``PROMPT --n NEGATIVE --w 512 --d 42 ...`` up to its first `` --``; ``--n`` is kept (one
    negative for the whole set, as lorasel renders every prompt with the same settings), the other
    options are left to lorasel's settings. Every error names the file and the line."""
    entries: list[tuple[str, str, str | None]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        prompt, *options = line.split(" --")
        if prompt.startswith("--"):
            raise EvaluationError(
                f"prompt file {source}, line {number} has options but no prompt",
                hint="write the prompt before its --options",
            )
        negative = None
        for option in options:
            letter, _, value = option.partition(" ")
            if letter.lower() == "n":
                negative = value
        entries.append((f"line {number}", prompt, negative))
    return kohya_set(entries, source=source, name=name, spec=spec)


def kohya_entries(data: object, source: str) -> list[tuple[str, str, str | None]]:
    """The prompts of kohya's structured sample-prompt files: a ``.toml`` with ``[prompt]``
    defaults and ``[[prompt.subset]]`` tables, or a ``.json`` list of objects; each has
    ``prompt`` and may have ``negative_prompt`` (``width``, ``seed``, ``scale`` ... are left to
    lorasel's settings). Returns (where, prompt, negative) for :func:`kohya_set`."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):  # TOML
        defaults = {k: v for k, v in data["prompt"].items() if k != "subset"}
        subsets = data["prompt"].get("subset", [])
        items, label = [{**defaults, **s} if isinstance(s, dict) else s for s in subsets], "prompt.subset"
    else:
        items, label = data, "entry"
    if not isinstance(items, list):
        raise EvaluationError(
            f"prompt file {source} is not kohya sample prompts",
            hint="kohya's .json is a list of objects with a prompt; its .toml has [[prompt.subset]] tables",
        )
    out = []
    for i, item in enumerate(items, start=1):
        where = f"{label} {i}"
        prompt = item.get("prompt") if isinstance(item, dict) else None
        negative = item.get("negative_prompt") if isinstance(item, dict) else None
        if not isinstance(prompt, str) or (negative is not None and not isinstance(negative, str)):
            raise EvaluationError(
                f"prompt file {source}, {where} has no prompt text",
                hint='give each a "prompt" string (and "negative_prompt", if any, a string)',
            )
        out.append((where, prompt, negative))
    return out


def kohya_set(
    entries: list[tuple[str, str, str | None]], *, source: str, name: str, spec: str | None
) -> PromptSet:
    """A prompt set of written-out prompts (``PromptSet.literal``) from kohya's (where, prompt,
    negative) entries; the negatives given must agree, as lorasel renders with one."""
    prompts: dict[str, str] = {}  # prompt -> where it is
    negatives: dict[str, str] = {}  # negative -> where it is first
    for where, raw, negative in entries:
        prompt = _collapse(raw)
        at = f"prompt file {source}, {where}"
        if not prompt:
            raise EvaluationError(f"{at} has an empty prompt", hint="remove it or write the prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise EvaluationError(f"{at} is longer than {MAX_PROMPT_CHARS} characters", hint="shorten it")
        if prompt in prompts:
            raise EvaluationError(
                f"{at} repeats the prompt of {prompts[prompt]}: {prompt!r}",
                hint="every prompt of a set must be different (lorasel renders each with several seeds)",
            )
        prompts[prompt] = where
        if negative is not None:
            negatives.setdefault(_collapse(negative), where)
    if not prompts:
        raise EvaluationError(
            f"prompt file {source} has no prompts",
            hint="write at least one prompt, as for kohya's --sample_prompts",
        )
    if len(negatives) > 1:
        raise EvaluationError(
            f"prompt file {source}: the negative prompts differ ({', '.join(negatives.values())})",
            hint="lorasel renders every prompt with one negative prompt: give each the same one, or none",
        )
    return PromptSet(
        name=name,
        source=source,
        spec=spec or source,
        trigger=None,
        class_word=None,
        negative=next(iter(negatives), ""),
        templates=(),
        literal=tuple(prompts),
    )
