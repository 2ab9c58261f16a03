"""CLIP scorers: embed images and texts, L2-normalised, with open_clip."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from lorasel.errors import ModelLoadError
from lorasel.models.devices import default_device


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
    if weights.suffix.lower() in (".pt", ".pth", ".bin", ".ckpt"):
        raise ModelLoadError(
            f"{pretrained} is a pickle file; lorasel never loads pickle", hint="use .safetensors"
        )
    try:
        if weights.is_file():
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(weights))
            name = f"{model_name}:file-{_file_digest(weights)}"
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
            name = spec
    except Exception as exc:
        raise ModelLoadError(
            f"could not load scorer {spec!r}: {exc}",
            hint="without network, pass local weights as MODEL:/path/to/weights.safetensors",
        ) from exc
    return Scorer(model, preprocess, open_clip.get_tokenizer(model_name), name=name, device=dev)
