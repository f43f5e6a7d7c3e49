"""The delivery path's SQL, built once and shared by the delivery and the operations on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update

from ..claims import Claims
from ._models import EndpointRow, WebhookAttempt, WebhookDelivery, WebhookMessage

__all__ = ["CLAIMS", "Row", "Statements", "read_messages", "read_row", "read_rows", "statements"]

#: A delivery is claimed while an attempt of it is made; ``delivered`` and ``failed`` are settled.
CLAIMS = Claims(WebhookDelivery.__table__, name="webhook delivery", final=frozenset({"delivered", "failed"}))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Row:
    """One delivery with its endpoint and message, as one attempt needs them."""

    delivery_id: str
    message_id: str
    endpoint_id: str
    status: str
    attempts: int
    lease_until: datetime | None
    url: str
    enabled: bool
    rate_limit: int | None
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None
    failing_since: datetime | None
    failures: int
    owner: str | None
    event_type: str
    body: str
    last_error: str | None


class Statements:
    """The delivery path's statements, built once (building costs more CPU than running them)."""

    def __init__(self) -> None:
        d: Any = WebhookDelivery.__table__  # type: ignore[attr-defined]
        e: Any = EndpointRow.__table__  # type: ignore[attr-defined]
        m: Any = WebhookMessage.__table__  # type: ignore[attr-defined]
        self.read = (
            select(d.c.id, d.c.message_id, d.c.endpoint_id, d.c.status, d.c.attempts, d.c.lease_until,
                   e.c.url, e.c.enabled, e.c.rate_limit, e.c.secret, e.c.previous_secret,
                   e.c.previous_secret_until, e.c.failing_since, e.c.failures, m.c.owner, m.c.event_type,
                   m.c.body, d.c.last_error)
            .join(e, e.c.id == d.c.endpoint_id).join(m, m.c.id == d.c.message_id)
        )  # fmt: skip
        self.read_one = self.read.where(d.c.id == bindparam("k"))
        self.read_some = self.read.where(d.c.id.in_(bindparam("ids", expanding=True)))
        #: A batch of messages' deliveries that may still need an attempt.
        self.read_messages = self.read.where(
            d.c.message_id.in_(bindparam("ids", expanding=True)), d.c.status.in_(("pending", "delivering"))
        )
        same = and_(
            d.c.id == bindparam("k"), d.c.attempts == bindparam("seen_attempts"),
            d.c.status == bindparam("seen_status"),
        )  # fmt: skip
        self.fail_unsent = update(d).where(same).values(
            status="failed", last_error=bindparam("error"), next_attempt_at=None,
            updated_at=bindparam("now"),
        )  # fmt: skip
        self.postpone = (
            update(d).where(d.c.id == bindparam("k"), d.c.status == "pending")
            .values(next_attempt_at=bindparam("next"))
        )  # fmt: skip
        self.log = insert(WebhookAttempt.__table__)  # type: ignore[attr-defined]
        self.healthy = update(e).where(e.c.id == bindparam("k")).values(failing_since=None, failures=0)
        self.disable = (
            update(e).where(e.c.id == bindparam("k"), e.c.enabled.is_(True))
            .values(enabled=False, disabled_reason=bindparam("reason"), disabled_at=bindparam("now"),
                    updated_at=bindparam("now"))
            .returning(e.c.url, e.c.owner)
        )  # fmt: skip
        self.failing = (
            update(e).where(e.c.id == bindparam("k"))
            .values(failures=e.c.failures + 1,
                    failing_since=func.coalesce(e.c.failing_since, bindparam("now")))
            .returning(e.c.failures, e.c.failing_since)
        )  # fmt: skip
        self.overdue = (
            select(d.c.id, d.c.endpoint_id, d.c.attempts, d.c.status).where(
                or_(and_(d.c.status == "pending", d.c.next_attempt_at < bindparam("before")),
                    and_(d.c.status == "delivering", d.c.lease_until < bindparam("before"))))
            .order_by(d.c.next_attempt_at).limit(bindparam("limit"))
        )  # fmt: skip


statements = Statements()


def read_row(conn: Any, delivery_id: str) -> Row | None:
    found = conn.execute(statements.read_one, {"k": delivery_id}).first()
    return None if found is None else Row(*found)


def read_messages(conn: Any, message_ids: list[str]) -> list[Row]:
    return [Row(*found) for found in conn.execute(statements.read_messages, {"ids": message_ids})]


def read_rows(conn: Any, delivery_ids: list[str]) -> dict[str, Row]:
    return {found[0]: Row(*found) for found in conn.execute(statements.read_some, {"ids": delivery_ids})}
