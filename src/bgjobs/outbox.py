"""The transactional outbox: a job exists if and only if the host's transaction commits.

``defer(session, target, payload)`` adds a row in the caller's own SQLAlchemy/SQLModel
session. A relay moves committed rows to the broker in id order, in batches, and marks
them sent. At-least-once: a relay killed between enqueue and mark-sent sends those rows
again, so every message carries its row's key (``outbox:<id>``); receivers guard their
effect with ``idempotency.claim(session, delivery_key())`` to drop the duplicate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import dramatiq
from pydantic import BaseModel
from sqlalchemy import Engine, event
from sqlmodel import Field, Session, SQLModel, col, select

from . import db, events, retention, runtime, tracing
from .batching import BATCH, INDEX, Batch, building
from .clock import now as _now
from .errors import ConfigurationError, check_size
from .jobs import JobContext, job
from .outage import is_connection_error, report
from .redis_broker import WAKE_CAP
from .settings import OutboxSettings
from .typed import TypedActor, registered, send_messages

__all__ = ["OutboxRow", "Relay", "backlog", "defer", "pending", "relay_once", "relay_sweep"]

logger = logging.getLogger("bgjobs.outbox")

_WAKE_HOOKED = "bgjobs_outbox_wake_hooked"
_JOINED, _JOIN_HOOKED = "bgjobs_outbox_batch_places", "bgjobs_outbox_batch_hooked"

#: Seconds a SQLite relay's Redis lock outlives a relay that died holding it.
RELAY_LOCK_TIMEOUT_S = 5


class OutboxRow(SQLModel, table=True):
    __tablename__ = "bgjobs_outbox"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=8)  # "actor" or "event"
    target: str = Field(max_length=200)
    payload: str
    created_at: datetime = Field(default_factory=_now)
    sent_at: datetime | None = Field(default=None, index=True)
    #: The trace context of the transaction that deferred it (with tracing on), which its message
    #: continues when the relay sends it.
    trace: str | None = Field(default=None, max_length=1000)
    #: The batch a job deferred inside a ``bgjobs.batch()`` block joins, and its index there
    #: (``b_...:12``): the relay puts them on the job's message.
    batch: str | None = Field(default=None, max_length=64)


retention.keep("bgjobs.outbox", "bgjobs_outbox", "sent_at", days=lambda s: s.cleanup.outbox_days,
               where=lambda t: t.c.sent_at.isnot(None))  # fmt: skip


def defer(
    session: Session, target: TypedActor[Any, Any] | str, payload: BaseModel | Mapping[str, Any]
) -> OutboxRow:
    """Queue a job (a typed actor) or an event (its name) inside the caller's transaction.

    The payload is validated now (against the actor's model, or the event's declared one), so a
    bad one fails the host's request, not the relay.

    Raises:
        InvalidPayload: the payload does not validate; nothing is added.
    """
    if isinstance(target, TypedActor):
        data = target.validate(payload).model_dump(mode="json")
        row = OutboxRow(kind="actor", target=target.name, payload=json.dumps(data))
    else:
        checked = events.validate(target, payload)
        data = checked.model_dump(mode="json") if isinstance(checked, BaseModel) else dict(checked)
        row = OutboxRow(kind="event", target=target, payload=json.dumps(data))

    check_size(row.target, len(row.payload.encode()), runtime.current().settings.worker.max_message_bytes)
    row.trace = tracing.deferred_context()
    if row.kind == "actor" and (open_batch := building.get()) is not None:
        row.batch = _join(session, open_batch)
    session.add(row)
    if not session.info.get(_WAKE_HOOKED):
        session.info[_WAKE_HOOKED] = True
        event.listen(session, "after_commit", _wake_relay)
    return row


def _join(session: Session, open_batch: Batch) -> str:
    """A place in the open batch for a deferred job, counted now (its batch cannot complete before
    the row is relayed and the job run) and given back if the host's transaction rolls back."""
    index = open_batch._store.reserve(open_batch.id, 1, counted=True)
    if not session.info.get(_JOIN_HOOKED):
        session.info[_JOIN_HOOKED] = True
        event.listen(session, "after_commit", lambda s: s.info.pop(_JOINED, None))
        event.listen(session, "after_rollback", _give_back)
    session.info.setdefault(_JOINED, []).append((open_batch, index))
    return f"{open_batch.id}:{index}"


def _give_back(session: Session) -> None:
    for open_batch, index in session.info.pop(_JOINED, []):
        open_batch._store.settle(open_batch.id, index, "cancelled")


def _wake_relay(session: Session) -> None:
    """After the host's commit, wake an idle relay so the rows go out in milliseconds.

    Only a hint: if it is lost (no Redis broker, a network blip), the relay's poll finds the rows.
    """

    try:
        runtime.current().coordination.wake(WAKE_LIST, cap=WAKE_CAP)
    except Exception:
        logger.warning(
            "could not wake the outbox relay; it will find the rows on its next poll", exc_info=True
        )


#: The list an idle relay waits on; each commit that deferred work leaves a token there.
WAKE_LIST = "__bgjobs_outbox_wake__"


def _messages(row: OutboxRow) -> list[dramatiq.Message[Any]]:
    data = json.loads(row.payload)
    delivery_key = f"outbox:{row.id}"
    if row.kind == "actor":
        typed = registered().get(row.target)
        if typed is None:
            raise ConfigurationError(f"outbox row {row.id} targets unknown actor {row.target!r}")
        message = typed.message(data, bgjobs_key=delivery_key)
    else:  # events expand in the worker that takes their fan-out, like a published event's
        message = events.fanout_message(row.target, data, delivery_key=delivery_key)
    if row.trace:
        message.options[tracing.OPTION] = json.loads(row.trace)
    if row.batch:
        batch_id, index = row.batch.rsplit(":", 1)
        message.options.update({BATCH: batch_id, INDEX: int(index)})
    return [message]


def relay_once(*, engine: Engine | None = None, batch_size: int = 500) -> int:
    """Send one batch of committed, unsent rows; returns how many rows were sent.

    On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED``, so relays running
    in parallel never send the same row. SQLite has one writer at a time.
    """

    engine = engine or db.get_engine()
    with db.session(engine) as s:
        query = select(OutboxRow).where(col(OutboxRow.sent_at).is_(None)).order_by(col(OutboxRow.id))
        query = query.limit(batch_size)
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(s.exec(query))
        if not rows:
            return 0
        messages = [m for row in rows for m in _messages(row)]
        send_messages(runtime.current().broker, messages)
        now = _now()
        for row in rows:
            row.sent_at = now
            s.add(row)
    return len(rows)


def pending(*, engine: Engine | None = None) -> int:
    """Rows committed and not yet relayed."""
    from sqlalchemy import func

    with db.session(engine) as s:
        return int(s.exec(select(func.count()).where(col(OutboxRow.sent_at).is_(None))).one())


def backlog(*, engine: Engine | None = None) -> tuple[int, datetime | None]:
    """Rows not yet relayed, and when the oldest of them was committed (None: no backlog)."""
    from sqlalchemy import func

    with db.session(engine) as s:
        count, oldest = s.exec(
            select(func.count(), func.min(OutboxRow.created_at)).where(col(OutboxRow.sent_at).is_(None))
        ).one()
    return int(count), db.aware(oldest) if oldest is not None else None


@job("outbox.relay", schedule="* * * * *")
def relay_sweep(ctx: JobContext) -> dict[str, int]:
    """The scheduled sweep behind the in-worker relay: drains whatever is left."""

    return {"sent": Relay.from_settings(runtime.current().settings.outbox).run(until_empty=True)}


class Relay:
    """The relay loop a worker process runs in a thread (and ``bgjobs outbox relay`` in the foreground)."""

    def __init__(self, *, interval_s: float, batch_size: int, engine: Engine | None = None) -> None:
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.engine = engine
        self.stopped = threading.Event()

    @classmethod
    def from_settings(cls, settings: OutboxSettings, *, batch_size: int | None = None) -> Relay:
        return cls(interval_s=settings.poll_interval_ms / 1000, batch_size=batch_size or settings.batch_size)

    def _once(self) -> int:
        engine = self.engine or db.get_engine()
        if engine.dialect.name == "postgresql":
            return relay_once(engine=engine, batch_size=self.batch_size)
        # SQLite cannot skip locked rows: let one relay at a time read the batch. The lock is
        # short-lived so a killed relay holds up the others for seconds, not minutes.
        with runtime.current().coordination.mutex("bgjobs-outbox-relay", ttl_s=RELAY_LOCK_TIMEOUT_S) as mine:
            return relay_once(engine=engine, batch_size=self.batch_size) if mine else 0

    def run(self, *, until_empty: bool = False) -> int:
        sent, failures = 0, 0
        while not self.stopped.is_set():
            try:
                n = self._once()
                failures = 0
            except Exception as exc:
                failures += 1
                if is_connection_error(exc):
                    report(exc, log=logger)
                elif failures in (1, 10) or failures % 100 == 0:
                    logger.exception("outbox relay failed (%d in a row); retrying", failures)
                self.stopped.wait(min(self.interval_s * 2**failures, 30))
                continue
            sent += n
            if n:
                continue
            if until_empty:
                break
            self._idle()
        return sent

    def _idle(self) -> None:
        """Wait for a commit's wake-up, or at most one poll interval."""

        if self.interval_s <= 0:
            return
        with contextlib.suppress(Exception):  # a Redis hiccup only means polling
            runtime.current().coordination.wait(WAKE_LIST, timeout_s=min(self.interval_s, 1.0))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="bgjobs-outbox-relay", daemon=True)
        thread.start()
        return thread


class OutboxRelay(dramatiq.Middleware):
    """Relays committed outbox rows from every worker process, polling at idle."""

    def __init__(self, settings: OutboxSettings) -> None:
        self.settings = settings
        self._relay: Relay | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._relay = Relay.from_settings(self.settings)
        self._relay.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if self._relay is not None:
            self._relay.stopped.set()
