"""The review queue: drafts waiting for a human, and the decisions taken on them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from agent.db import Database

ReviewStatus = Literal["pending", "approved", "edited", "responded", "rejected"]


class ReviewNotFound(LookupError):
    """No review has this id."""


class AlreadyDecided(RuntimeError):
    """Someone decided this review first; a second decision would contradict it."""


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

    def summary(self) -> dict[str, Any]:
        """The ``review list --json`` shape."""
        return {
            "id": self.id,
            "thread_id": self.thread_id,
            "question": self.question,
            "draft": self.draft,
            "created_at": self.created_at,
        }


class ReviewQueue:
    """Reviews stored in the railgraph database."""

    _COLUMNS = "id, thread_id, question, draft, payload, status, reviewer, final_text, reason, created_at, decided_at"

    def __init__(self, db: Database) -> None:
        self.db = db

    def submit(self, review_id: str, thread_id: str, question: str, draft: str, payload: dict[str, Any]) -> None:
        """Queue a draft; submitting the same id again changes nothing (a resumed node re-runs this)."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO reviews (id, thread_id, question, draft, payload) VALUES (?, ?, ?, ?, ?)",
                (review_id, thread_id, question, draft, json.dumps(payload)),
            )

    def get(self, review_id: str) -> Review:
        rows = self.db.query(f"SELECT {self._COLUMNS} FROM reviews WHERE id = ?", (review_id,))
        if not rows:
            raise ReviewNotFound(f"no review with id {review_id!r}; `railgraph review list` shows the pending ones")
        return self._review(rows[0])

    def pending(self) -> list[Review]:
        """Pending reviews, oldest first."""
        rows = self.db.query(f"SELECT {self._COLUMNS} FROM reviews WHERE status = 'pending' ORDER BY created_at, rowid")
        return [self._review(row) for row in rows]

    def decide(
        self,
        review_id: str,
        status: ReviewStatus,
        *,
        reviewer: str | None,
        final_text: str | None = None,
        reason: str | None = None,
        claim: bool = True,
    ) -> None:
        """Record a decision on a pending review.

        With ``claim`` (a reviewer's command) a review already decided raises ``AlreadyDecided``; without it
        (the graph recording a decision it was resumed with) a second recording is a no-op.
        """
        self.get(review_id)
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE reviews SET status = ?, reviewer = COALESCE(?, reviewer), final_text = ?, reason = ?,"
                " decided_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ? AND status = 'pending'",
                (status, reviewer, final_text, reason, review_id),
            )
        if cursor.rowcount == 0 and claim:
            decided = self.get(review_id)
            raise AlreadyDecided(
                f"review {review_id} was already {decided.status} by {decided.reviewer or 'someone'}"
                f" at {decided.decided_at}"
            )

    @staticmethod
    def _review(row: Any) -> Review:
        values = list(row)
        values[4] = json.loads(values[4])
        return Review(*values)
