"""Personal data (PII) in text, as plain functions: find it (``detect``), mask it (``mask``) and apply the
per-entity settings of ``config.yml`` (``scan``).

Presidio's pattern recognizers find e-mail addresses, phone numbers, credit-card numbers (Luhn-checked), IBANs
(checksum-checked), US social security numbers and IP addresses. Presidio's analyzer wants a spaCy model for its
context words ("SSN: ...", "call ..."), and no registry here serves one, so ``TokenizerEngine`` gives it spaCy's
blank English tokenizer (shipped with spaCy, nothing downloaded) with lower-cased words as lemmas. Person names
come from ``NameRecognizer``: capitalised words led by a first name from a gazetteer (Faker's name lists of about
70 locales), a title (``Dr.``) or a cue (``my name is``). ``railgraph eval pii`` measures both.

``rails/actions.py`` wraps ``scan`` in the NeMo action of the ``pii input`` / ``pii output`` flows and
``rails.Guard.screen_chunks`` applies it to retrieved chunks. Importing this module imports Presidio, which
imports torch and transformers when they are installed (well under a second once torch is loaded, as it is for
MiniLM): import it where it is used, not at the top of a CLI module. The analyzer is built once per process.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args

import numpy as np
import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine, LocalRecognizer, Pattern, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)
from spacy.lang.en.stop_words import STOP_WORDS

Action = Literal["mask", "block", "allow"]
ACTIONS: tuple[Action, ...] = get_args(Action)
# Found by Presidio's pattern recognizers: cheap, so they run even for entities set to `allow` (an allowed SSN is
# then not also masked as the phone number it resembles).
PATTERN_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS")
ENTITIES = (*PATTERN_ENTITIES, "PERSON")
# Presidio's scores: validated e-mails, cards and IBANs 1.0, IPv4 0.6, SSNs 0.5, phone numbers 0.4, each raised
# by a context word nearby; 0.4 keeps a phone number without one and drops the "very weak" SSN forms.
DEFAULT_THRESHOLD = 0.4
LANGUAGE = "en"


@dataclass(frozen=True)
class PiiSpan:
    """One piece of personal data: its entity type, where it is (``text[start:end]``) and how sure the finder is."""

    entity_type: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class PiiSettings:
    """What to do with each entity type (``mask``, ``block`` or ``allow``) and the score a span needs to count."""

    actions: Mapping[str, Action] = field(default_factory=lambda: dict.fromkeys(ENTITIES, "mask"))
    threshold: float = DEFAULT_THRESHOLD

    @classmethod
    def from_config(cls, settings: Mapping[str, Any]) -> PiiSettings:
        """Settings from ``custom_data.pii`` of config.yml; an entity left out is masked.

        A wrong key or value is a ``ValueError`` naming it and the choices.
        """
        entities = settings.get("entities") or {}
        if not isinstance(entities, Mapping):
            raise ValueError(f"pii.entities in config.yml must map entity types to one of {', '.join(ACTIONS)}")
        actions: dict[str, Action] = dict.fromkeys(ENTITIES, "mask")
        for entity, action in entities.items():
            if entity not in ENTITIES:
                raise ValueError(f"pii.entities.{entity} in config.yml: unknown entity type; use {', '.join(ENTITIES)}")
            if action not in ACTIONS:
                raise ValueError(f"pii.entities.{entity} in config.yml is {action!r}; use one of {', '.join(ACTIONS)}")
            actions[entity] = action
        threshold = settings.get("threshold", DEFAULT_THRESHOLD)
        if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise ValueError(f"pii.threshold in config.yml is {threshold!r}; use a number from 0 to 1")
        return cls(actions=actions, threshold=float(threshold))

    def detected(self) -> tuple[str, ...]:
        """The entity types to look for: every pattern entity, and names unless they are allowed."""
        return tuple(e for e in ENTITIES if e in PATTERN_ENTITIES or self.actions.get(e, "mask") != "allow")


@dataclass(frozen=True)
class PiiScan:
    """What ``scan`` found in one text and what the settings make of it."""

    text: str
    """The text with every span to mask replaced by ``<ENTITY_TYPE>``."""
    masked: tuple[PiiSpan, ...]
    blocking: tuple[PiiSpan, ...]
    """Spans of entity types set to ``block``; non-empty means the text must not be used."""

    @property
    def blocked(self) -> bool:
        """Whether a span of an entity type set to ``block`` was found."""
        return bool(self.blocking)

    @property
    def score(self) -> float | None:
        """The highest score among the spans acted on, if any."""
        return max((span.score for span in (*self.masked, *self.blocking)), default=None)

    def detail(self) -> str:
        """Entity types and counts, never the data: ``"masked 1 EMAIL_ADDRESS, 2 PHONE_NUMBER"``."""
        if self.blocking:
            also = f"; would mask {summary(self.masked)}" if self.masked else ""
            return f"found {summary(self.blocking)} (set to block){also}"
        if self.masked:
            return f"masked {summary(self.masked)}"
        return "no personal data found"


def summary(spans: Collection[PiiSpan]) -> str:
    """``"1 EMAIL_ADDRESS, 2 PHONE_NUMBER"``: counts per entity type, in ``ENTITIES`` order."""
    counts = Counter(span.entity_type for span in spans)
    return ", ".join(f"{counts[entity]} {entity}" for entity in ENTITIES if counts[entity])


def detect(text: str, entities: Collection[str] = ENTITIES, threshold: float = DEFAULT_THRESHOLD) -> list[PiiSpan]:
    """Spans of ``entities`` in ``text`` scoring at least ``threshold``, in text order, none overlapping.

    Where spans of two types overlap (a card or social security number also reads as a phone number), the higher
    score wins, then the longer span.
    """
    unknown = set(entities) - set(ENTITIES)
    if unknown:
        raise ValueError(f"unknown entity types {sorted(unknown)}; use {', '.join(ENTITIES)}")
    if not text.strip() or not entities:
        return []
    # LangChain's message texts are a str subclass, which spaCy's tokenizer refuses.
    text = str(text)
    results = analyzer().analyze(text, language=LANGUAGE, entities=list(entities), score_threshold=threshold)
    kept: list[PiiSpan] = []
    for result in sorted(results, key=lambda r: (-r.score, r.start - r.end, r.start)):
        if result.entity_type == "PHONE_NUMBER" and _not_a_phone_number(text, result.start, result.end):
            continue
        if all(result.end <= span.start or span.end <= result.start for span in kept):
            kept.append(PiiSpan(result.entity_type, result.start, result.end, float(result.score)))
    return sorted(kept, key=lambda span: span.start)


def _not_a_phone_number(text: str, start: int, end: int) -> bool:
    """True for digits that only look like a phone number: an ISBN, part of a URL or path, the tail of a word, a
    range or a row of a table.

    Wikipedia-style reference lists are full of them ("ISBN 0-7472-7895-4", ".../news/11737/2311982/...", page
    ranges with an en dash), and so are statistics tables ("37 9 3 2 2 0", an em dash, "42 11"); masking them would
    mark every such document as holding personal data. Phone numbers are written with hyphens, dots and spaces,
    never en or em dashes, and never as a run of single digits.
    """
    word_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
    word_end = min((i for i in (text.find(" ", end), text.find("\n", end)) if i != -1), default=len(text))
    word = text[word_start:word_end]
    glued = start > 0 and (text[start - 1].isalnum() or text[start - 1] in "-_")
    candidate = text[start:end]
    dashed = "\u2013" in candidate or "\u2014" in candidate
    table_row = sum(len(group) == 1 for group in re.findall(r"\d+", candidate)) >= 3
    return (
        glued or dashed or table_row or "ISBN" in text[max(0, start - 12) : start].upper() or "/" in word or "=" in word
    )


def mask(text: str, spans: Collection[PiiSpan]) -> str:
    """``text`` with each of ``spans`` (not overlapping) replaced by ``<ENTITY_TYPE>``."""
    parts: list[str] = []
    position = 0
    for span in sorted(spans, key=lambda span: span.start):
        parts += [text[position : span.start], f"<{span.entity_type}>"]
        position = span.end
    parts.append(text[position:])
    return "".join(parts)


def mask_part(text: str, spans: Collection[PiiSpan], part: str) -> str:
    """``part``, an exact substring of ``text``, masked as ``mask(text, spans)`` masks it (a span that crosses its
    edge is masked whole); a ``part`` not in ``text`` is returned as is."""
    start = text.find(part)
    if start < 0:
        return part
    end = start + len(part)
    inside = [span for span in spans if span.start < end and start < span.end]
    return mask(
        text[start:end], [replace(s, start=max(s.start, start) - start, end=min(s.end, end) - start) for s in inside]
    )


def scan(text: str, settings: PiiSettings) -> PiiScan:
    """Find the personal data in ``text`` and apply ``settings``: mask, block on, or leave each span."""
    spans = detect(text, settings.detected(), settings.threshold)
    masked = tuple(span for span in spans if settings.actions.get(span.entity_type, "mask") == "mask")
    blocking = tuple(span for span in spans if settings.actions.get(span.entity_type, "mask") == "block")
    return PiiScan(text=mask(text, masked), masked=masked, blocking=blocking)


# --- the analyzer -------------------------------------------------------------------------------------

# Card numbers as written: 12 to 19 digits run together, or in groups of 4-4-4-4(-3) or 4-6-5 / 4-6-4 with one
# kind of separator, led by a known issuer prefix (Visa 4, Mastercard 51-55 and 2221-2720, Maestro 50/56-58,
# Discover 6, Amex/Diners/JCB 3, JCB 2131/1800). Presidio's own pattern misses the 2-series, Maestro and JCB 15s.
_CARD_PATTERN = (
    r"\b(?:4\d{3}|5[0-8]\d{2}|6\d{3}|3\d{3}|2[2-7]\d{2}|2131|1800)"
    r"(?:\d{8,15}|([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|([ -])\d{6}\2\d{4,5})\b"
)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer checking domains against tldextract's bundled Public Suffix List.

    The stock recognizer calls ``tldextract.extract``, whose first use fetches the list from the network (and, when
    that fails, logs a traceback per URL before falling back to the same bundled copy).
    """

    _suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    def validate_result(self, pattern_text: str) -> bool:
        """Whether the address ends in a known public suffix (``.com``, ``.co.uk``)."""
        return self._suffixes(pattern_text).fqdn != ""


class TokenizerEngine(NlpEngine):
    """Presidio NLP engine on spaCy's blank English tokenizer: tokens and lower-cased words, no model.

    Presidio uses them to find its recognizers' context words near a match; it needs no entities from here.
    """

    def __init__(self) -> None:
        self._nlp = spacy.blank(LANGUAGE)

    def load(self) -> None:
        """Nothing to load: the tokenizer is built in ``__init__``."""

    def is_loaded(self) -> bool:
        """Always loaded."""
        return True

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        """Tokens of ``text`` with their lower-cased forms as lemmas."""
        doc = self._nlp(text)
        return NlpArtifacts(
            entities=[],
            tokens=doc,
            tokens_indices=[token.idx for token in doc],
            lemmas=[token.lower_ for token in doc],
            nlp_engine=self,
            language=language,
        )

    def process_batch(self, texts: Any, language: str, **kwargs: Any) -> Iterator[tuple[str, NlpArtifacts]]:
        """``process_text`` of each text."""
        for text in texts:
            yield text, self.process_text(text, language)

    def is_stopword(self, word: str, language: str) -> bool:
        """Whether ``word`` is one of spaCy's English stop words."""
        return word.lower() in STOP_WORDS

    def is_punct(self, word: str, language: str) -> bool:
        """Whether ``word`` has no letter or digit."""
        return bool(word) and not any(character.isalnum() for character in word)

    def get_supported_entities(self) -> list[str]:
        """None: this engine finds no entities itself."""
        return []

    def get_supported_languages(self) -> list[str]:
        """English only."""
        return [LANGUAGE]


@lru_cache(maxsize=1)
def analyzer() -> AnalyzerEngine:
    """Presidio's analyzer with railgraph's recognizers and tokenizer-only NLP engine, built once per process."""
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    for recognizer in (
        OfflineEmailRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(patterns=[Pattern("Credit card (issuer prefix)", _CARD_PATTERN, 0.3)]),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
        NameRecognizer(),
    ):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(registry=registry, nlp_engine=TokenizerEngine(), supported_languages=[LANGUAGE])


# --- person names -----------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*(?:-[^\W\d_]+)*")
_TITLES = frozenset("mr mrs ms miss mx dr prof sir madam mister".split())  # noqa: SIM905
# Lower-case words inside names: "Dyan van Gijn", "Maria da Silva".
_PARTICLES = frozenset("van von de der den da di del della la le du dos das ter ten bin ibn al el".split())  # noqa: SIM905
# Words right before a name that say it is one. A name after them counts even when no gazetteer knows it.
_CUES = (
    "my name is",
    "name is",
    "named",
    "call me",
    "i'm",
    "i am",
    "hi",
    "hello",
    "dear",
    "thanks",
    "thank you",
    "name:",
    "name?",
    "user:",
    "regards",
    "sincerely",
    "says",
    "said",
    "told",
    "contact",
    "met",
)
# Capitalised words that make a run of capitalised words something other than a person: streets, companies,
# institutions, days, months, compass points.
_NOT_NAME_TEXT = (
    "street st road rd avenue ave lane ln drive boulevard blvd suite apt court ct place square way park "
    "hill ltd inc llc gmbh corp corporation company co group bank university college school hospital "
    "church club orchestra band research union institute foundation association society agency ministry "
    "department office center centre hotel airport station monday tuesday wednesday thursday friday "
    "saturday sunday january february march april may june july august september october november "
    "december north south east west new san santa saint royal princess prince king queen lord lady"
)
_NOT_NAMES = frozenset(_NOT_NAME_TEXT.split())
# A single name right after these is a place more often than a person: "in Victoria", "from Jordan".
_PLACE_WORDS = frozenset("in from to at near of via rue".split())  # noqa: SIM905
_STRONG, _CUED, _SINGLE, _WEAK = 0.85, 0.6, 0.5, 0.4


@dataclass(frozen=True)
class NameLists:
    """Lower-cased first names, last names and place names (countries, states, provinces)."""

    first: frozenset[str]
    last: frozenset[str]
    places: frozenset[str]


def _collect(package: ModuleType, attributes: tuple[str, ...]) -> frozenset[str]:
    found: set[str] = set()
    for module in pkgutil.iter_modules(package.__path__):
        provider = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "Provider", None)
        for attribute in attributes:
            values = getattr(provider, attribute, None)
            # Some locales compute a list in a property: the class attribute is then not a collection.
            if isinstance(values, list | tuple | dict):
                found.update(value.lower() for value in values if isinstance(value, str))
    return frozenset(found)


@lru_cache(maxsize=1)
def name_lists() -> NameLists:
    """The name and place lists of Faker's person and address providers (MIT), read once (about a second)."""
    import faker.providers.address
    import faker.providers.person

    names = ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary")
    surnames = ("last_names", "last_names_male", "last_names_female")
    return NameLists(
        first=_collect(faker.providers.person, names),
        last=_collect(faker.providers.person, surnames),
        places=_collect(faker.providers.address, ("countries", "states", "provinces")),
    )


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    word: str

    @property
    def key(self) -> str:
        return self.word.lower()


def find_names(text: str, lists: NameLists) -> list[tuple[int, int, float]]:
    """``(start, end, score)`` of the person names in ``text``, by gazetteer, capitalisation and context rules.

    A run of capitalised words on one line is a name when its first word is a known first name or a later one a
    known last name (``_STRONG``), when a title (``Dr.``) leads it or a cue (``my name is``) comes before it; a
    lone known first name scores ``_SINGLE`` inside a sentence and ``_WEAK`` at its start, where any word is
    capitalised. Text without capitals ("my name is eva kleist") is read with gazetteer words only.
    """
    lower_text = not any(character.isupper() for character in text)
    tokens = [_Token(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]

    def capitalised(token: _Token) -> bool:
        return lower_text or (token.word[0].isupper() and (len(token.word) == 1 or not token.word.isupper()))

    def joined(i: int) -> bool:
        """Whether token ``i`` continues the name of token ``i - 1``: same line, one space (after a title or an
        initial, a full stop and a space)."""
        gap = text[tokens[i - 1].end : tokens[i].start]
        if len(tokens[i - 1].word) == 1 or tokens[i - 1].key in _TITLES:
            gap = gap.removeprefix(".")
        return gap in (" ", "  ")

    def continues(j: int) -> bool:
        token = tokens[j]
        if lower_text:
            return token.key in lists.last or (token.key in lists.first and token.key not in STOP_WORDS)
        if token.key in _PARTICLES:
            return j + 1 < len(tokens) and joined(j + 1) and capitalised(tokens[j + 1])
        return capitalised(token) and token.key not in STOP_WORDS

    found: list[tuple[int, int, float]] = []
    i = 0
    while i < len(tokens):
        titled = (
            not lower_text
            and tokens[i].key in _TITLES
            and i + 1 < len(tokens)
            and joined(i + 1)
            and capitalised(tokens[i + 1])
        )
        if titled:
            i += 1
        token = tokens[i]
        if not capitalised(token) or len(token.word) < 2 or token.key in _NOT_NAMES or token.key in STOP_WORDS:
            i += 1
            continue
        j = i + 1
        while j < len(tokens) and j - i < 4 and joined(j) and continues(j):
            j += 1
        run = [t.key for t in tokens[i:j]]
        start, end = token.start, tokens[j - 1].end
        if any(word in _NOT_NAMES for word in run) or re.search(r"\d[\s,]*$", text[max(0, start - 8) : start]):
            i = j  # "Walter Road Suite", "12 Victoria Street": an address or an organisation
            continue
        score = _score(text, start, run, lists, titled=titled, lower_text=lower_text)
        if score is not None:
            found.append((start, end, score))
            i = j
        else:
            i += 1  # "Hi Christin": the name may start at the next word
    return found


def _score(text: str, start: int, run: list[str], lists: NameLists, *, titled: bool, lower_text: bool) -> float | None:
    """The score of the run of words ``run`` starting at ``start`` as a person's name, or None if it is not one."""
    if titled:
        return _STRONG
    known_first = run[0] in lists.first
    if lower_text and not known_first:
        return None
    before = text[max(0, start - 24) : start].lower().rstrip(" ,:>\"'\n")
    cued = before.endswith(_CUES)
    whole = " ".join(run)
    if whole in lists.places:
        return None
    if len(run) > 1:
        if known_first or any(word in lists.last for word in run[1:]) or cued or len(run[1]) == 1:
            return _STRONG
        return None
    if cued:
        return _STRONG if known_first or run[0] in lists.last else _CUED
    if not known_first or lower_text or before.rsplit(" ", 1)[-1] in _PLACE_WORDS:
        return None
    sentence_start = text[:start].rstrip(" \"'(>*")[-1:] in ("", ".", "!", "?", "\n", ":")
    return _WEAK if sentence_start else _SINGLE


class NameRecognizer(LocalRecognizer):
    """Presidio recognizer of PERSON: ``find_names`` on Faker's name lists, read on the first text that asks."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], supported_language=LANGUAGE, name="NameRecognizer")

    def load(self) -> None:
        """Nothing to load up front: ``name_lists`` is read on first use, only when names are looked for."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[Any]:
        """A ``RecognizerResult`` per name ``find_names`` finds."""
        if "PERSON" not in entities:
            return []
        return [RecognizerResult("PERSON", start, end, score) for start, end, score in find_names(text, name_lists())]


# --- evaluation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledText:
    """One sentence of an evaluation set with its labelled spans (only those of ``ENTITIES`` are kept)."""

    text: str
    spans: tuple[PiiSpan, ...]


def read_dataset(path: Path) -> tuple[list[LabelledText], list[str]]:
    """The sentences of a presidio-research JSON file (``[{full_text, spans: [{entity_type, start_position,
    end_position}]}]``) and one line per row that could not be read (the rest are still read).

    A file that is not such a list is a ``ValueError`` naming it.
    """
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read it as JSON ({error}); expected presidio-research's format") from error
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of {{full_text, spans}} rows, found {type(rows).__name__}")
    samples: list[LabelledText] = []
    problems: list[str] = []
    for number, row in enumerate(rows):
        try:
            text = row["full_text"]
            spans = tuple(
                PiiSpan(span["entity_type"], int(span["start_position"]), int(span["end_position"]), 1.0)
                for span in row.get("spans") or []
                if span["entity_type"] in ENTITIES
            )
            if not isinstance(text, str) or any(not 0 <= s.start < s.end <= len(text) for s in spans):
                raise ValueError("a span lies outside full_text")
        except (TypeError, KeyError, ValueError) as error:
            problems.append(
                f"{path} row {number}: skipped ({type(error).__name__}: {error}); each row needs "
                "full_text and spans of {entity_type, start_position, end_position}"
            )
            continue
        samples.append(LabelledText(text, spans))
    return samples, problems


def evaluate(
    samples: Collection[LabelledText],
    entities: Collection[str] = ENTITIES,
    threshold: float = DEFAULT_THRESHOLD,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Precision, recall and F1 of ``detect`` per entity type, and its latency per sentence.

    A found span counts as correct when it overlaps (shares a character with) a labelled span of the same type;
    a labelled span counts as found when a found span of its type overlaps it. Latency is the wall time of one
    ``detect`` call per sentence, after one warm-up call (which loads the phone metadata and the name lists).
    """
    detect("Warm-up: call Anna Smith on (602) 272-9781.", entities, threshold)
    correct: Counter[str] = Counter()
    found_gold: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    gold: Counter[str] = Counter()
    latencies: list[float] = []
    for done, sample in enumerate(samples, start=1):
        started = time.perf_counter()
        spans = detect(sample.text, entities, threshold)
        latencies.append((time.perf_counter() - started) * 1000)
        for entity in entities:
            mine = [span for span in spans if span.entity_type == entity]
            labelled = [span for span in sample.spans if span.entity_type == entity]
            predicted[entity] += len(mine)
            gold[entity] += len(labelled)
            correct[entity] += sum(any(_overlap(span, label) for label in labelled) for span in mine)
            found_gold[entity] += sum(any(_overlap(span, label) for span in mine) for label in labelled)
        if progress:
            progress(done, len(samples))
    per_entity: dict[str, dict[str, float | int]] = {}
    for entity in entities:
        precision = correct[entity] / predicted[entity] if predicted[entity] else 0.0
        recall = found_gold[entity] / gold[entity] if gold[entity] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_entity[entity] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "predicted": predicted[entity],
            "labelled": gold[entity],
        }
    return {
        "sentences": len(samples),
        "threshold": threshold,
        "match": "overlap: a found span is correct when it shares a character with a labelled span of its type",
        "entities": per_entity,
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)) if latencies else 0.0,
            "p95": float(np.percentile(latencies, 95)) if latencies else 0.0,
        },
    }


def _overlap(a: PiiSpan, b: PiiSpan) -> bool:
    return a.start < b.end and b.start < a.end
