"""Streaming output rails: the answer reaches the user in chunks the output rails have passed, as the model writes it.

NeMo Guardrails' ``rails.output.streaming`` (``config.yml``) turns it on and sets ``chunk_size``, in tokens (the
chat model's stream pieces). As in NeMo with ``stream_first: false``, nothing reaches the user before the rails
have checked it. Once ``chunk_size`` tokens are in, a chunk ends at the latest sentence or line end (a run-on
text at the last space after four times as many), so a sentence, and the personal data or citation in it, is
checked whole; each chunk is checked on its own, as NeMo requires (``context_size: 0``) with rails that rewrite
the answer, as masking personal data does. A chunk the rails block stops the model there.

The whole draft is checked again by the ``output_rails`` node, which decides what the thread keeps: a rail that
needs the whole answer still sees it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rails import RailsOutcome, RailVerdict

# A sentence end (with closing quotes or brackets, and a citation such as "[2]" after it) or a line end.
_CHUNK_END = re.compile(r"""[.!?]["')\]]*(?:\s*\[\d+\])*(?=\s)|\n""")
# With no sentence end this many times ``chunk_size`` tokens in, the chunk ends at the last space instead.
_LONGEST_CHUNK = 4


@dataclass
class ChunkCheck:
    """What the rails made of one chunk: ``released`` (what the user may see), or ``blocked`` with the ``policy``."""

    released: str
    blocked: bool = False
    policy: str | None = None
    verdicts: list[RailVerdict] = field(default_factory=list)


def without_spans(text: str, spans: list[str]) -> str:
    """``text`` less each of ``spans`` (exact substrings) and the spaces after it, stripped."""
    for span in spans:
        start = text.find(span)
        if start >= 0:
            end = start + len(span)
            end += len(text[end:]) - len(text[end:].lstrip(" \t"))
            text = text[:start] + text[end:]
    return text.strip()


class CheckedStream:
    """Cuts a stream of model tokens into chunks and checks each with ``check`` (the output rails) before release.

    ``unsupported`` is RAILGRAPH_UNSUPPORTED_POLICY: ``remove`` leaves the sentences a rail flags out of the released
    text, ``refuse`` blocks the chunk that has one (``review`` cannot stream: the draft waits for a reviewer).
    """

    def __init__(
        self,
        check: Callable[[str], RailsOutcome],
        *,
        chunk_size: int,
        unsupported: str = "remove",
        refuse_policy: str = "unsupported claims",
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"rails.output.streaming.chunk_size must be at least 1 token, not {chunk_size}")
        self.check = check
        self.chunk_size = chunk_size
        self.unsupported = unsupported
        self.refuse_policy = refuse_policy
        self.text = ""
        """Every token fed so far, as the model wrote it."""
        self._pending = ""
        self._tokens = 0
        self.blocked: ChunkCheck | None = None

    def feed(self, token: str) -> Iterator[ChunkCheck]:
        """Take one token; yields a check for each chunk it completes (at most one, unless the stream was blocked)."""
        if self.blocked is not None:
            return
        self.text += token
        self._pending += token
        self._tokens += 1
        if self._tokens < self.chunk_size:
            return
        cut = self._cut()
        if cut:
            chunk, self._pending = self._pending[:cut], self._pending[cut:]
            # The few tokens after the cut start the next chunk's count afresh: chunks run a little over chunk_size.
            self._tokens = 0
            yield self._check(chunk)

    def close(self) -> Iterator[ChunkCheck]:
        """The end of the stream: checks what is left."""
        if self.blocked is None and self._pending.strip():
            chunk, self._pending = self._pending, ""
            yield self._check(chunk)

    def _cut(self) -> int:
        """Where the pending text's chunk ends (0: not yet)."""
        ends = [match.end() for match in _CHUNK_END.finditer(self._pending)]
        if ends:
            return ends[-1]
        if self._tokens >= _LONGEST_CHUNK * self.chunk_size:
            return self._pending.rstrip().rfind(" ") + 1
        return 0

    def _check(self, chunk: str) -> ChunkCheck:
        outcome = self.check(chunk)
        if outcome.blocked:
            self.blocked = ChunkCheck("", blocked=True, policy=outcome.policy, verdicts=outcome.verdicts)
            return self.blocked
        flagged = [
            span for verdict in outcome.verdicts if verdict["verdict"] == "flag" for span in verdict.get("spans", [])
        ]
        if flagged and self.unsupported == "refuse":
            verdicts = [
                verdict | {"verdict": "block"} if verdict["verdict"] == "flag" else verdict
                for verdict in outcome.verdicts
            ]
            self.blocked = ChunkCheck("", blocked=True, policy=self.refuse_policy, verdicts=verdicts)
            return self.blocked
        # The check strips the text it passes; the spaces and line breaks between chunks are kept.
        leading = chunk[: len(chunk) - len(chunk.lstrip())]
        trailing = chunk[len(chunk.rstrip()) :]
        released = without_spans(outcome.text, flagged)
        return ChunkCheck(leading + released + trailing if released else "", verdicts=outcome.verdicts)
