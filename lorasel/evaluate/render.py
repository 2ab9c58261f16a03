"""Batched rendering with the one base pipeline: checkpoints merged in and out, not reloaded.

- The base pipeline is loaded once; a checkpoint is switched with ``apply``/``restore``.
- Text embeddings (``pipe.encode_prompt``) are computed once per prompt, one prompt at a time
  so they never depend on batch-mates, and reused for every checkpoint that leaves the text
  encoder alone; a checkpoint that touches it gets fresh ones per strength.
- Classifier-free guidance in one batch; one CPU ``torch.Generator`` per image, seeded from
  (prompt, seed index), so an image's noise never depends on its batch-mates or the device.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence

import torch

from lorasel.errors import CheckpointError, EvaluationError
from lorasel.evaluate.candidates import CheckpointInfo, checkpoint_api
from lorasel.evaluate.plan import Batch, RenderSettings
from lorasel.results import BASE

_SAMPLE = 64  # values per tensor sampled into the base fingerprint
PNG_COMPRESSION = 1  # zlib level: 3-5x faster than Pillow's default 6 on large renders, files ~10% larger


#: Config keys transformers writes as bookkeeping: its own version, the model's class names, and
#: the dtype the weights were saved in (the dtype rendered in is a setting of its own, and the
#: weights' dtype is fingerprinted with them). An upgrade of transformers or a ``save_pretrained``
#: changes them, never an image; with them in the fingerprint every cached render was lost.
BOOKKEEPING_KEYS = frozenset({"transformers_version", "architectures", "dtype", "torch_dtype"})


def pipeline_fingerprint(pipeline) -> str:
    """A cheap identity of a loaded base: component configs and a sample of every weight.

    Hashing all weights of a real base (GBs) would cost seconds per run; first and last
    values of every tensor catch a retrained or different base just as well in practice.
    """
    return pipeline_fingerprints(pipeline)[0]


def pipeline_fingerprints(pipeline) -> tuple[str, str]:
    """:func:`pipeline_fingerprint`, and the legacy one beside it, in one pass over the weights:
    as lorasel computed it before it left out :data:`BOOKKEEPING_KEYS` (to find the renders
    cached under it, :meth:`lorasel.evaluate.store.Store.rekey`)."""
    current, legacy = hashlib.sha256(), hashlib.sha256()
    for name in sorted(pipeline.components):
        component = pipeline.components[name]
        if component is None:
            continue
        config = getattr(component, "config", None)
        if config is not None:
            current.update(name.encode() + config_text(config).encode())
            legacy.update(name.encode() + config_text(config, legacy=True).encode())
        if isinstance(component, torch.nn.Module):
            for key, tensor in component.state_dict().items():
                flat = tensor.detach().reshape(-1)
                sample = torch.cat([flat[:_SAMPLE], flat[-_SAMPLE:]]).float().cpu().numpy().tobytes()
                head = f"{name}.{key}{tuple(tensor.shape)}{tensor.dtype}".encode()
                for digest in (current, legacy):
                    digest.update(head)
                    digest.update(sample)
    return current.hexdigest()[:32], legacy.hexdigest()[:32]


def config_text(config, *, legacy: bool = False) -> str:
    """A component's config as canonical JSON, without diffusers' private keys (they hold
    bookkeeping like ``_use_default_values``, a list in set order that changes between
    interpreters and would change every cache key with it) and, unless ``legacy``, without
    transformers' :data:`BOOKKEEPING_KEYS`."""
    items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    public = {
        k: v
        for k, v in items.items()
        if not str(k).startswith("_") and (legacy or str(k) not in BOOKKEEPING_KEYS)
    }
    return json.dumps(public, sort_keys=True, default=str)


def scheduler_text(scheduler) -> str:
    """A scheduler as the render settings name it: its class and its config."""
    return type(scheduler).__name__ + config_text(scheduler.config)


def scheduler_config(text: str) -> tuple[str, dict]:
    """(class name, config) of a scheduler as :func:`scheduler_text` named it."""
    name, brace, config = text.partition("{")
    return name, json.loads(brace + config)


def scheduler_from_text(text: str):
    """The scheduler :func:`scheduler_text` named."""
    import diffusers

    name, config = scheduler_config(text)
    cls = getattr(diffusers, name, None)
    if not isinstance(cls, type) or not issubclass(cls, diffusers.SchedulerMixin):
        raise EvaluationError(
            f"unknown scheduler {name!r} in the render settings", hint="rerun the evaluation"
        )
    return cls.from_config(config)


def default_size(pipeline) -> tuple[int, int]:
    """(width, height) the base was made for."""
    sample = pipeline.unet.config.sample_size
    h, w = (sample, sample) if isinstance(sample, int) else tuple(sample)
    return int(w * pipeline.vae_scale_factor), int(h * pipeline.vae_scale_factor)


def make_settings(
    pipeline,
    *,
    base: str,
    steps: int,
    guidance: float,
    size: tuple[int, int] | None,
    negative: str,
    fingerprint: str | None = None,
    clip_skip: int = 1,
    prediction: str | None = None,
    cfg_rescale: float = 0.0,
) -> RenderSettings:
    """The render settings for this pipeline; ``size`` defaults to the base's own, and
    ``fingerprint`` (:func:`pipeline_fingerprint`, when already computed) is computed if not given.
    ``prediction`` (``epsilon``, ``v``, ``v-ztsnr``): the scheduler's, when not the base's own
    (:func:`lorasel.models.base.with_prediction`); the :class:`Renderer` then renders with it."""
    width, height = size or default_size(pipeline)
    multiple = max(8, int(getattr(pipeline, "vae_scale_factor", 8)))
    if width % multiple or height % multiple:
        raise EvaluationError(
            f"size {width}x{height} is not a multiple of {multiple} for this base model",
            hint=f"use a width and height divisible by {multiple}, e.g. {default_size(pipeline)[0]}",
        )
    scheduler = pipeline.scheduler
    if prediction is not None:
        from lorasel.models.base import with_prediction

        scheduler = with_prediction(scheduler, prediction)
    return RenderSettings(
        base=base,
        base_fingerprint=fingerprint or pipeline_fingerprint(pipeline),
        scheduler=scheduler_text(scheduler),
        steps=int(steps),
        guidance=float(guidance),
        width=int(width),
        height=int(height),
        negative=negative,
        dtype=str(pipeline.unet.dtype).removeprefix("torch."),
        device_type=pipeline.device.type,
        clip_skip=int(clip_skip),
        cfg_rescale=float(cfg_rescale),
    )


class Renderer:
    """Renders batches of one plan with one pipeline, switching checkpoints in place."""

    def __init__(self, pipeline, settings: RenderSettings, checkpoints: Sequence[CheckpointInfo]) -> None:
        self.pipe = pipeline
        self.settings = settings
        self.infos = {info.checkpoint: info for info in checkpoints}
        self._current: tuple[str, float] | None = (BASE, 0.0)
        self._base_text: dict[str, dict[str, torch.Tensor]] = {}
        self._group_text: dict[str, dict[str, torch.Tensor]] = {}
        self._loaded: tuple[str, object] | None = None  # (checkpoint id, read checkpoint)
        self._sdxl = getattr(pipeline, "text_encoder_2", None) is not None
        # The settings name the scheduler (a base's own, or one told another prediction type):
        # the pipeline renders with it until close(), in every process that renders.
        self._base_scheduler = None
        if scheduler_text(pipeline.scheduler) != settings.scheduler:
            self._base_scheduler = pipeline.scheduler
            pipeline.scheduler = scheduler_from_text(settings.scheduler)

    # -- checkpoints -----------------------------------------------------------------------
    def switch(self, checkpoint: str, strength: float) -> None:
        """Make the pipeline the base model with ``checkpoint`` merged at ``strength``.
        A checkpoint that does not fit raises ``CheckpointError``; the base is restored then."""
        if self._current == (checkpoint, strength):
            return
        api = checkpoint_api()
        self._group_text = {}
        if checkpoint == BASE:
            if self._current is None or self._current[0] != BASE:
                api.restore(self.pipe)
            self._current = (BASE, 0.0)
            return
        if self._loaded is None or self._loaded[0] != checkpoint:
            self._loaded = None
            self._loaded = (checkpoint, api.read_checkpoint(self.infos[checkpoint].path))
        self._current = None  # unknown until apply returns
        try:
            api.apply(self.pipe, self._loaded[1], strength)
        except CheckpointError:
            api.restore(self.pipe)
            self._current = (BASE, 0.0)
            raise
        self._current = (checkpoint, strength)

    def close(self) -> None:
        """Leave the pipeline as the pristine base model, with its own scheduler."""
        if self._base_scheduler is not None:
            self.pipe.scheduler, self._base_scheduler = self._base_scheduler, None
        if self._current != (BASE, 0.0):
            checkpoint_api().restore(self.pipe)
            self._current = (BASE, 0.0)
        self._loaded = None

    # -- text ------------------------------------------------------------------------------
    def _text_cache(self) -> dict[str, dict[str, torch.Tensor]]:
        current = self._current
        touches = current is not None and current[0] != BASE and self.infos[current[0]].touches_text_encoder
        return self._group_text if touches else self._base_text

    @torch.no_grad()
    def _encode(self, prompt: str) -> dict[str, torch.Tensor]:
        cfg = self.settings.guidance > 1.0
        negative = self.settings.negative or None
        device = self.pipe.device
        if self._sdxl:
            pe, npe, ppe, nppe = self.pipe.encode_prompt(
                prompt=prompt, device=device, num_images_per_prompt=1,
                do_classifier_free_guidance=cfg, negative_prompt=negative,
            )  # fmt: skip
            out = {"prompt_embeds": pe, "pooled_prompt_embeds": ppe}
            if cfg:
                out.update(negative_prompt_embeds=npe, negative_pooled_prompt_embeds=nppe)
            return out
        if self.settings.clip_skip > 1:
            pe = self._clip_skipped(prompt)
            npe = self._clip_skipped(negative or "") if cfg else None
        else:
            pe, npe = self.pipe.encode_prompt(prompt, device, 1, cfg, negative_prompt=negative)
        return {"prompt_embeds": pe, "negative_prompt_embeds": npe} if cfg else {"prompt_embeds": pe}

    def _clip_skipped(self, text: str) -> torch.Tensor:
        """``text`` conditioned through the CLIP layer ``clip_skip`` from the end
        (:func:`lorasel.models.text.clip_skip_states`)."""
        from lorasel.models.text import clip_skip_states, token_ids

        encoder, tokenizer = self.pipe.text_encoder, self.pipe.tokenizer
        if hasattr(self.pipe, "maybe_convert_prompt"):  # a bundled embedding of several vectors
            text = self.pipe.maybe_convert_prompt(text, tokenizer)
        ids = token_ids(tokenizer, [text], self.pipe.device)
        return clip_skip_states(encoder, ids, self.settings.clip_skip).to(dtype=encoder.dtype)

    def text_embeddings(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Stacked embeddings for a batch, each prompt encoded once per text-encoder state."""
        cache = self._text_cache()
        for prompt in prompts:
            if prompt not in cache:
                cache[prompt] = self._encode(prompt)
        keys = cache[prompts[0]].keys()
        return {k: torch.cat([cache[p][k] for p in prompts]) for k in keys}

    # -- rendering -------------------------------------------------------------------------
    def render(self, batch: Batch) -> list:
        """The batch's images (PIL), in item order, with the batch's checkpoint merged."""
        self.switch(batch.checkpoint, batch.strength)
        embeds = self.text_embeddings([item.prompt.text for item in batch.items])
        generators = [torch.Generator("cpu").manual_seed(item.seed) for item in batch.items]
        s = self.settings
        out = self.pipe(
            **embeds,
            num_inference_steps=s.steps,
            guidance_scale=s.guidance,
            guidance_rescale=s.cfg_rescale,
            height=s.height,
            width=s.width,
            generator=generators,
            output_type="pil",
        )
        return list(out.images)


def png_bytes(image, parameters: str) -> bytes:
    """Lossless PNG with A1111-style ``parameters`` text, so a render says how it was made."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=PNG_COMPRESSION)
    return buffer.getvalue()


def parameters_text(settings: RenderSettings, prompt: str, seed: int, label: str, strength: float) -> str:
    lines = [prompt]
    if settings.negative:
        lines.append(f"Negative prompt: {settings.negative}")
    lora = "" if label == BASE else f", Lora: {label}:{strength:g}"
    skip = f", Clip skip: {settings.clip_skip}" if settings.clip_skip > 1 else ""
    rescale = f", CFG rescale: {settings.cfg_rescale:g}" if settings.cfg_rescale else ""
    lines.append(
        f"Steps: {settings.steps}, CFG scale: {settings.guidance:g}{rescale}, Seed: {seed}, "
        f"Size: {settings.width}x{settings.height}{skip}, Base: {settings.base}{lora}"
    )
    return "\n".join(lines)
