"""Prompt sets: the fixed prompts every checkpoint is rendered with.

A prompt set is a TOML file (shipped ones live in the ``eval_prompts`` package)::

    [concept]                 # all optional; --trigger/--class and checkpoint metadata fill gaps
    trigger = "zkz"
    class = "star"
    negative = "blurry, low quality"

    [prompts]
    in_domain = ["a red {trigger} {class} on a white background"]   # like the training captions
    trigger = ["{trigger} {class}"]                                  # the trigger alone
    out_of_domain = ["a {trigger} {class} in the grand canyon"]      # changed context or style
    unrelated = ["a photo of a lighthouse"]                          # no trigger: what leaks

Prompts that measure the concept (``in_domain``, ``trigger``, ``out_of_domain``) must use
``{trigger}``; ``unrelated`` prompts must not. ``{class}`` is the plain class word; flexibility
scores a render against its prompt with the trigger replaced by the class word.

A ``.txt`` file, a ``.json`` and a ``.toml`` with ``[prompt]`` instead of ``[prompts]`` are read
as kohya sd-scripts' sample prompts (:mod:`lorasel.evaluate.kohya_prompts`): written out, their
kinds wait for the trigger (:meth:`PromptSet.templates_for`).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lorasel.errors import EvaluationError
from lorasel.results import KINDS

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PLACEHOLDERS = ("trigger", "class")
CONCEPT_KEYS = ("trigger", "class", "negative")
TOP_KEYS = ("name", "description", "concept", "prompts")
NEEDS_TRIGGER = ("in_domain", "trigger", "out_of_domain")
MAX_PROMPT_CHARS = 1000
_SETS_PACKAGE = "eval_prompts"


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt of a set before the trigger and class word are filled in."""

    prompt_id: str  # "<kind>/<index within kind>", stable within its set
    kind: str
    template: str


@dataclass(frozen=True)
class Prompt:
    """One expanded prompt: what is rendered, and what flexibility scores it against."""

    prompt_id: str
    kind: str
    text: str  # rendered
    scoring_text: str  # the prompt with the trigger replaced by the class word


@dataclass(frozen=True)
class PromptSet:
    """A parsed, validated prompt set."""

    name: str
    source: str  # the file it came from, for messages
    spec: str  # what load_prompt_set takes to load it again: a shipped name or an absolute path
    trigger: str | None
    class_word: str | None
    negative: str
    templates: tuple[PromptTemplate, ...]
    literal: tuple[str, ...] = ()  # kohya sample prompts, written out: kinds come with the trigger

    @property
    def needs_class(self) -> bool:
        return any("{class}" in t.template for t in self.templates)

    def templates_for(self, trigger: str, class_word: str | None) -> tuple[PromptTemplate, ...]:
        """The set's templates; for written-out (kohya) prompts, made now that the trigger is
        known (:func:`lorasel.evaluate.kohya_prompts.kohya_templates`)."""
        if not self.literal:
            return self.templates
        from lorasel.evaluate.kohya_prompts import kohya_templates

        return kohya_templates(self.literal, trigger, class_word, source=self.source)

    def expand(self, trigger: str | None, class_word: str | None) -> tuple[Prompt, ...]:
        """Fill in the placeholders; raise if the trigger or class word is needed but missing."""
        if trigger is None or not trigger.strip():
            raise EvaluationError(
                f"prompt set {self.source} needs a trigger word and none was found "
                "(not in its [concept] section, the checkpoint metadata or the dataset folder name)",
                hint="pass --trigger WORD (and --class WORD), or set [concept] trigger in the prompt file",
            )
        if self.needs_class and (class_word is None or not class_word.strip()):
            raise EvaluationError(
                f"prompt set {self.source} uses {{class}} and no class word was found",
                hint="pass --class WORD (e.g. --class person), or set [concept] class in the prompt file",
            )
        word = class_word or ""
        out = []
        for t in self.templates_for(trigger, class_word):
            text = _collapse(t.template.format(trigger=trigger, **{"class": word}))
            # "{trigger} {class}" becomes the class word once, not twice.
            plain = t.template.replace("{trigger} {class}", "{class}").replace("{trigger}", "{class}")
            scoring = _collapse(plain.format(**{"class": word or trigger}))
            out.append(Prompt(t.prompt_id, t.kind, text, scoring))
        texts = [p.text for p in out]
        for p in out:
            if texts.count(p.text) > 1:
                raise EvaluationError(
                    f"prompt set {self.source}: {_key(p.prompt_id)} expands to {p.text!r}, like another prompt",
                    hint="every prompt of a set must be different",
                )
        return tuple(out)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def builtin_prompt_sets() -> list[str]:
    """Names of the shipped prompt sets (``toy``, ``character``, ``object``, ``style``)."""
    folder = resources.files(_SETS_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def resolve_prompt_spec(spec: str | Path, class_word: str | None) -> str | Path:
    """``toy`` means the toy world's set for the concept evaluated (``toy-<class>``) when one is
    shipped; any other spec is returned as given."""
    if isinstance(spec, str) and spec == "toy" and class_word:
        concept_set = f"toy-{class_word}"
        if concept_set in builtin_prompt_sets():
            return concept_set
    return spec


def load_prompt_set(spec: str | Path) -> PromptSet:
    """A shipped set by name (``toy``), or by path a user's TOML file or kohya's sample prompts
    (``.txt``; ``.json``; a ``.toml`` with ``[prompt]`` instead of ``[prompts]``)."""
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if isinstance(spec, Path) or suffix in (".toml", ".txt", ".json") or path.exists():
        if not path.is_file():
            raise EvaluationError(
                f"prompt set file {path} not found",
                hint="pass an existing .toml file, kohya sample prompts (.txt, .toml, .json) or a shipped set name",
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EvaluationError(
                f"cannot read prompt set {path}: {exc}", hint="pass a UTF-8 TOML or text file"
            ) from exc
        named = {"source": str(path), "name": path.stem, "spec": str(path.resolve())}
        from lorasel.evaluate.kohya_prompts import kohya_entries, kohya_set, parse_kohya_prompts

        if suffix == ".txt":
            return parse_kohya_prompts(text, **named)
        if suffix == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise EvaluationError(
                    f"prompt file {path} is not valid JSON: {exc}", hint="fix the JSON"
                ) from exc
            return kohya_set(kohya_entries(data, str(path)), **named)
        return parse_prompt_set(text, **named)
    name = str(spec)
    if name not in builtin_prompt_sets():
        raise EvaluationError(
            f"unknown prompt set {name!r}",
            hint=f"use one of {', '.join(builtin_prompt_sets())} or a path to a .toml file",
        )
    text = resources.files(_SETS_PACKAGE).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return parse_prompt_set(text, source=f"{name}.toml", name=name, spec=name)


def parse_prompt_set(text: str, *, source: str, name: str, spec: str | None = None) -> PromptSet:
    """Parse and validate a prompt set; every error names the file and the key at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EvaluationError(
            f"prompt set {source} is not valid TOML: {exc}", hint="fix the TOML syntax"
        ) from exc
    if "prompt" in data and "prompts" not in data:  # kohya's [prompt] / [[prompt.subset]]
        from lorasel.evaluate.kohya_prompts import kohya_entries, kohya_set

        return kohya_set(kohya_entries(data, source), source=source, name=name, spec=spec)
    _no_unknown_keys(data, TOP_KEYS, source, "")
    concept = data.get("concept", {})
    if not isinstance(concept, dict):
        raise EvaluationError(
            f"prompt set {source}: [concept] must be a table", hint="see eval_prompts/toy.toml"
        )
    _no_unknown_keys(concept, CONCEPT_KEYS, source, "concept.")
    for key in CONCEPT_KEYS:
        if key in concept and not isinstance(concept[key], str):
            raise EvaluationError(
                f"prompt set {source}: concept.{key} must be a string, not {concept[key]!r}",
                hint='write it in quotes, e.g. trigger = "zkz"',
            )
    prompts = data.get("prompts")
    if not isinstance(prompts, dict) or not prompts:
        raise EvaluationError(
            f"prompt set {source} has no [prompts] table",
            hint=f"add [prompts] with lists of kind {', '.join(KINDS)}",
        )
    templates: list[PromptTemplate] = []
    for kind, items in prompts.items():
        if kind not in KINDS:
            raise EvaluationError(
                f"prompt set {source}: unknown prompt kind prompts.{kind}", hint=f"use {', '.join(KINDS)}"
            )
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list):
            raise EvaluationError(
                f"prompt set {source}: prompts.{kind} must be a list of strings",
                hint='e.g. ["a {trigger} {class}"]',
            )
        for i, template in enumerate(items):
            key = f"prompts.{kind}[{i}]"
            _check_template(template, kind, key, source)
            templates.append(PromptTemplate(f"{kind}/{i}", kind, template))
    seen: dict[str, str] = {}
    for t in templates:
        if t.template in seen:
            raise EvaluationError(
                f"prompt set {source}: {_key(t.prompt_id)} repeats {_key(seen[t.template])}",
                hint="every prompt of a set must be different",
            )
        seen[t.template] = t.prompt_id
    return PromptSet(
        name=str(data.get("name", name)),
        source=source,
        spec=spec or source,
        trigger=_clean(concept.get("trigger")),
        class_word=_clean(concept.get("class")),
        negative=concept.get("negative", "").strip(),
        templates=tuple(templates),
    )


def _key(prompt_id: str) -> str:
    """``"in_domain/2"`` → ``"prompts.in_domain[2]"``: the TOML key a person can find."""
    kind, _, index = prompt_id.partition("/")
    return f"prompts.{kind}[{index}]"


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = _collapse(value)
    return value or None


def _no_unknown_keys(table: dict, allowed: tuple[str, ...], source: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise EvaluationError(
                f"prompt set {source}: unknown key {prefix}{key}",
                hint=f"allowed keys: {', '.join(prefix + k for k in allowed)}",
            )


def _check_template(template: object, kind: str, key: str, source: str) -> None:
    if not isinstance(template, str) or not template.strip():
        raise EvaluationError(
            f"prompt set {source}: {key} must be a non-empty string", hint="remove or fill it"
        )
    if len(template) > MAX_PROMPT_CHARS:
        raise EvaluationError(
            f"prompt set {source}: {key} is longer than {MAX_PROMPT_CHARS} characters", hint="shorten it"
        )
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise EvaluationError(
            f"prompt set {source}: {key} has a bad placeholder in {template!r} ({exc})",
            hint="use {trigger} and {class}; write a literal brace as {{ or }}",
        ) from exc
    fields = [f for f, _, _ in parsed]
    specs = [(spec, conv) for _, spec, conv in parsed]
    for field in fields:
        if field not in PLACEHOLDERS:
            raise EvaluationError(
                f"prompt set {source}: {key} uses unknown placeholder {{{field}}} in {template!r}",
                hint="only {trigger} and {class} are filled in; write a literal brace as {{ or }}",
            )
    if any(spec or conv for spec, conv in specs):
        raise EvaluationError(
            f"prompt set {source}: {key} has a formatted placeholder in {template!r}",
            hint="write {trigger} and {class} plainly, without :spec or !conversion",
        )
    if kind in NEEDS_TRIGGER and "trigger" not in fields:
        raise EvaluationError(
            f"prompt set {source}: {key} ({kind}) has no {{trigger}} placeholder: {template!r}",
            hint=f"{kind} prompts measure the concept, so they must contain {{trigger}}",
        )
    if kind == "unrelated" and "trigger" in fields:
        raise EvaluationError(
            f"prompt set {source}: {key} (unrelated) uses {{trigger}}: {template!r}",
            hint="unrelated prompts measure what the LoRA leaks into prompts without its trigger",
        )
