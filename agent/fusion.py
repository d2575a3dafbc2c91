"""Reciprocal rank fusion: one ranking out of several (vector and keyword), shared by every chunk store."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)

# Cormack et al. (2009); it damps the weight of the very top ranks.
RRF_K = 60


def fuse_rankings(
    rankings: Sequence[Mapping[Key, int]], *, weights: Sequence[float] | None = None, k: int = RRF_K
) -> dict[Key, float]:
    """``sum(weight / (k + rank))`` per key over the rankings (rank 1 is best), highest first."""
    weights = weights or [1.0] * len(rankings)
    scores: dict[Key, float] = {}
    for ranks, weight in zip(rankings, weights, strict=True):
        for key, rank in ranks.items():
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    return dict(sorted(scores.items(), key=lambda item: item[1], reverse=True))


def fuse_scores(scorings: Sequence[Mapping[Key, float]], *, weights: Sequence[float] | None = None) -> dict[Key, float]:
    """Convex combination of min-max normalised scores (higher is better in each), highest first.

    Unlike RRF this keeps how far apart the candidates are on each side: a chunk that is by far the best
    BM25 match outweighs one that merely ranks first among near-equals. Weights are normalised to sum to 1;
    a key missing from one side scores 0 there (it was not even among that side's candidates).
    """
    weights = weights or [1.0] * len(scorings)
    total = sum(weights) or 1.0
    fused: dict[Key, float] = {}
    for scores, weight in zip(scorings, weights, strict=True):
        if not scores:
            continue
        low, high = min(scores.values()), max(scores.values())
        spread = high - low
        for key, score in scores.items():
            scaled = (score - low) / spread if spread > 0 else 1.0
            fused[key] = fused.get(key, 0.0) + weight / total * scaled
    return dict(sorted(fused.items(), key=lambda item: item[1], reverse=True))
