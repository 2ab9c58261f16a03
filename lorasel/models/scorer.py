"""CLIP scorers: embed images and texts, L2-normalised, with open_clip."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from lorasel.errors import ModelLoadError, first_line
from lorasel.models.devices import default_device
from lorasel.models.logs import libraries_quiet

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


class Scorer:
    """An open_clip model with its preprocessing and tokenizer.

    ``name`` identifies the model and weights, so cached embeddings are keyed by it.
    """

    def __init__(self, model, preprocess, tokenizer, name: str, device: torch.device, batch_size: int = 64):
        self.model = model.eval().to(device)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return int(self.embed_texts(["a"]).shape[1])

    @torch.inference_mode()
    def embed_images(self, images: Sequence) -> torch.Tensor:
        """[n, d] float32 on CPU, each row of unit length."""
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = torch.stack(
                [self.preprocess(im.convert("RGB")) for im in images[i : i + self.batch_size]]
            )
            feats = self.model.encode_image(batch.to(self.device))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """[n, d] float32 on CPU, each row of unit length."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size])).to(self.device)
            feats = self.model.encode_text(tokens)
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def load_scorer(spec: str = "toy", *, device=None) -> Scorer:
    """``toy`` | ``MODEL:PRETRAINED`` (open_clip) | ``MODEL:/path/to/weights.safetensors``."""
    dev = default_device(device)
    if spec == "toy":
        from lorasel.toyworld.scorer import load_toy_scorer

        return load_toy_scorer(device=dev)
    import open_clip

    model_name, sep, pretrained = spec.partition(":")
    if not sep or not model_name or not pretrained:
        raise ModelLoadError(
            f"unknown scorer {spec!r}",
            hint="use 'toy' or MODEL:PRETRAINED, e.g. ViT-L-14:datacomp_xl_s13b_b90k",
        )
    if model_name not in open_clip.list_models():
        raise ModelLoadError(
            f"unknown open_clip model {model_name!r} in scorer {spec!r}",
            hint="see open_clip.list_models(), e.g. ViT-L-14",
        )
    weights = Path(pretrained).expanduser()
    if _is_path(pretrained, weights):
        file, cfg, name = _local_weights(spec, weights), {}, None
    else:  # a pretrained tag: the hub's weights, the tag's preprocessing and activation
        cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        file, name = _hub_weights(open_clip, spec, model_name, pretrained, cfg), spec
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=str(file),
            force_quick_gelu=bool(cfg.get("quick_gelu", False)),
            image_mean=cfg.get("mean"),
            image_std=cfg.get("std"),
            image_interpolation=cfg.get("interpolation"),
            image_resize_mode=cfg.get("resize_mode"),
        )
    except Exception as exc:
        raise ModelLoadError(
            f"could not load scorer {spec!r} from {file}: {first_line(exc)}",
            hint=f"the weights must be open_clip's {model_name} in safetensors",
        ) from exc
    name = name or f"{model_name}:file-{_file_digest(file)}"
    return Scorer(model, preprocess, open_clip.get_tokenizer(model_name), name=name, device=dev)


def scorer_caveat(spec: str) -> str | None:
    """A warning for a scorer spec that loads but would score wrongly: OpenAI's CLIP weights
    (a path naming ``openai``, as open_clip's copies in the Hugging Face cache are named) were
    trained with QuickGELU, which open_clip gives a local file only under a ``-quickgelu`` model
    name; with plain GELU every embedding is off, silently."""
    model_name, sep, pretrained = spec.partition(":")
    if not sep or "quickgelu" in model_name.lower() or "openai" not in pretrained.lower():
        return None
    if not _is_path(pretrained, Path(pretrained).expanduser()):
        return None  # a tag: open_clip's pretrained config sets QuickGELU itself
    return (
        f"scorer {spec!r} looks like OpenAI's CLIP weights, which need QuickGELU: "
        f"use {model_name}-quickgelu:{pretrained} unless they are not OpenAI's"
    )


def _is_path(pretrained: str, weights: Path) -> bool:
    """A file rather than a pretrained tag (tags have no path characters or weight suffixes)."""
    return (
        weights.is_file()
        or any(c in pretrained for c in "/\\~")
        or weights.suffix.lower() in (".safetensors", *PICKLE_SUFFIXES)
    )


def _local_weights(spec: str, weights: Path) -> Path:
    """A local weights file, safetensors only."""
    if weights.suffix.lower() != ".safetensors":
        kind = "a pickle file" if weights.suffix.lower() in PICKLE_SUFFIXES else "not a .safetensors file"
        raise ModelLoadError(
            f"scorer weights {weights} are {kind}; lorasel loads safetensors only, never pickle",
            hint="convert them to .safetensors (safetensors.torch.save_file of the state dict)",
        )
    if not weights.is_file():
        raise ModelLoadError(f"scorer weights {weights} not found (in {spec!r})", hint="check the path")
    return weights


def _hub_weights(open_clip, spec: str, model_name: str, tag: str, cfg: dict) -> Path:
    """open_clip's weights for a pretrained tag (``cfg``: its pretrained config): the tag's
    safetensors file on the Hugging Face Hub, from the local cache if it is there. Only that file
    is asked for: the pickle open_clip's own download falls back to would be refused after a
    download of up to gigabytes, and offline, asking for both doubles the hub client's retries."""
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)[:6]) or "none"
        raise ModelLoadError(
            f"open_clip has no pretrained weights {tag!r} for {model_name} (in scorer {spec!r})",
            hint=f"its tags: {tags}; or MODEL:/path/to/weights.safetensors",
        )
    location = _safetensors_on_hub(cfg)
    if location is None:
        raise ModelLoadError(
            f"open_clip's weights for scorer {spec!r} are not on the Hugging Face Hub",
            hint="download them as .safetensors and pass MODEL:/path/to/weights.safetensors",
        )
    repo, name = location
    cached = _cached(repo, name)
    if cached is not None:  # without asking the hub for a newer version (immutable weights)
        return cached
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        with libraries_quiet("huggingface_hub"):
            return Path(hf_hub_download(repo, name))
    except RemoteEntryNotFoundError as exc:
        raise ModelLoadError(
            f"the hub has no safetensors weights for scorer {spec!r} ({repo} has no {name}); "
            "lorasel never loads the pickle file open_clip falls back to",
            hint="convert them to .safetensors and pass MODEL:/path/to/weights.safetensors",
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"could not fetch scorer {spec!r} ({repo}/{name}): {first_line(exc)}",
            hint="without network, pass local weights as MODEL:/path/to/weights.safetensors",
        ) from exc


def _safetensors_on_hub(cfg: dict) -> tuple[str, str] | None:
    """(repo, file name) of a tag's safetensors weights on the hub, where open_clip looks:
    ``hf_hub`` is ``org/repo/`` (its default file) or ``org/repo/file``, and the safetensors twin
    of a ``.bin`` / ``.pth`` file is the one it prefers."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(cfg.get("hf_hub", ""))
    if not repo:
        return None
    if filename in ("", HF_WEIGHTS_NAME):
        return repo, HF_SAFE_WEIGHTS_NAME
    return repo, os.path.splitext(filename)[0] + ".safetensors"


def _cached(repo: str, name: str) -> Path | None:
    """The file if the Hugging Face cache already holds it, else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, name)
    except ValueError:  # not a repo id or file name the hub could hold
        return None
    return Path(found) if isinstance(found, str) else None
