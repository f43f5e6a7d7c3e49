"""Batch jobs, events and outbox targets used by the tests."""

from __future__ import annotations

import threading
import time

import redis
from dramatiq.middleware import CurrentMessage
from sqlmodel import Field, SQLModel, func, select

import bgjobs
from bgjobs import db, events, idempotency
from bgjobs.jobs import JobArguments, JobContext, job
from bgjobs.settings import get_settings

seen: list[str] = []
_lock = threading.Lock()


class Delivery(SQLModel, table=True):
    """One row per effect; the outbox and event tests count them."""

    __tablename__ = "test_deliveries"

    id: int | None = Field(default=None, primary_key=True)
    what: str
    key: str | None = None


class BookingCreated(bgjobs.Payload):
    booking_id: int
    email: str


events.declare("order.placed", BookingCreated)


@events.on("order.placed")
@bgjobs.actor(queue="notifications")
def confirm_booking(payload: BookingCreated) -> None:
    with _lock:
        seen.append(f"confirm:{payload.booking_id}")


@events.on("order.*")
@bgjobs.actor(queue="webhooks")
def booking_webhook(payload: BookingCreated) -> None:
    with _lock:
        seen.append(f"webhook:{payload.booking_id}")


class Note(bgjobs.Payload):
    text: str


@bgjobs.actor(queue="default")
def record_note(payload: Note) -> None:
    """The effect is guarded by the delivery key, in the same transaction."""
    with db.session() as s:
        key = bgjobs.delivery_key()
        if key is not None and not idempotency.claim(s, key, scope="test"):
            return
        s.add(Delivery(what=payload.text, key=key))


def deliveries() -> list[Delivery]:
    with db.session() as s:
        return list(s.exec(select(Delivery)))


def delivery_count() -> int:
    with db.session() as s:
        return int(s.exec(select(func.count()).select_from(Delivery)).one())


class CountArguments(JobArguments):
    n: int = 3
    fail: str | None = None
    sleep: float | None = None


class PartsArguments(JobArguments):
    parts: int = 1


@job("tests.count_things", time_budget=5, arguments=CountArguments)
def count_things(ctx: JobContext) -> dict[str, int]:
    n = int(ctx.args.get("n", "3"))
    ctx.counts["seen"] = n
    if ctx.args.get("fail"):
        raise RuntimeError("the reconciliation source is down")
    if ctx.args.get("sleep"):
        time.sleep(float(ctx.args["sleep"]))
    return {"processed": n, "remaining": 0}


@job("tests.in_parts", arguments=PartsArguments)
def in_parts(ctx: JobContext) -> dict[str, int]:
    """Does one part per run and asks for a follow-up until none is left."""
    left = int(ctx.args.get("parts", "1")) - 1
    if left:
        ctx.continue_later(parts=str(left))
    return {"left": left}


@job("tests.tick", schedule="@every 1s")
def tick(ctx: JobContext) -> dict[str, int]:
    settings = get_settings()
    client = redis.Redis.from_url(settings.coordination_url or settings.broker_url)
    message = CurrentMessage.get_current_message()
    scheduled_for = message.args[0].get("scheduled_for") if message is not None else None
    client.rpush("test:ticks", f"{ctx.trigger}:{scheduled_for}")
    return {"ticks": 1}


def create_tables() -> None:
    db.upgrade()
    SQLModel.metadata.create_all(db.get_engine(), tables=[Delivery.__table__])  # type: ignore[attr-defined]


@job("tests.sweep", time_budget=0.3)
def sweep(ctx: JobContext) -> dict[str, int]:
    """Works through 1,000 items at 10 ms each, stopping when its budget is spent."""
    done = 0
    while done < 1_000 and not ctx.out_of_time:
        time.sleep(0.01)
        done += 1
    return {"swept": done, "remaining": 1_000 - done}
