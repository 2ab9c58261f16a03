"""Planning an evaluation: the inputs checked, the models loaded and the render plan made,
before the first render (:func:`prepare`), and the base model's defaults."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lorasel.checkpoints.metadata import PREDICTION_WORDS, PREDICTIONS
from lorasel.checkpoints.summary import FAMILY_LABELS
from lorasel.errors import EvaluationError
from lorasel.evaluate.candidates import CheckpointInfo, find_checkpoints
from lorasel.evaluate.concept import dataset_path, reference_images, resolve_concept
from lorasel.evaluate.options import DEFAULT_GUIDANCE, DEFAULT_STEPS, EvalOptions
from lorasel.evaluate.plan import Batch, Candidate, RenderSettings, build_plan, render_key
from lorasel.evaluate.processes import Processes
from lorasel.evaluate.progress import RenderProgress
from lorasel.evaluate.prompts import Prompt, load_prompt_set, resolve_prompt_spec
from lorasel.evaluate.render import make_settings, pipeline_fingerprints
from lorasel.evaluate.scoring import reference_embeddings
from lorasel.evaluate.store import Store
from lorasel.models.base import check_base_spec
from lorasel.models.scorer import scorer_caveat
from lorasel.rundir import RunDir
from lorasel.text import counted


def is_toy(base: object) -> bool:
    """The bundled toy world, by spec or as a loaded pipeline."""
    if isinstance(base, str):
        return base == "toy"
    from lorasel.models import base_family

    try:
        return base_family(base) == "toy"
    except AttributeError:
        return False


def base_spec(base: object) -> str:
    """The base as a spec for the settings record and the cache keys: a pipeline from
    ``load_base`` keeps its spec, so passing it renders into the same cache as the spec."""
    if isinstance(base, str):
        return base
    spec = getattr(base, "_lorasel_spec", None)
    if isinstance(spec, str):
        return spec
    return "toy" if is_toy(base) else f"<{type(base).__name__}>"


#: The CLIP scorer for a real base when none is given (LyCORIS-eval's; see REFERENCE).
DEFAULT_SCORER = "ViT-L-14:datacomp_xl_s13b_b90k"


def default_scorer(base: object) -> str:
    """The scorer spec when none is given: the toy scorer for the toy world (the only one that
    knows it), else :data:`DEFAULT_SCORER` (the toy scorer has never seen a real image)."""
    return "toy" if is_toy(base) else DEFAULT_SCORER


def _default_prompts(base: object) -> str:
    return "toy" if is_toy(base) else "object"


def _render_defaults(base: object) -> tuple[int, float]:
    """Steps and guidance when not given: the toy world's own, else real SD's usual."""
    if is_toy(base):
        from lorasel.toyworld import DEFAULT_GUIDANCE as TOY_GUIDANCE
        from lorasel.toyworld import DEFAULT_STEPS as TOY_STEPS

        return TOY_STEPS, TOY_GUIDANCE
    return DEFAULT_STEPS, DEFAULT_GUIDANCE


@dataclass
class Job:
    """Everything planned before rendering starts."""

    infos: list[CheckpointInfo]
    prompt_spec: str
    scorer_spec: str
    trigger: str | None
    class_word: str | None
    reference_dir: Path
    scorer: Any  # None outside the main process
    reference_vectors: Any
    pipeline: Any
    settings: RenderSettings
    options: EvalOptions
    prompts: list[Prompt]
    plan: list[Batch]
    all_keys: list[str]
    done: set[str]
    summary: str
    pending: list[Batch] = field(default_factory=list)  # batches with a render missing (the runner's)


def prepare(run: RunDir, store: Store, procs: Processes, reporter: RenderProgress, options: EvalOptions, *,
             base, prompts, scorer, reference, trigger, class_word, device, dtype,
             toy_by_default=False) -> Job:  # fmt: skip
    """Check every input, load the models, and plan: everything that can fail fails here,
    before the first render. The runner works out which batches are pending. ``toy_by_default``:
    no base was given nor named by the run, so ``base`` is the toy world by default."""
    infos = find_checkpoints(run, store, reporter.warn)
    if toy_by_default:
        refuse_real_loras_on_the_toy(infos, run)
    dataset = dataset_path(run)
    sources = {
        "trigger": trigger,
        "class_word": class_word,
        "metadata": [(info.label, info.metadata) for info in reversed(infos)],
        "embeddings": [(info.label, info.embeddings) for info in reversed(infos)],
        "dataset": dataset,
    }
    named = resolve_concept(**sources, defaults=(None, None))
    spec = prompts if prompts is not None else _default_prompts(base)
    prompt_set = load_prompt_set(resolve_prompt_spec(spec, named.class_word))
    concept = resolve_concept(**sources, defaults=(prompt_set.trigger, prompt_set.class_word))
    plan_prompts = prompt_set.expand(concept.trigger, concept.class_word)
    reference_dir = Path(reference).expanduser() if reference is not None else dataset
    if reference_dir is None:
        raise EvaluationError(
            f"no reference images for fidelity: {run.root} is not a lorasel run with a dataset",
            hint="pass --reference DIR with the training images",
        )
    references = reference_images(reference_dir)
    if isinstance(base, str):  # a mistyped base fails now, not after the scorer's download
        check_base_spec(base)
    score_model = reference_vectors = None
    if procs.is_main:  # scoring happens on the main process only
        score_model = _load_scorer(scorer, device or procs.device)
        if isinstance(scorer, str) and (caveat := scorer_caveat(scorer)):
            reporter.warn(caveat)
        reference_vectors = reference_embeddings(score_model, store, references)
    pipeline = _load_base(base, device or procs.device, dtype)
    refuse_a_base_that_fits_none(infos, pipeline, base_spec(base))
    default_steps, default_guidance = _render_defaults(base)
    fingerprint, legacy_fingerprint = pipeline_fingerprints(pipeline)
    clip_skip, clip_skip_source = resolve_clip_skip(options.clip_skip, infos, pipeline, reporter.warn)
    prediction, prediction_source = resolve_prediction(options.prediction, infos, pipeline, reporter.warn)
    settings = make_settings(
        pipeline,
        base=base_spec(base),
        steps=options.steps or default_steps,
        guidance=default_guidance if options.guidance is None else options.guidance,
        size=options.size,
        negative=prompt_set.negative,
        fingerprint=fingerprint,
        clip_skip=clip_skip,
        prediction=prediction,
        cfg_rescale=options.cfg_rescale,
    )
    legacy = replace(settings, base_fingerprint=legacy_fingerprint)
    if legacy.key() != settings.key():  # renders cached before the fingerprint left bookkeeping out
        store.rekey(legacy.key(), settings.key(), render_key)
    plan = build_plan(
        [Candidate(info.checkpoint, info.hash) for info in infos],
        options.strengths,
        plan_prompts,
        options.seeds,
        options.batch_size,
        settings.key(),
    )
    all_keys = list(dict.fromkeys(k for batch in plan for k in batch.keys))
    done = store.done(all_keys)
    summary = (
        f"{counted(len(infos), 'checkpoint')} × {counted(len(options.strengths), 'strength')} × "
        f"{counted(len(plan_prompts), 'prompt')} × {counted(options.seeds, 'seed')}; trigger {concept.trigger!r}, class {concept.class_word!r} ({concept.source})"
    )
    if clip_skip > 1:
        summary += f"; clip skip {clip_skip} ({clip_skip_source})"
    if options.cfg_rescale:
        summary += f"; CFG rescale {options.cfg_rescale:g}"
    if prediction != "epsilon":
        summary += f"; {PREDICTION_WORDS.get(prediction, prediction + '-prediction')} ({prediction_source})"
    scorer_spec = scorer if isinstance(scorer, str) else getattr(score_model, "name", "")
    return Job(
        infos=infos, prompt_spec=prompt_set.spec, scorer_spec=scorer_spec, trigger=concept.trigger,
        class_word=concept.class_word, reference_dir=reference_dir, scorer=score_model,
        reference_vectors=reference_vectors, pipeline=pipeline, settings=settings, options=options, plan=plan,
        prompts=list(plan_prompts), all_keys=all_keys, done=done, summary=summary,
    )  # fmt: skip


def _their_family(infos) -> str | None:
    """The family (sd1 | sd2 | sdxl) of the checkpoints when every one's keys and shapes say
    one (the most common), else None: then some may fit any base, the toy world's included."""
    families = Counter(info.family for info in infos if info.family in FAMILY_LABELS)
    if not infos or families.total() < len(infos):
        return None
    return families.most_common(1)[0][0]


def refuse_real_loras_on_the_toy(infos, run: RunDir) -> None:
    """``EvaluationError`` when every checkpoint's keys and shapes say it is for SD 1.x, 2.x or
    SDXL: the toy world, the base when none is given, cannot render them. Said before the
    prompts, references and renders that would otherwise fail one by one first."""
    family = _their_family(infos)
    if family is None:
        return
    trained_on = _trained_on(infos)
    raise EvaluationError(
        f"the checkpoints in {run.checkpoints} are {FAMILY_LABELS[family]} LoRAs, and with no --base (nor a "
        "lorasel run.toml naming one) the base is the toy world, which cannot render them",
        hint="pass --base with the model they were trained on, a .safetensors file, a diffusers folder or a "
        f"hub id{trained_on}",
    )


def refuse_a_base_that_fits_none(infos, pipeline, spec: str) -> None:
    """``EvaluationError`` when every checkpoint's keys and shapes say it is for another family
    than the base's (SDXL LoRAs on an SD 1.5 base): said before any render, not after
    the base renders and a "does not fit" per checkpoint."""
    from lorasel.models import base_family

    base = base_family(pipeline)
    family = _their_family(infos)
    if family is None or base in (family, "unknown"):
        return
    base_name = "the toy world" if base == "toy" else FAMILY_LABELS.get(base, base)
    raise EvaluationError(
        f"the checkpoints are {FAMILY_LABELS[family]} LoRAs and the base model {spec} is {base_name}: "
        "none of them fits it",
        hint=f"pass --base with the {FAMILY_LABELS[family]} model they were trained on{_trained_on(infos)}",
    )


def _trained_on(infos) -> str:
    """`` (their metadata names X)`` for the base most of ``infos`` name (kohya's
    ``ss_sd_model_name``, a file name or a path), else ``""``."""
    from lorasel.checkpoints.metadata import clean_text

    names = (clean_text(str(info.metadata.get("ss_sd_model_name") or ""), 120) for info in infos)
    named = Counter(base for name in names if (base := name.replace("\\", "/").split("/")[-1]))
    return f" (their metadata names {named.most_common(1)[0][0]})" if named else ""


def stated_clip_skip(metadata: dict[str, str]) -> int | None:
    """The clip skip a checkpoint says it was trained with: kohya's ``ss_clip_skip``, else
    Stability's ``modelspec.encoder_layer`` (kohya writes both)."""
    for key in ("ss_clip_skip", "modelspec.encoder_layer"):
        try:
            value = int(str(metadata.get(key, "")).strip())
        except ValueError:
            continue
        if value >= 1:
            return value
    return None


def resolve_clip_skip(given: int | None, infos, pipeline, warn) -> tuple[int, str]:
    """The clip skip to render with, and where it came from: ``given``, else what the
    checkpoints were trained with (the most common, with a warning when they differ), else 1.
    SD 1.x/2.x only: SDXL conditions on its encoders' penultimate layers already, and kohya's
    SDXL scripts ignore clip skip, so an SDXL checkpoint's ``ss_clip_skip`` is ignored too."""
    from lorasel.models.text import clip_skip_fault

    sdxl = getattr(pipeline, "text_encoder_2", None) is not None
    layers = pipeline.text_encoder.config.num_hidden_layers
    if given is not None:
        if fault := clip_skip_fault(given, pipeline):
            raise EvaluationError(f"--clip-skip {fault[0]}", hint=fault[1])
        return given, "option"
    stated = Counter(n for info in infos if (n := stated_clip_skip(info.metadata)) and n <= layers)
    if sdxl or not stated:
        return 1, ""
    value = max(stated, key=lambda n: (stated[n], -n))
    if len(stated) > 1:
        counts = ", ".join(f"{n} ({stated[n]})" for n in sorted(stated))
        warn(f"the checkpoints were trained with different clip skips: {counts}; all are rendered at {value}")
    return value, "metadata"


def resolve_prediction(given: str | None, infos, pipeline, warn) -> tuple[str, str]:
    """What the UNet predicts in the renders (``epsilon``, ``v``, ``v-ztsnr``) and where that
    came from: ``given`` ("option"); else the checkpoints' statement (the most common; kohya's
    ``modelspec.prediction_type`` and ``ss_zero_terminal_snr``, the ``v_pred`` / ``ztsnr``
    markers) where it says more than the base does, "metadata"; else the base's scheduler, "base".

    Only a statement of v overrides the base, with a warning: a LoRA trained with v-prediction
    was trained on a v-prediction base, and v-prediction merges often lose the markers that
    would say so; some trainers write "epsilon" whatever they trained, so that one only warns."""
    from lorasel.models.base import scheduler_prediction

    base = scheduler_prediction(pipeline.scheduler)
    if given is not None:
        return given, "option"
    order = PREDICTIONS.index  # ε < v < v-ztsnr: each says more than the one before
    stated = Counter(p for info in infos if (p := getattr(info, "prediction", None)) in PREDICTIONS)
    if not stated or base not in PREDICTIONS:
        return base, "base"
    value = max(stated, key=lambda p: (stated[p], order(p)))
    if "epsilon" in stated and len(stated) > 1:
        counts = ", ".join(f"{p} ({stated[p]})" for p in sorted(stated, key=order))
        warn(f"the checkpoints say they were trained for different prediction types: {counts}")
    if order(value) > order(base):
        warn(
            f"the checkpoints say they were trained for {PREDICTION_WORDS[value]}, and the base predicts "
            f"{PREDICTION_WORDS[base]}: rendering with {PREDICTION_WORDS[value]} "
            f"(--prediction {base} renders as the base says)"
        )
        return value, "metadata"
    if value == "epsilon" and base != "epsilon":
        warn(
            f"the checkpoints say they were trained for {PREDICTION_WORDS[value]}, but the base predicts "
            f"{PREDICTION_WORDS[base]}: rendering as the base predicts (--prediction epsilon renders as "
            "the checkpoints say)"
        )
    return base, "base"


def _load_scorer(spec: str | Any, device):
    if not isinstance(spec, str):
        return spec
    from lorasel import models

    return models.load_scorer(spec, device=device)


def _load_base(spec: str | Any, device, dtype):
    if not isinstance(spec, str):
        return spec
    from lorasel import models

    return models.load_base(spec, device=device, dtype=dtype)
