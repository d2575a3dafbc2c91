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
