"""The prompt-attack classifier: features from every layer of MiniLM and logistic-regression heads.

There is one head per kind of attack (requests for harmful content; jailbreaks and prompt
injections), each fitted against the benign prompts. Each head's bias is shifted by the threshold
that cross-validation chose for it, so a window's score, ``sigmoid`` of the highest shifted logit,
reaches 0.5 exactly when some head reaches its own threshold.

MiniLM reads at most 256 word pieces, so a long prompt is cut into overlapping windows of about
that size (measured in characters, roughly four per English word piece) and the prompt scores the
highest score of any window: an attack hidden at the end of a long document still counts.
A prompt that matches a "benign look-alike" rule (``yara/benign_lookalike.yara``: questions about
staying safe, the computing sense of "kill") must reach a stricter threshold.
``rails/train.py`` fits the heads; this module only loads and applies them, with numpy.
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
"""Texts to their ``(n, 3072)`` feature rows, e.g. ``MiniLMEmbeddings.encode_features``."""


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
    """Trained heads: ``score(window) = sigmoid(max over heads of features @ coef[h] + intercept[h])``, where
    ``features`` is the window's ``agent.embeddings.pooled_features`` row."""

    coef: np.ndarray
    """``(heads, 3072)``"""
    intercept: np.ndarray
    """``(heads,)``, each head's threshold already subtracted."""
    metadata: dict[str, Any]

    @classmethod
    def load(cls, models_dir: Path = MODELS_DIR) -> PromptAttackModel:
        """Read ``prompt_attack.npz`` and ``prompt_attack.json`` from ``models_dir``."""
        weights, meta = models_dir / WEIGHTS_FILE, models_dir / METADATA_FILE
        for path in (weights, meta):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run `railgraph rails train` to build the classifier")
        with np.load(weights) as data:
            coef = np.atleast_2d(np.asarray(data["coef"], dtype=np.float32))
            intercept = np.asarray(data["intercept"], dtype=np.float32).reshape(-1)
        if coef.shape[0] != intercept.shape[0]:
            raise ValueError(f"{weights} has {coef.shape[0]} heads but {intercept.shape[0]} intercepts: retrain it")
        model = cls(coef=coef, intercept=intercept, metadata=json.loads(meta.read_text(encoding="utf-8")))
        rules = model.lookalike_rules(models_dir)
        if not rules.is_file():
            raise FileNotFoundError(f"{rules} is missing: {meta} names it as the benign look-alike rules")
        return model

    @property
    def threshold(self) -> float:
        """The decision threshold (0.5 by construction; ``config.yml`` may override it)."""
        return float(self.metadata["threshold"])

    @property
    def lookalike_threshold(self) -> float:
        """The stricter threshold for prompts that match a benign look-alike rule."""
        return float(self.metadata["lookalike"]["threshold"])

    def lookalike_rules(self, models_dir: Path) -> Path:
        """The benign look-alike YARA file, recorded relative to ``models_dir``."""
        return (models_dir / self.metadata["lookalike"]["rules"]).resolve()

    @property
    def prompt_heads(self) -> tuple[str, ...]:
        """The heads that judge a user's prompt (the others screen retrieved chunks)."""
        return tuple(name for name, head in self.metadata["heads"].items() if head["screens"] == "prompts")

    def window_scores(self, features: np.ndarray, heads: tuple[str, ...] | None = None) -> np.ndarray:
        """Score of each row of an ``(n, 3072)`` feature matrix: its most confident head of ``heads`` (by name; the
        prompt heads when not given, e.g. ``document_injection`` for retrieved chunks, which may discuss harm)."""
        rows = [self.head_index(name) for name in (self.prompt_heads if heads is None else heads)]
        if features.shape[1] != self.coef.shape[1]:
            raise ValueError(
                f"the classifier reads {self.coef.shape[1]} features per window, not {features.shape[1]}: "
                "retrain it with `railgraph rails train`"
            )
        logits = features.astype(np.float32) @ self.coef[rows].T + self.intercept[rows]
        return 1.0 / (1.0 + np.exp(-logits.max(axis=1).astype(np.float64)))

    def head_index(self, name: str) -> int:
        """The row of head ``name`` (``prompt_attack.json`` lists the heads in row order)."""
        names = list(self.metadata["heads"])
        if name not in names:
            raise ValueError(f"the prompt-attack classifier has no head {name!r}; it has {', '.join(names)}")
        return names.index(name)

    def score(self, text: str, encode: Encoder) -> tuple[float, int]:
        """The highest window score of ``text`` and the index of that window."""
        scores = self.window_scores(encode(split_windows(text)))
        best = int(np.argmax(scores))
        return float(scores[best]), best
