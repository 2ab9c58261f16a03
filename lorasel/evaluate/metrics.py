"""The five measurements, as pure functions over CLIP embeddings (float64 numpy).

Definitions follow the LyCORIS evaluation framework (REFERENCE.md §4):

- fidelity: mean cosine between a render and the reference (training) images; also the squared
  distance between the centroid of the renders and the centroid of the references;
- flexibility: cosine between a render and the text of its prompt with the trigger replaced by
  the class word (the raw cosine, not torchmetrics' 100·max(cos, 0)), on out-of-domain prompts;
- adherence: the same cosine on in-domain prompts (does the LoRA still draw the colour and
  background an in-domain prompt names, or only its training images?);
- diversity: the Vendi score of one prompt's renders over seeds, exp of the entropy of the
  eigenvalues of K/n, K the cosine-similarity matrix: 1 for identical images, n for orthogonal;
- preservation: cosine between a render and the base model's render of the same prompt and seed.
"""

from __future__ import annotations

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def fidelity(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per render: mean cosine to the reference images. [n, d], [m, d] → [n]."""
    return (normalize(generated) @ normalize(reference).T).mean(axis=1)


def centroid_distance(generated: np.ndarray, reference: np.ndarray) -> float:
    """‖μ_gen − μ_ref‖² of the normalised embeddings (lower is closer to the concept)."""
    diff = normalize(generated).mean(axis=0) - normalize(reference).mean(axis=0)
    return float(diff @ diff)


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two aligned [n, d] arrays → [n]."""
    return np.einsum("nd,nd->n", normalize(a), normalize(b))


def text_alignment(images: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Per render: cosine to its own prompt's text embedding (trigger → class word). → [n]

    Flexibility on out-of-domain prompts, adherence on in-domain ones."""
    return paired_cosine(images, texts)


flexibility = text_alignment  # the name REFERENCE.md §4 gives it


def preservation(renders: np.ndarray, base_renders: np.ndarray) -> np.ndarray:
    """Per render: cosine to the base model's render of the same prompt and seed. → [n]"""
    return paired_cosine(renders, base_renders)


def vendi_score(embeddings: np.ndarray) -> float:
    """Effective number of distinct images among ``n``: in [1, n] (Friedman & Dieng, 2023)."""
    x = normalize(embeddings)
    n = x.shape[0]
    if n == 0:
        return float("nan")
    eigenvalues = np.linalg.eigvalsh(x @ x.T / n)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    return float(np.exp(-np.sum(eigenvalues * np.log(eigenvalues))))
