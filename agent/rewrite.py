"""Standalone search queries for follow-up questions.

"And how many caps did he win?" finds nothing useful on its own: retrieval does not see the thread.
Before retrieving, a follow-up is rewritten into a query that stands alone, by the chat model when
there is one, and otherwise by a cheap rule that appends the names of the earlier question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

REWRITE_PROMPT = (
    "Rewrite the user's last question as one standalone search query. Replace pronouns and vague "
    "references with the names they stand for in the conversation. Reply with the query only."
)
# A rewrite longer than this is the model answering or rambling, not a query: the rule is used instead.
MAX_QUERY_CHARS = 300
MAX_QUERY_WORDS = 40
# Enough tokens for any sensible query; the cap keeps a small model from rambling on the turn's time.
REWRITE_TOKENS = 64
# Each earlier message shown to the model is cut to this, so long answers do not crowd the prompt.
TRANSCRIPT_CHARS = 300

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*", re.UNICODE)
# Words that point back into the conversation.
_ANAPHORA_TEXT = "he him his she her hers it its they them their theirs this that these those there such"
_ANAPHORA = frozenset(_ANAPHORA_TEXT.split())
_OPENERS = ("and ", "and,", "but ", "also ", "what about ", "how about ", "what of ")
# Capitalised runs ("Iwan Roberts", "Bank of England", "Norwich City F.C.").
_NAME = re.compile(
    r"[A-Z][\w'\u2019&.-]*(?:\s+(?:(?:of|the|de|du|da|del|van|von|la|le)\s+)*[A-Z][\w'\u2019&.-]*)*", re.UNICODE
)
# Capitalised because they start a question, not because they name something.
_NOT_NAME_TEXT = (
    "a an and are but can could did do does how i in is it of on please tell the was were what when where "
    "which who whom whose why will would"
)
_NOT_NAMES = frozenset(_NOT_NAME_TEXT.split())
# Words that say nothing about the topic, for the fallback that carries over the earlier question's words.
_MORE_FUNCTION_WORDS = "about any at be by for from has have many much to with"
_FUNCTION_WORDS = _NOT_NAMES | _ANAPHORA | frozenset(_MORE_FUNCTION_WORDS.split())
# A question this short (in content words) leans on the conversation even without a pronoun: "and Wales?".
SHORT_QUESTION_WORDS = 2


def is_follow_up(question: str) -> bool:
    """Whether ``question`` probably leans on earlier turns: a pronoun, an opener like "and", or very short."""
    lowered = question.strip().lower()
    words = _WORD.findall(lowered)
    if any(word in _ANAPHORA for word in words) or lowered.startswith(_OPENERS):
        return True
    return len([word for word in words if word not in _FUNCTION_WORDS]) <= SHORT_QUESTION_WORDS


def names(text: str) -> list[str]:
    """The capitalised names in ``text``, without the question word that may start it."""
    found: list[str] = []
    for match in _NAME.finditer(text):
        words = match.group(0).rstrip(".").split()
        while words and words[0].lower() in _NOT_NAMES:
            words = words[1:]
        name = re.sub(r"['\u2019]s$", "", " ".join(words))
        if name and name not in found:
            found.append(name)
    return found


def rule_rewrite(question: str, earlier_questions: Sequence[str]) -> str:
    """``question`` with the names (else the content words) of the latest earlier question that has any.

    The question's own words are kept: the additions only pull retrieval towards the thread's topic.
    A question that does not look like a follow-up, or the first of a thread, is returned unchanged.
    """
    if not earlier_questions or not is_follow_up(question):
        return question
    lowered = question.lower()
    for earlier in reversed(earlier_questions):
        added = [name for name in names(earlier) if name.lower() not in lowered]
        if added:
            return f"{question} {' '.join(added)}"
    own = set(_WORD.findall(lowered))
    words = [word for word in _WORD.findall(earlier_questions[-1]) if word.lower() not in _FUNCTION_WORDS | own]
    return f"{question} {' '.join(dict.fromkeys(words))}" if words else question


def transcript(messages: Sequence[AnyMessage]) -> str:
    """The user and assistant messages as "User: ..." / "Assistant: ..." lines, each cut to TRANSCRIPT_CHARS."""
    lines = []
    for message in messages:
        if isinstance(message, HumanMessage | AIMessage):
            role = "User" if isinstance(message, HumanMessage) else "Assistant"
            text = " ".join(message.text.split())
            lines.append(f"{role}: {text[:TRANSCRIPT_CHARS]}")
    return "\n".join(lines)


def quiet(model: BaseChatModel, max_tokens: int = REWRITE_TOKENS) -> BaseChatModel:
    """A copy of ``model`` sampling at temperature 0 with at most ``max_tokens``, where the model has those fields.

    Set as fields rather than call arguments: each provider names and accepts call arguments differently
    (Ollama rejects ``temperature=`` as one), while the fields are how each one is configured.
    """
    fields = type(model).model_fields
    update: dict[str, object] = {"temperature": 0.0} if "temperature" in fields else {}
    update |= {name: max_tokens for name in ("max_tokens", "num_predict") if name in fields}
    return model.model_copy(update=update) if update else model


def _clean(reply: str) -> str:
    """The query in a model's reply: its first line, without a "Query:" label or wrapping quotes."""
    line = next((line.strip() for line in reply.strip().splitlines() if line.strip()), "")
    line = re.sub(r"^(?:standalone\s+)?(?:search\s+)?query\s*:\s*", "", line, flags=re.IGNORECASE)
    return line.strip().strip("\"'\u201c\u201d`").strip()


def llm_rewrite(
    model: BaseChatModel, question: str, earlier: Sequence[AnyMessage], config: RunnableConfig | None = None
) -> str | None:
    """The model's standalone query for ``question`` given the ``earlier`` messages; None when unusable."""
    prompt = [
        SystemMessage(REWRITE_PROMPT),
        HumanMessage(f"Conversation:\n{transcript(earlier)}\n\nLast question: {question}\n\nStandalone query:"),
    ]
    query = _clean(quiet(model).invoke(prompt, config).text)
    if not query or len(query) > MAX_QUERY_CHARS or len(query.split()) > MAX_QUERY_WORDS:
        return None
    return query
