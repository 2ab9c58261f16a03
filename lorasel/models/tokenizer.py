"""A CLIP tokenizer built from open_clip's bundled BPE vocabulary, offline.

This is the same vocabulary as Stable Diffusion's tokenizer, so any trigger word
tokenizes in the toy world exactly as it would in real SD.
"""

from __future__ import annotations

import gzip
from functools import lru_cache

N_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48894 merges of the BPE file.


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer(model_max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """A ``transformers.CLIPTokenizer`` with CLIP's 49408-token vocabulary.

    ``pad_token``: SD1.x and SDXL's first tokenizer pad with ``<|endoftext|>``, SDXL's
    second (OpenCLIP ViT-bigG's) with ``!``."""
    from transformers import CLIPTokenizer

    vocab, merges = _vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length, pad_token=pad_token
    )


VOCAB_SIZE = 49408
