"""The review queue: drafts waiting for a human, the decisions taken on them, and their append-only audit log.

A review's payload is the Agent Inbox ``HumanInterrupt`` the graph raised; a decision is an Agent Inbox
``HumanResponse`` (``type`` accept, edit, response or ignore). Every write is dialect-neutral SQL with
timestamps computed here (UTC ``YYYY-MM-DDTHH:MM:SSZ``, which sort as text), so the tables work on Postgres too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from agent.db import Database

ReviewStatus = Literal["pending", "approved", "edited", "responded", "rejected"]
AuditAction = Literal["submitted", "approved", "edited", "responded", "rejected"]

# Who resumes a decided review's thread holds this lease on it; past it, a crash is assumed and anyone may.
# Resuming runs only the nodes after approval (no model call), so a live holder finishes in well under it.
RESUME_LEASE = timedelta(seconds=60)
# The actor of the audit row written when the graph queues a draft.
AGENT_ACTOR = "agent"
# The flag of a draft whose retrieval found nothing, or nothing scoring RAILGRAPH_REVIEW_MIN_SCORE.
LOW_CONFIDENCE = "low_confidence"
# The user asked to talk to a person (the "human handoff" input rail): there is no draft, a reviewer answers.
HANDOFF = "handoff"

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Timestamps have whole seconds: reviews queued (or decided) within one second are ordered by their audit rows,
# whose ids count up in the order they were written.
_QUEUED = "(SELECT min(a.id) FROM review_audit a WHERE a.review_id = reviews.id)"
_DECIDED = "(SELECT max(a.id) FROM review_audit a WHERE a.review_id = reviews.id)"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ReviewNotFound(LookupError):
    """No review has this id."""


class AlreadyDecided(RuntimeError):
    """Someone decided this review first; a second decision would contradict it."""


def utc_now() -> str:
    """Now, in the timestamp format of the review tables."""
    return datetime.now(UTC).strftime(_TIME_FORMAT)


def utc_ago(age: timedelta) -> str:
    """The timestamp ``age`` ago, for comparisons with the review tables' timestamps."""
    return (datetime.now(UTC) - age).strftime(_TIME_FORMAT)


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``1d``, ``45s`` or ``1w`` as a ``timedelta``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: write a number and a unit, such as 30m, 2h or 1d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def review_flags(
    question: str,
    sources: Sequence[dict[str, Any]],
    rails: Sequence[dict[str, Any]],
    *,
    min_score: float,
    topics: Sequence[str],
) -> list[str]:
    """Why a draft needs a reviewer under the ``flagged`` policy; empty when it does not.

    ``handoff`` alone when the user asked for a person (the human hand-off rail); else ``rail:<name>`` for each rail
    that flagged it (e.g. the grounding rail's unsupported sentences; a ``modify``,
    such as masked personal data, is not a flag), ``low_confidence`` when retrieval found nothing or nothing
    scoring ``min_score``, ``topic:<topic>`` for each review topic the question names (whole words, any case).
    """
    if any(verdict["verdict"] == "handoff" for verdict in rails):
        return [HANDOFF]
    flags = [f"rail:{verdict['rail']}" for verdict in rails if verdict["verdict"] == "flag"]
    if not sources or max(source["score"] for source in sources) < min_score:
        flags.append(LOW_CONFIDENCE)
    for topic in topics:
        words = topic.split()
        pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)"
        if words and re.search(pattern, question, re.IGNORECASE):
            flags.append(f"topic:{' '.join(words).lower()}")
    return list(dict.fromkeys(flags))


@dataclass(frozen=True)
class Decision:
    """What a reviewer's ``HumanResponse`` means for the review row."""

    status: ReviewStatus
    final_text: str | None
    reason: str | None


def decision_of(response: dict[str, Any], draft: str) -> Decision:
    """Read an Agent Inbox ``HumanResponse``: accept, edit (``args`` an action request with the new ``draft``),
    response (``args`` the reviewer's own answer) or ignore (``args`` the reason, if any)."""
    kind, args = response.get("type"), response.get("args")
    if kind == "accept":
        return Decision("approved", draft, None)
    if kind == "edit":
        edited = args["args"].get("draft") if isinstance(args, dict) and isinstance(args.get("args"), dict) else None
        if not isinstance(edited, str):
            raise ValueError(f"an edit response needs args={{'action': ..., 'args': {{'draft': text}}}}, got {args!r}")
        return Decision("edited", edited, None)
    if kind == "response":
        return Decision("responded", str(args), None)
    if kind == "ignore":
        return Decision("rejected", None, str(args) if args else None)
    raise ValueError(f"unknown review response {response!r}: expected type accept, edit, response or ignore")


@dataclass(frozen=True)
class Review:
    """One row of the queue."""

    id: str
    thread_id: str
    question: str
    draft: str
    payload: dict[str, Any]
    status: ReviewStatus
    reviewer: str | None
    final_text: str | None
    reason: str | None
    created_at: str
    decided_at: str | None
    flags: list[str]
    resume_claimed_at: str | None
    resumed_at: str | None

    @property
    def args(self) -> dict[str, Any]:
        """The action request's args: question, draft, sources, rail verdicts and flags."""
        return self.payload["action_request"]["args"]

    def summary(self) -> dict[str, Any]:
        """The ``review list --json`` shape."""
        return {
            "id": self.id,
            "thread_id": self.thread_id,
            "question": self.question,
            "draft": self.draft,
            "created_at": self.created_at,
            "flags": self.flags,
        }

    def response(self) -> dict[str, Any]:
        """The decision as the Agent Inbox ``HumanResponse`` that resumes the graph (the inverse of ``decision_of``)."""
        if self.status == "approved":
            return {"type": "accept", "args": None}
        if self.status == "edited":
            return {
                "type": "edit",
                "args": {
                    "action": self.payload["action_request"]["action"],
                    "args": self.args | {"draft": self.final_text},
                },
            }
        if self.status == "responded":
            return {"type": "response", "args": self.final_text}
        if self.status == "rejected":
            return {"type": "ignore", "args": self.reason}
        raise ValueError(f"review {self.id} is still pending: there is no decision to resume with")


@dataclass(frozen=True)
class AuditEntry:
    """One row of the append-only audit log."""

    id: int
    review_id: str
    thread_id: str
    actor: str
    action: AuditAction
    at: str
    before_text: str | None
    after_text: str | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        """The ``review log --json`` shape."""
        return asdict(self)


class ReviewQueue:
    """Reviews stored in the railgraph database."""

    _COLUMNS = (
        "id, thread_id, question, draft, payload, status, reviewer, final_text, reason, created_at, decided_at,"
        " flags, resume_claimed_at, resumed_at"
    )
    _AUDIT_COLUMNS = "id, review_id, thread_id, actor, action, at, before_text, after_text, reason"

    def __init__(self, db: Database) -> None:
        self.db = db

    def submit(
        self,
        review_id: str,
        thread_id: str,
        question: str,
        draft: str,
        payload: dict[str, Any],
        flags: Sequence[str] = (),
    ) -> None:
        """Queue a draft (and log it as ``submitted``); submitting the same id again changes nothing."""
        now = utc_now()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO reviews (id, thread_id, question, draft, payload, flags, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (review_id, thread_id, question, draft, json.dumps(payload), json.dumps(list(flags)), now),
            )
            if cursor.rowcount == 1:
                self._log(conn, review_id, thread_id, AGENT_ACTOR, "submitted", now, None, draft, None)

    def get(self, review_id: str) -> Review:
        """The review with this id; ``ReviewNotFound`` says how to find one."""
        rows = self.db.query(f"SELECT {self._COLUMNS} FROM reviews WHERE id = ?", (review_id,))
        if not rows:
            raise ReviewNotFound(f"no review with id {review_id!r}; `railgraph review list` shows the pending ones")
        return self._review(rows[0])

    def pending(self, *, older_than: timedelta | None = None, flag: str | None = None) -> list[Review]:
        """Pending reviews, oldest first; only those queued at least ``older_than`` ago, or carrying ``flag``."""
        sql = f"SELECT {self._COLUMNS} FROM reviews WHERE status = 'pending'"
        params: tuple[Any, ...] = ()
        if older_than is not None:
            sql, params = sql + " AND created_at <= ?", (utc_ago(older_than),)
        reviews = [self._review(row) for row in self.db.query(f"{sql} ORDER BY created_at, {_QUEUED}, id", params)]
        return [review for review in reviews if flag is None or flag in review.flags]

    def pending_for_thread(self, thread_id: str) -> Review | None:
        """The thread's review still waiting for a decision, if any."""
        rows = self.db.query(
            f"SELECT {self._COLUMNS} FROM reviews WHERE thread_id = ? AND status = 'pending' ORDER BY created_at DESC",
            (thread_id,),
        )
        return self._review(rows[0]) if rows else None

    def decide(
        self,
        review_id: str,
        decision: Decision,
        *,
        reviewer: str,
        claim: bool = True,
    ) -> Review:
        """Record a decision on a pending review and its audit row, in one transaction; return the decided review.

        With ``claim`` (a reviewer's command, which resumes the graph next) a review already decided raises
        ``AlreadyDecided``, and the decider takes the resume lease. Without it (the graph, resumed with this
        decision, recording it) a second recording is a no-op and the review counts as resumed.
        """
        now = utc_now()
        with self.db.transaction() as conn:
            rows = conn.execute(f"SELECT {self._COLUMNS} FROM reviews WHERE id = ?", (review_id,)).fetchall()
            if not rows:
                raise ReviewNotFound(f"no review with id {review_id!r}; `railgraph review list` shows the pending ones")
            review = self._review(rows[0])
            if review.status != "pending":
                if claim:
                    raise AlreadyDecided(
                        f"review {review_id} was already {review.status} by {review.reviewer or 'someone'}"
                        f" at {review.decided_at}"
                    )
                return review
            conn.execute(
                "UPDATE reviews SET status = ?, reviewer = ?, final_text = ?, reason = ?, decided_at = ?,"
                " resume_claimed_at = ?, resumed_at = ? WHERE id = ?",
                (
                    decision.status,
                    reviewer,
                    decision.final_text,
                    decision.reason,
                    now,
                    now,
                    None if claim else now,
                    review_id,
                ),
            )
            self._log(
                conn,
                review_id,
                review.thread_id,
                reviewer,
                decision.status,
                now,
                review.draft,
                decision.final_text,
                decision.reason,
            )
        return self.get(review_id)

    def unresumed(self, *, thread_id: str | None = None, stale_after: timedelta = RESUME_LEASE) -> list[Review]:
        """Decided reviews whose thread was never marked resumed, and whose resume lease is free or expired."""
        sql = (
            f"SELECT {self._COLUMNS} FROM reviews WHERE status <> 'pending' AND resumed_at IS NULL"
            " AND (resume_claimed_at IS NULL OR resume_claimed_at <= ?)"
        )
        params: tuple[Any, ...] = (utc_ago(stale_after),)
        if thread_id is not None:
            sql, params = sql + " AND thread_id = ?", (*params, thread_id)
        return [self._review(row) for row in self.db.query(f"{sql} ORDER BY decided_at, {_DECIDED}, id", params)]

    def claim_resume(self, review_id: str, *, stale_after: timedelta = RESUME_LEASE) -> bool:
        """Take the lease to resume a decided review's thread; False when someone holds it or it is done."""
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE reviews SET resume_claimed_at = ? WHERE id = ? AND status <> 'pending' AND resumed_at IS NULL"
                " AND (resume_claimed_at IS NULL OR resume_claimed_at <= ?)",
                (utc_now(), review_id, utc_ago(stale_after)),
            )
        return cursor.rowcount == 1

    def mark_resumed(self, review_id: str) -> None:
        """The decision has reached the thread; nobody needs to resume it again."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE reviews SET resumed_at = ? WHERE id = ? AND resumed_at IS NULL", (utc_now(), review_id)
            )

    def log(
        self, *, review_id: str | None = None, actor: str | None = None, since: timedelta | None = None
    ) -> list[AuditEntry]:
        """Audit rows, oldest first: of one review, by one actor, or written in the last ``since``."""
        conditions, params = [], []
        for column, value in (("review_id", review_id), ("actor", actor)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            conditions.append("at >= ?")
            params.append(utc_ago(since))
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self.db.query(f"SELECT {self._AUDIT_COLUMNS} FROM review_audit{where} ORDER BY id", tuple(params))
        return [AuditEntry(*row) for row in rows]

    def answered(self, *, since: timedelta | None = None) -> list[Review]:
        """Reviews that gave the user a reviewed answer (approved, edited or responded), in decision order."""
        sql = f"SELECT {self._COLUMNS} FROM reviews WHERE status IN ('approved', 'edited', 'responded')"
        params: tuple[Any, ...] = ()
        if since is not None:
            sql, params = sql + " AND decided_at >= ?", (utc_ago(since),)
        return [self._review(row) for row in self.db.query(f"{sql} ORDER BY decided_at, {_DECIDED}, id", params)]

    @staticmethod
    def _log(
        conn: Any,
        review_id: str,
        thread_id: str,
        actor: str,
        action: AuditAction,
        at: str,
        before_text: str | None,
        after_text: str | None,
        reason: str | None,
    ) -> None:
        conn.execute(
            "INSERT INTO review_audit (review_id, thread_id, actor, action, at, before_text, after_text, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (review_id, thread_id, actor, action, at, before_text, after_text, reason),
        )

    @staticmethod
    def _review(row: Any) -> Review:
        values = list(row)
        values[4] = json.loads(values[4])
        values[11] = json.loads(values[11])
        return Review(*values)


def chat_sample(review: Review, system_prompt: str) -> dict[str, Any]:
    """One line of ``review export --format chat-jsonl``: the question and the answer the user got, as an OpenAI
    chat fine-tuning sample (what axolotl, unsloth, LLaMA-Factory and torchtune read)."""
    return {
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": review.question},
            {"role": "assistant", "content": review.final_text or review.draft},
        ]
    }
