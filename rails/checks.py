"""The checks behind the rails, as plain functions: YARA, the prompt-attack classifier, the
political-opinion matcher and the citation check.

``rails/actions.py`` wraps each in a NeMo action. Anything slow to build (compiled YARA rules, the
classifier, embeddings of example utterances) is built once per process and kept here, in a module
imported the ordinary way, because NeMo re-executes ``actions.py`` for every ``LLMRails``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rails.prompt_attack import PromptAttackModel, split_windows

if TYPE_CHECKING:
    import yara

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))


@dataclass(frozen=True)
class Finding:
    """What one check found: whether to block, a short reason and a score where there is one."""

    blocked: bool
    detail: str
    score: float | None = None


def normalise(text: str) -> str:
    """NFKC-normalised text without zero-width characters (full-width and hidden-space evasions)."""
    return unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)


# --- YARA ---------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def compiled_rules(path: str) -> yara.Rules:
    """YARA rules compiled from ``path``, once per process and file."""
    import yara

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing: the YARA rail needs its rule file")
    return yara.compile(filepath=path)


def yara_matches(text: str, rules_path: Path) -> list[str]:
    """Names of the rules in ``rules_path`` that match ``text`` or its normalised form."""
    rules = compiled_rules(str(rules_path))
    names = [match.rule for match in rules.match(data=text.encode("utf-8", "surrogatepass"))]
    cleaned = normalise(text)
    if cleaned != text:
        names += [m.rule for m in rules.match(data=cleaned.encode("utf-8", "surrogatepass")) if m.rule not in names]
    return names


def check_yara(text: str, rules_path: Path) -> Finding:
    """Block when any rule matches; the detail names the matching rules."""
    names = yara_matches(text, rules_path)
    if names:
        return Finding(True, "matched " + ", ".join(names))
    return Finding(False, "no rule matched")


# --- embeddings ---------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def window_embedding(window: str) -> np.ndarray:
    """MiniLM embedding of one window; the input rails of a turn share the prompt's first window."""
    from agent.embeddings import default_embeddings

    return default_embeddings().encode([window])[0]


@lru_cache(maxsize=8)
def example_embeddings(examples: tuple[str, ...]) -> np.ndarray:
    """MiniLM embeddings of a fixed list of example utterances, computed once."""
    from agent.embeddings import default_embeddings

    return default_embeddings().encode(list(examples))


# --- prompt-attack classifier -------------------------------------------------------------------


@lru_cache(maxsize=4)
def classifier(models_dir: str) -> PromptAttackModel:
    """The trained classifier in ``models_dir``, loaded once."""
    return PromptAttackModel.load(Path(models_dir))


def check_prompt_attack(text: str, models_dir: Path, threshold: float | None = None) -> Finding:
    """Score the windows of ``text``; block when one reaches the threshold.

    The first window is scored alone and the rest only when it does not block: the decision is
    that of the maximum over all windows, without embedding the rest of a long attack.
    """
    from agent.embeddings import default_embeddings

    model = classifier(str(models_dir))
    limit = model.threshold if threshold is None else threshold
    windows = split_windows(text)
    scores = model.window_scores(window_embedding(windows[0])[None, :])
    if scores[0] < limit and len(windows) > 1:
        scores = np.concatenate([scores, model.window_scores(default_embeddings().encode(windows[1:]))])
    best = int(np.argmax(scores))
    score = float(scores[best])
    where = f" (window {best + 1} of {len(windows)})" if len(windows) > 1 else ""
    relation = ">=" if score >= limit else "<"
    return Finding(score >= limit, f"score {score:.2f} {relation} {limit:.2f}{where}", score)


# --- political opinions -------------------------------------------------------------------------


def check_political_opinion(
    text: str,
    opinion_examples: Sequence[str],
    factual_examples: Sequence[str],
    min_similarity: float,
    margin: float,
) -> Finding:
    """Nearest-example test on MiniLM embeddings of the prompt (its first window).

    Blocks when the prompt is at least ``min_similarity`` (cosine) from some request for a political
    opinion and closer to it, by ``margin``, than to any factual question.
    """
    if not opinion_examples:
        return Finding(False, "no opinion examples configured")
    prompt = window_embedding(split_windows(text)[0])
    opinion = example_embeddings(tuple(opinion_examples)) @ prompt
    factual = example_embeddings(tuple(factual_examples)) @ prompt if factual_examples else np.zeros(1)
    best = int(np.argmax(opinion))
    score, nearest_fact = float(opinion[best]), float(np.max(factual))
    blocked = score >= min_similarity and score - nearest_fact >= margin
    detail = f"similarity {score:.2f} to {opinion_examples[best]!r}, {nearest_fact:.2f} to a factual question"
    return Finding(blocked, detail, score)


# --- citations ----------------------------------------------------------------------------------

_CITATION = re.compile(r"\[(\d+(?:\s*[,\u2013-]\s*\d+)*)\]")
# Text between curly quotes is quoted from a source; brackets inside it are the source's, not citations.
_QUOTED = re.compile(r"\u201c[^\u201d]*\u201d")


def _numbers(group: str) -> list[int]:
    numbers: list[int] = []
    for part in re.split(r"\s*,\s*", group):
        bounds = [int(n) for n in re.split(r"\s*[\u2013-]\s*", part)]
        ranged = len(bounds) == 2 and bounds[0] <= bounds[1] <= bounds[0] + 50
        numbers += range(bounds[0], bounds[1] + 1) if ranged else bounds
    return numbers


def cited_numbers(answer: str) -> list[int]:
    """Every source number cited as ``[n]``, ``[n, m]`` or ``[n-m]``, in order, without repeats."""
    found: list[int] = []
    for group in _CITATION.findall(answer):
        found += [n for n in _numbers(group) if n not in found]
    return found


def check_citations(answer: str, sources: Sequence[str]) -> Finding:
    """Block a citation of a source outside ``1..len(sources)``; an answer citing nothing passes.

    A bracketed number that is no source but appears verbatim in a source's text (a footnote marker
    such as Wikipedia's ``[66]``, carried over in a quoted sentence) is not a citation.
    """
    count = len(sources)
    cited: list[int] = []
    copied: list[str] = []
    for match in _CITATION.finditer(_QUOTED.sub(" ", answer)):
        numbers = _numbers(match.group(1))
        if any(not 1 <= n <= count for n in numbers) and any(match.group(0) in source for source in sources):
            copied += [match.group(0)] if match.group(0) not in copied else []
            continue
        cited += [n for n in numbers if n not in cited]
    note = f"; {', '.join(copied)} copied from the sources" if copied else ""
    missing = [n for n in cited if not 1 <= n <= count]
    if missing:
        shown = ", ".join(f"[{n}]" for n in missing)
        available = f"only {count} sources" if count else "no sources"
        return Finding(True, f"cites {shown} but there are {available}")
    if not cited:
        if count:
            return Finding(False, f"cites none of the {count} sources{note}")
        return Finding(False, "no sources and no citations")
    shown = ", ".join(f"[{n}]" for n in cited)
    return Finding(False, f"cites {shown} of {count} sources{note}")
