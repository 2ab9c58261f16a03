"""The four measurements on synthetic embeddings with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from lorasel.evaluate import metrics


def _basis(n: int, d: int) -> np.ndarray:
    return np.eye(d)[:n]


def test_vendi_of_identical_vectors_is_one():
    x = np.tile(np.array([[0.3, -1.2, 2.0, 0.5]]), (6, 1))
    assert metrics.vendi_score(x) == pytest.approx(1.0, abs=1e-9)


def test_vendi_of_orthogonal_vectors_is_n():
    assert metrics.vendi_score(_basis(5, 8) * 3.0) == pytest.approx(5.0, abs=1e-9)


def test_vendi_of_two_orthogonal_clusters_is_two():
    x = np.concatenate([np.tile(_basis(1, 4), (3, 1)), np.tile(_basis(2, 4)[1:], (3, 1))])
    assert metrics.vendi_score(x) == pytest.approx(2.0, abs=1e-9)


def test_vendi_matches_exponentiated_entropy_of_equal_weighted_clusters():
    # k orthogonal clusters with sizes n_i: eigenvalues of K/n are n_i/n, so Vendi = exp(H(n_i/n)).
    sizes = [1, 2, 5]
    x = np.concatenate([np.tile(_basis(3, 3)[i : i + 1], (s, 1)) for i, s in enumerate(sizes)])
    p = np.array(sizes) / sum(sizes)
    assert metrics.vendi_score(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)


def test_fidelity_is_mean_cosine_to_references():
    refs = _basis(2, 3)  # e1, e2
    gen = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0], [1.0, 1.0, 0.0]])
    expected = [0.5, 0.0, (1 / np.sqrt(2) + 1 / np.sqrt(2)) / 2]
    np.testing.assert_allclose(metrics.fidelity(gen, refs), expected, atol=1e-12)


def test_centroid_distance():
    gen = np.tile(_basis(1, 3), (4, 1))  # all e1
    ref = np.tile(_basis(2, 3)[1:], (3, 1)) * 7  # all e2, unnormalised
    assert metrics.centroid_distance(gen, ref) == pytest.approx(2.0)
    assert metrics.centroid_distance(gen, gen * 3) == pytest.approx(0.0)


def test_flexibility_and_preservation_are_paired_cosines():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = np.array([[3.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    expected = [1.0, -1.0, 1 / np.sqrt(2)]
    np.testing.assert_allclose(metrics.flexibility(a, b), expected, atol=1e-12)
    np.testing.assert_allclose(metrics.preservation(a, b), expected, atol=1e-12)


def test_metrics_agree_with_sklearn_cosine():
    from sklearn.metrics.pairwise import cosine_similarity

    rng = np.random.default_rng(0)
    gen, ref = rng.normal(size=(5, 7)), rng.normal(size=(4, 7))
    np.testing.assert_allclose(
        metrics.fidelity(gen, ref), cosine_similarity(gen, ref).mean(axis=1), atol=1e-12
    )
    np.testing.assert_allclose(
        metrics.paired_cosine(gen, ref[:1].repeat(5, 0)), cosine_similarity(gen, ref[:1])[:, 0]
    )
