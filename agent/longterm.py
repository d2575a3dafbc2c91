"""Long-term memory: facts users state about themselves, kept across threads in LangGraph's store.

Each user's facts live under the namespace ``("memories", user_id)``. The ``remember`` node finds first-person
statements in the (already PII-masked) question by rule: "I work in the Oslo office", "my manager is Kari",
"I am based in Bergen", "I prefer short answers", "call me Kim", "remember that ...". A fact's key is a hash of
its normalised text, so restating it adds nothing; a fact about the same thing as an older one ("I work in the
Bergen office" after "... Oslo office") replaces it. The facts are shown to the chat model and, when a question
refers to the user ("which office hours apply to me?"), added to its search query.
"""

from __future__ import annotations

import getpass
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.store.base import BaseStore, Item

from agent.configuration import Settings

NAMESPACE = "memories"
# The most facts read per turn (newest first): enough for a person's profile, few enough for any prompt.
MAX_FACTS = 20
MAX_FACT_CHARS = 200

_THINGS = (
    "manager|boss|team lead|team|department|role|job title|job|title|office|location|time ?zone|language|name|"
    "employee number|desk|site|project"
)
_NOW = r"(?:now\s+|currently\s+)?"
# (what the fact is about, None when facts of its kind accumulate; the pattern: its match is the fact, or only its
# group "fact" when it has one, as in "remember that <fact>").
_RULES: list[tuple[str | None, re.Pattern[str]]] = [
    ("workplace", re.compile(rf"\bI(?:'m| am)?\s+{_NOW}work(?:ing)?\s+(?:in|at|for|from)\s+\S.*", re.I)),
    ("base", re.compile(rf"\bI(?:'m| am)\s+{_NOW}(?:based|located|stationed)\s+(?:in|at)\s+\S.*", re.I)),
    ("home", re.compile(rf"\bI\s+{_NOW}live\s+in\s+\S.*", re.I)),
    ("my {thing}", re.compile(rf"\bmy\s+(?P<thing>{_THINGS})\s+is\s+\S.*", re.I)),
    ("name", re.compile(r"\bcall\s+me\s+\S.*", re.I)),
    (None, re.compile(r"\bI\s+(?:would\s+)?prefer\s+\S.*", re.I)),
    (None, re.compile(r"\bremember\s+that\s+(?P<fact>\S.*)", re.I)),
]
# Sentences, and a statement followed by a question in one sentence: "I work in Oslo, what are my hours?".
_QUESTION_WORDS = r"(?:what|which|when|where|who|whom|whose|why|how|can|could|do|does|is|are|should|will)\b"
_CLAUSES = re.compile(rf"(?<=[.!?;])\s+|\n+|,\s*(?={_QUESTION_WORDS})", re.I)
_QUESTION_START = re.compile(rf"^{_QUESTION_WORDS}", re.I)
_ABOUT_USER = re.compile(r"\b(?:i|me|my|mine|myself|i'm|i've|i'd)\b", re.I)


@dataclass(frozen=True)
class Fact:
    """One thing the user said about themselves."""

    text: str
    """The statement as the user made it, e.g. "I work in the Oslo office"."""
    slot: str | None
    """What it is about ("workplace", "my manager"); a newer fact about the same thing replaces it."""

    @property
    def key(self) -> str:
        """The store key: a hash of the normalised text, so restating the fact stores nothing new."""
        normal = " ".join(re.sub(r"[^\w\s]", " ", self.text.lower()).split())
        return hashlib.sha256(normal.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Memory:
    """A stored fact, as ``railgraph memory list`` shows it."""

    id: str
    user: str
    text: str
    created_at: str
    thread_id: str | None

    def to_json(self) -> dict[str, Any]:
        """The ``memory list --json`` shape."""
        return {
            "id": self.id,
            "user": self.user,
            "text": self.text,
            "created_at": self.created_at,
            "thread_id": self.thread_id,
        }


def _clauses(text: str) -> list[str]:
    return [clause.strip() for clause in _CLAUSES.split(text) if clause and clause.strip(" .!;,")]


def _fact(clause: str) -> Fact | None:
    if clause.endswith("?") or _QUESTION_START.match(clause):
        return None
    for slot, pattern in _RULES:
        match = pattern.search(clause)
        if match is None:
            continue
        statement = (match.groupdict().get("fact") or match.group(0)).strip(" .!;,")[:MAX_FACT_CHARS]
        if slot and "{thing}" in slot:
            slot = slot.format(thing=" ".join(match.group("thing").lower().split()))
        return Fact(statement[0].upper() + statement[1:], slot)
    return None


def extract_facts(text: str) -> list[Fact]:
    """The first-person facts stated in ``text``, once each."""
    facts = [fact for fact in map(_fact, _clauses(text)) if fact is not None]
    return list({fact.key: fact for fact in facts}.values())


def only_statements(text: str) -> bool:
    """Whether ``text`` states facts and asks nothing: every clause of it is a fact."""
    clauses = _clauses(text)
    return bool(clauses) and all(_fact(clause) is not None for clause in clauses)


def acknowledgement(facts: list[Fact]) -> str:
    """The answer to a message that only states facts."""
    noted = "; ".join(f'"{fact.text}"' for fact in facts)
    return f"Noted, I will remember that: {noted}. `railgraph memory list` shows what I remember."


def user_id(config: RunnableConfig | None, settings: Settings) -> str:
    """Whose memories a run uses: ``configurable["user_id"]``, else RAILGRAPH_USER, else the login name."""
    configured = (config or {}).get("configurable", {}).get("user_id")
    return str(configured or settings.user or getpass.getuser())


def namespace(user: str) -> tuple[str, str]:
    """The store namespace of one user's memories."""
    return (NAMESPACE, user)


def save(store: BaseStore, user: str, facts: list[Fact], *, thread_id: str | None = None) -> None:
    """Store ``facts`` for ``user``; each replaces the user's older facts about the same thing."""
    for fact in facts:
        if store.get(namespace(user), fact.key) is not None:
            continue
        if fact.slot is not None:
            for older in store.search(namespace(user), filter={"slot": fact.slot}, limit=MAX_FACTS):
                store.delete(namespace(user), older.key)
        value = {"text": fact.text, "slot": fact.slot, "thread_id": thread_id}
        store.put(namespace(user), fact.key, value, index=False)


def _memory(item: Item) -> Memory:
    return Memory(
        id=item.key,
        user=item.namespace[1],
        text=item.value["text"],
        created_at=item.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        thread_id=item.value.get("thread_id"),
    )


def recall(store: BaseStore, user: str, *, limit: int = MAX_FACTS) -> list[Memory]:
    """The user's memories, newest first."""
    items = store.search(namespace(user), limit=limit)
    return [_memory(item) for item in sorted(items, key=lambda item: item.updated_at, reverse=True)]


def forget(store: BaseStore, user: str, memory_id: str | None = None) -> int:
    """Delete one of the user's memories (``memory_id``) or, with None, all of them; return how many went."""
    ids = [memory_id] if memory_id else [item.key for item in store.search(namespace(user), limit=10_000)]
    gone = [key for key in ids if store.get(namespace(user), key) is not None]
    for key in gone:
        store.delete(namespace(user), key)
    return len(gone)


def refers_to_user(question: str) -> bool:
    """Whether the question is about the asker ("me", "my", "I"), so their facts may narrow the search."""
    return bool(_ABOUT_USER.search(question))


def personalize(query: str, question: str, memories: list[str]) -> str:
    """``query`` with the user's facts appended when ``question`` refers to the user."""
    if not memories or not refers_to_user(question):
        return query
    return f"{query} {' '.join(memories)}"
