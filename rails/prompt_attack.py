"""The prompt-attack classifier: MiniLM sentence embeddings and a logistic-regression head.

MiniLM reads at most 256 word pieces, so a long prompt is cut into overlapping windows of about
that size (measured in characters, roughly four per English word piece) and the prompt scores the
highest probability of any window: an attack hidden at the end of a long document still counts.
``rails/train.py`` fits the head; this module only loads and applies it, with numpy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent / "models"
WEIGHTS_FILE = "prompt_attack.npz"
METADATA_FILE = "prompt_attack.json"

# About 250 MiniLM word pieces of English; windows overlap by a quarter.
WINDOW_CHARS = 1000
STRIDE_CHARS = 750

Encoder = Callable[[list[str]], np.ndarray]


def split_windows(text: str, size: int = WINDOW_CHARS, stride: int = STRIDE_CHARS) -> list[str]:
    """Overlapping windows of at most ``size`` characters, cut at whitespace where there is some.

    A text no longer than ``size`` is its own single window; an empty text gives ``[""]``.
    """
    text = text.strip()
    if len(text) <= size:
        return [text]
    windows: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + size // 2, end)
            end = cut if cut > start else end
        windows.append(text[start:end].strip())
        if end >= len(text):
            break
        next_start = end - (size - stride)
        # Start the next window on a word boundary, but always move forward.
        space = text.find(" ", next_start, end)
        start = max(space + 1 if space != -1 else next_start, start + 1)
    return [window for window in windows if window] or [text[:size]]


@dataclass(frozen=True)
class PromptAttackModel:
    """A trained head: ``P(attack | window) = sigmoid(embedding @ coef + intercept)``."""

    coef: np.ndarray
    intercept: float
    metadata: dict[str, Any]

    @classmethod
    def load(cls, models_dir: Path = MODELS_DIR) -> PromptAttackModel:
        """Read ``prompt_attack.npz`` and ``prompt_attack.json`` from ``models_dir``."""
        weights, meta = models_dir / WEIGHTS_FILE, models_dir / METADATA_FILE
        for path in (weights, meta):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run `python -m rails.train` to build the classifier")
        with np.load(weights) as data:
            coef = np.asarray(data["coef"], dtype=np.float32).reshape(-1)
            intercept = float(np.asarray(data["intercept"]).reshape(-1)[0])
        return cls(coef=coef, intercept=intercept, metadata=json.loads(meta.read_text(encoding="utf-8")))

    @property
    def threshold(self) -> float:
        """The decision threshold chosen at training time (``config.yml`` may override it)."""
        return float(self.metadata["threshold"])

    def window_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Attack probability of each row of an ``(n, 384)`` embedding matrix."""
        logits = embeddings.astype(np.float32) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    def score(self, text: str, encode: Encoder) -> tuple[float, int]:
        """The highest window score of ``text`` and the index of that window."""
        scores = self.window_scores(encode(split_windows(text)))
        best = int(np.argmax(scores))
        return float(scores[best]), best
