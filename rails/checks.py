"""The checks behind the rails, as plain functions: YARA, the prompt-attack classifier, the
political-opinion matcher and the citation and grounding check.

``rails/actions.py`` wraps each in a NeMo action. Anything slow to build (compiled YARA rules, the
classifier, embeddings of example utterances) is built once per process and kept here, in a module
imported the ordinary way, because NeMo re-executes ``actions.py`` for every ``LLMRails``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    spans: tuple[str, ...] = ()
    """Parts of the checked text the check cannot vouch for (exact substrings); non-empty means "flag"."""
    label: str | None = None
    """For the topic checks: the topic (or canned response) the text matched."""


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
def window_features(window: str) -> np.ndarray:
    """MiniLM features of one window (``agent.embeddings.pooled_features``); the input rails of a turn share the
    prompt's first window."""
    from agent.embeddings import default_embeddings

    return default_embeddings().encode_features([window])[0]


def window_embedding(window: str) -> np.ndarray:
    """MiniLM sentence embedding of one window (part of its ``window_features``)."""
    from agent.embeddings import SENTENCE_COLUMNS

    return window_features(window)[SENTENCE_COLUMNS]


@lru_cache(maxsize=8)
def example_embeddings(examples: tuple[str, ...]) -> np.ndarray:
    """MiniLM embeddings of a fixed list of example utterances, computed once, by the same int8 model as the
    prompt's (``window_embedding``)."""
    from agent.embeddings import SENTENCE_COLUMNS, default_embeddings

    return default_embeddings().encode_features(list(examples))[:, SENTENCE_COLUMNS]


# --- prompt-attack classifier -------------------------------------------------------------------


@lru_cache(maxsize=4)
def classifier(models_dir: str) -> PromptAttackModel:
    """The trained classifier in ``models_dir``, loaded once."""
    return PromptAttackModel.load(Path(models_dir))


def check_prompt_attack(text: str, models_dir: Path, threshold: float | None = None) -> Finding:
    """Score the windows of ``text``; block when one reaches the threshold.

    The first window is scored alone and the rest only when it does not block: the decision is
    that of the maximum over all windows, without embedding the rest of a long attack. A prompt
    that matches a benign look-alike rule must reach the model's stricter look-alike threshold.
    """
    from agent.embeddings import default_embeddings

    model = classifier(str(models_dir))
    limit = model.threshold if threshold is None else threshold
    lookalike = yara_matches(text, model.lookalike_rules(models_dir))
    if lookalike:
        limit = max(limit, model.lookalike_threshold)
    windows = split_windows(text)
    scores = model.window_scores(window_features(windows[0])[None, :])
    if scores[0] < limit and len(windows) > 1:
        scores = np.concatenate([scores, model.window_scores(default_embeddings().encode_features(windows[1:]))])
    best = int(np.argmax(scores))
    score = float(scores[best])
    where = f" (window {best + 1} of {len(windows)})" if len(windows) > 1 else ""
    relation = ">=" if score >= limit else "<"
    why = f" (look-alike: {', '.join(lookalike)})" if lookalike else ""
    return Finding(score >= limit, f"score {score:.2f} {relation} {limit:g}{where}{why}", score)


def chunk_injection_settings(custom_data: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    """Keyword arguments of ``check_chunk_injection`` from config.yml's ``custom_data``: the YARA rules and the
    classifier of the input rails, with the heads and threshold under ``retrieval_injection``."""
    settings = custom_data.get("retrieval_injection") or {}
    rules = (custom_data.get("yara_prompt_injection") or {}).get("rules", "yara/prompt_injection.yara")
    models = (custom_data.get("prompt_attack") or {}).get("model_dir", "models")
    return {
        "rules_path": config_dir / rules,
        "models_dir": config_dir / models,
        "threshold": float(settings.get("threshold", 0.7)),
        "heads": tuple(settings.get("heads") or ("document_injection",)),
    }


def check_chunk_injection(
    texts: Sequence[str], rules_path: Path, models_dir: Path, threshold: float, heads: tuple[str, ...]
) -> list[Finding]:
    """Indirect prompt injection in retrieved chunks: the prompt-injection YARA rules, then the classifier's
    ``heads`` on every window of every chunk, embedded in one batch. A chunk is blocked (withheld) when a rule
    matches or a window reaches ``threshold``."""
    from agent.embeddings import default_embeddings

    model = classifier(str(models_dir))
    rules = [yara_matches(text, rules_path) for text in texts]
    windows = {i: split_windows(text) for i, text in enumerate(texts) if not rules[i]}
    flat = [window for each in windows.values() for window in each]
    scores = model.window_scores(default_embeddings().encode_features(flat), heads) if flat else np.zeros(0)
    findings: list[Finding] = []
    start = 0
    for i, matched in enumerate(rules):
        if matched:
            findings.append(Finding(True, "matched " + ", ".join(matched), 1.0))
            continue
        score = float(scores[start : start + len(windows[i])].max())
        start += len(windows[i])
        relation = ">=" if score >= threshold else "<"
        findings.append(Finding(score >= threshold, f"score {score:.2f} {relation} {threshold:.2f}", score))
    return findings


# --- topics: political opinions, off-limits topics, canned responses, hand-off -------------------


def check_topics(
    text: str,
    topics: Mapping[str, Sequence[str]],
    allowed: Sequence[str],
    *,
    min_similarity: float,
    margin: float,
) -> Finding:
    """Nearest-example test on MiniLM embeddings of the prompt (its first window).

    Matches (``blocked``, with the topic as ``label``) when the prompt is at least ``min_similarity`` (cosine) from
    some example of a topic and closer to it, by ``margin``, than to every ``allowed`` example (questions that look
    alike but must pass). The embeddings of the prompt and of the examples are cached, so the rails of one turn
    embed the prompt once.
    """
    examples = [(topic, example) for topic, listed in topics.items() for example in listed]
    if not examples:
        return Finding(False, "no examples configured")
    prompt = window_embedding(split_windows(text)[0])
    similarity = example_embeddings(tuple(example for _, example in examples)) @ prompt
    nearest_allowed = float(np.max(example_embeddings(tuple(allowed)) @ prompt)) if allowed else 0.0
    best = int(np.argmax(similarity))
    (topic, example), score = examples[best], float(similarity[best])
    matched = score >= min_similarity and score - nearest_allowed >= margin
    detail = f"similarity {score:.2f} to {example!r} ({topic}), {nearest_allowed:.2f} to an allowed example"
    return Finding(matched, detail, score, label=topic if matched else None)


# --- citations and grounding ----------------------------------------------------------------------

_CITATION = re.compile(r"\[(\d+(?:\s*[,\u2013-]\s*\d+)*)\]")
# Text between quotes is quoted from a source; brackets inside it are the source's, not citations.
# Straight quotes do not cross lines, so one stray '"' cannot swallow the rest of an answer.
_QUOTED = re.compile(r"\u201c[^\u201d]*\u201d|\"[^\"\n]*\"")
# Where one answer sentence ends: terminal punctuation (or a closing quote followed by a citation),
# any closing quotes and citations after it, then space before something that is not lower case; or
# a line break. The `gap` group is the space between two sentences; the citations are taken whole
# (possessive ``*+``) so that they stay with the sentence they follow.
_ANSWER_BREAK = re.compile(
    r"(?:[.!?][\"'\u201d\u2019)]*|\u201d(?=\s*\[\d))"
    r"(?:\s*\[\d+(?:\s*[,\u2013-]\s*\d+)*\])*+"
    r"(?P<gap>[ \t]+(?=[^a-z\s])|[ \t]*\n\s*)"
    r"|(?P<line>[ \t]*\n\s*)"
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that carry no claim: function words, and the way answers talk about their sources.
_FUNCTION_WORD_TEXT = (
    "a about above after again all also an and any are as at be because been before being both but by can "
    "could did do does doing during each few for from further had has have having he her here hers him his "
    "how i if in into is it its itself just me more most my no nor not now of off on once only or other our "
    "out over own same she should so some such than that the their theirs them then there these they this "
    "those through to too under until up very was we were what when where which while who whom whose why "
    "will with would you your according answer document documents passage quote quoted says source sources "
    "states stated text"
)
_FUNCTION_WORDS = frozenset(_FUNCTION_WORD_TEXT.split())
# Typography that differs between a source and a faithful quote of it (curly versus straight quotes).
_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_ELLIPSIS = re.compile(r"\s*(?:\.\.\.|\u2026)\s*")
# A number as written in prose: "1861", "3.3", "78,000", "1,000.5", "16th"; thousands separators are dropped
# before comparing, so "78,000" in an answer matches "78000" in a source.
_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?")
# Defaults for ``check_citations``; config.yml (custom_data.grounding) sets the ones in force.
MIN_OVERLAP = 0.5
MIN_SIMILARITY = 0.7


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


def answer_sentences(answer: str) -> list[str]:
    """The sentences of an answer, each with the citations that follow it, as exact substrings.

    Unlike prose splitting, a break inside a quoted span does not count (a quote is one claim) and
    ``“…” [n]`` ends a sentence even without a full stop, as extractive answers quote list items.
    """
    quotes = [match.span() for match in _QUOTED.finditer(answer)]
    sentences: list[str] = []
    start = 0
    for match in _ANSWER_BREAK.finditer(answer):
        gap = match.start("gap") if match.group("gap") is not None else match.start("line")
        if any(begin < gap < end for begin, end in quotes):
            continue
        sentences.append(answer[start:gap])
        start = match.end()
    sentences.append(answer[start:])
    return [sentence.strip() for sentence in sentences if sentence.strip()]


def _flat(text: str) -> str:
    """Text compared for verbatim quotes: NFKC, one space for any whitespace, straight quotes."""
    return " ".join(normalise(text).translate(_TYPOGRAPHY).split())


def _terms(text: str) -> set[str]:
    # A five-letter prefix is a cheap stemmer ("founded"/"founding", "caps"/"cap"), as in agent.extractive.
    return {word[:5] for word in _WORD.findall(normalise(text).lower()) if word not in _FUNCTION_WORDS}


def _numbers_in(text: str) -> set[str]:
    """The numbers written in ``text`` (thousands separators removed), as strings."""
    return {match.group(0).replace(",", "") for match in _NUMBER.finditer(normalise(text))}


def _misquotes(sentence: str, evidence: Sequence[str]) -> list[str]:
    """Quoted spans of ``sentence`` that appear verbatim in none of the ``evidence`` texts.

    Whitespace and quote typography are normalised, an ellipsis may skip text, and punctuation that
    closes the quote (``“… Bangor.”`` for a source's ``Bangor, Wales``) is not part of the claim.
    """
    flat_evidence = [_flat(text) for text in evidence]
    missing: list[str] = []
    for match in _QUOTED.finditer(sentence):
        inner = _flat(match.group(0)[1:-1]).strip(" .,;:!?")
        pieces = [piece for piece in _ELLIPSIS.split(inner) if _WORD.search(piece)]
        if pieces and not any(all(piece in text for piece in pieces) for text in flat_evidence):
            missing.append(inner)
    return missing


def _similarity(claim: str, evidence: Sequence[str]) -> float:
    """MiniLM cosine between ``claim`` and the closest sentence of the evidence texts."""
    from agent.embeddings import default_embeddings
    from agent.extractive import split_sentences

    sentences = list(dict.fromkeys(sentence for text in evidence for sentence in split_sentences(text)))
    sentences = sentences or [text for text in evidence if text.strip()]
    if not sentences:
        return 0.0
    vectors = default_embeddings().encode([claim, *sentences])
    return float(np.max(vectors[1:] @ vectors[0]))


@dataclass(frozen=True)
class _Support:
    sentence: str
    cited: list[int]
    misquoted: list[str]
    unsourced_numbers: list[str]
    overlap: float
    similarity: float | None

    @property
    def score(self) -> float:
        """How well the sources back the sentence: 0 for a misquote or a number they do not contain, else the
        better of the two measures."""
        return 0.0 if self.misquoted or self.unsourced_numbers else max(self.overlap, self.similarity or 0.0)

    def supported(self, min_overlap: float, min_similarity: float) -> bool:
        if self.misquoted or self.unsourced_numbers:
            return False
        return self.overlap >= min_overlap or (self.similarity or 0.0) >= min_similarity

    def reason(self) -> str:
        where = ", ".join(f"[{n}]" for n in self.cited) or "any source"
        if self.misquoted:
            return "quote not in " + where
        if self.unsourced_numbers:
            return f"{', '.join(self.unsourced_numbers)} not in {where}"
        return f"overlap {self.overlap:.2f}, similarity {self.similarity or 0.0:.2f} with {where}"


def _support(
    sentence: str, cited: list[int], sources: Sequence[str], min_overlap: float, min_similarity: float
) -> _Support | None:
    """How ``sentence`` is backed by the sources it cites (a quote: by any source); None when there is nothing
    to check: it cites and quotes nothing (a link phrase, a note of the model's own), or has no content words."""
    if not cited and not _QUOTED.search(sentence):
        return None
    evidence = [sources[n - 1] for n in cited] or list(sources)
    claim = " ".join(_CITATION.sub(" ", _QUOTED.sub(lambda m: m.group(0)[1:-1], sentence)).split())
    terms = _terms(claim)
    if not terms:
        return None
    misquoted = _misquotes(sentence, evidence)
    # Word overlap and embeddings both pass "founded in 1950 [1]" against a source saying 1902: a number is a
    # claim of its own, so every number in the sentence must be written in the evidence.
    sourced = set().union(*(_numbers_in(text) for text in evidence))
    unsourced = sorted(_numbers_in(claim) - sourced, key=float)
    found = set().union(*(_terms(text) for text in evidence))
    overlap = len(terms & found) / len(terms)
    # The embedding is the slow measure: only a sentence that fails the lexical one pays for it.
    checked = misquoted or unsourced or overlap >= min_overlap
    similarity = None if checked else _similarity(claim, evidence)
    return _Support(sentence, cited, misquoted, unsourced, overlap, similarity)


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def check_citations(
    answer: str,
    sources: Sequence[str],
    *,
    min_overlap: float = MIN_OVERLAP,
    min_similarity: float = MIN_SIMILARITY,
) -> Finding:
    """Check an answer's citations and that its sources back what it says.

    Blocks a citation of a source outside ``1..len(sources)``. A bracketed number that is no source but
    appears verbatim in a source's text (a footnote marker such as Wikipedia's ``[66]``, carried over in
    a quoted sentence) is not a citation.

    Every sentence that cites or quotes must be backed by the sources it cites (a quote without a
    citation: by any source): each quoted span verbatim in one of them, every number it states written in them
    too, and either ``min_overlap`` of its content words in them or a MiniLM cosine of ``min_similarity`` to one
    of their sentences. Sentences
    that are not are returned as ``spans`` (a flag, not a block: what to do with them is the caller's
    policy), the lowest support as ``score``. Sentences that neither cite nor quote claim nothing
    checkable and pass, as does an answer citing and quoting nothing.
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
    if not cited and not _QUOTED.search(answer):
        if count:
            return Finding(False, f"cites none of the {count} sources{note}")
        return Finding(False, "no sources and no citations")
    supports = [
        support
        for sentence in answer_sentences(answer)
        if (
            support := _support(
                sentence,
                [n for n in cited_numbers(_QUOTED.sub(" ", sentence)) if 1 <= n <= count],
                sources,
                min_overlap,
                min_similarity,
            )
        )
        is not None
    ]
    score = min((support.score for support in supports), default=None)
    shown = ", ".join(f"[{n}]" for n in cited)
    summary = f"cites {shown} of {count} sources{note}" if cited else f"cites none of the {count} sources{note}"
    unsupported = [support for support in supports if not support.supported(min_overlap, min_similarity)]
    if not unsupported:
        return Finding(False, summary, score)
    listed = "; ".join(f"\u201c{_shorten(support.sentence)}\u201d ({support.reason()})" for support in unsupported)
    detail = f"{summary}; {len(unsupported)} of {len(supports)} sentences unsupported: {listed}"
    return Finding(False, detail, score, spans=tuple(support.sentence for support in unsupported))
