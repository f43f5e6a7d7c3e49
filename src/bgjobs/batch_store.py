"""Where batches keep their counts: the broker's Redis (one script per change), RabbitMQ's
coordination store, or this process.

:class:`RedisBatches` keeps a hash and two bitmaps per batch (``batch.lua`` says what is in them):
O(1) per batch, and one bit per job (two for a job counted as failed). Counting a job and, when
it was the last, enqueuing the callbacks happen in one script, so a worker killed at any line
neither counts a job twice nor loses or doubles a callback. :class:`RabbitBatches` counts the
same way in the coordination store and relays the callbacks to RabbitMQ. :class:`LocalBatches`
does the same under a lock, for the stub broker of tests.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from uuid import uuid4

import dramatiq

__all__ = ["BatchStatus", "BatchStore", "LocalBatches", "RabbitBatches", "RedisBatches", "store_for"]

_SCRIPT = resources.files("bgjobs").joinpath("batch.lua").read_text()
#: How long a finished batch's counts are kept (and an open one's, at most).
KEEP_S = 7 * 24 * 3600
#: Indices a batch block takes from the store at a time: one round trip per this many sends.
CHUNK = 1000


@dataclass(frozen=True)
class BatchStatus:
    """A batch as :func:`bgjobs.batches.status` reads it."""

    id: str
    description: str
    #: ``open`` (its block is still sending), ``running``, or ``done`` (every job counted).
    state: str
    total: int
    pending: int
    succeeded: int
    #: Dead-lettered (a requeued one that then succeeds moves to ``succeeded``).
    failed: int
    #: Skipped after :func:`bgjobs.batches.cancel`, never run.
    cancelled: int
    cancel_requested: bool
    parent: str | None
    created_at: datetime
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, times in ISO 8601 (``bgjobs batches --json``, the console's API)."""
        found = dataclasses.asdict(self)
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in found.items()}


def _status(id: str, found: dict[str, str]) -> BatchStatus:
    total, ok, bad, skipped = (int(found.get(k) or 0) for k in ("total", "succeeded", "failed", "cancelled"))
    finished = found.get("finished_at")
    return BatchStatus(
        id=id, description=found.get("description", ""), state=found.get("state", "open"), total=total,
        pending=total - ok - bad - skipped, succeeded=ok, failed=bad, cancelled=skipped,
        cancel_requested=found.get("cancel") == "1", parent=found.get("parent") or None,
        created_at=datetime.fromtimestamp(float(found["created_at"]), UTC),
        finished_at=datetime.fromtimestamp(float(finished), UTC) if finished else None,
    )  # fmt: skip


def _callback_fields(kind: str, message: dramatiq.Message[Any] | None) -> dict[str, str]:
    if message is None:
        return {}
    message = message.copy(options={**message.options, "redis_message_id": str(uuid4())})
    return {f"{kind}_queue": message.queue_name, f"{kind}_id": message.options["redis_message_id"],
            f"{kind}_data": message.encode().decode()}  # fmt: skip


class BatchStore(abc.ABC):
    def create(
        self, id: str, *, description: str, parent: tuple[str, int] | None,
        on_success: dramatiq.Message[Any] | None, on_complete: dramatiq.Message[Any] | None,
        reserved: int = 0,
    ) -> None:  # fmt: skip
        """``reserved``: job indices taken at creation (a workflow's stage numbers its own steps)."""
        fields = {"state": "open", "description": description, "total": "0", "succeeded": "0", "failed": "0",
                  "cancelled": "0", "next": str(reserved), "created_at": repr(time.time()),
                  **_callback_fields("success", on_success),
                  **_callback_fields("complete", on_complete)}  # fmt: skip
        if parent is not None:
            fields.update(parent=parent[0], parent_index=str(parent[1]))
        self._create(id, fields)

    @abc.abstractmethod
    def _create(self, id: str, fields: dict[str, str]) -> None: ...

    @abc.abstractmethod
    def reserve(self, id: str, count: int, *, counted: bool) -> int:
        """Take ``count`` job indices of batch ``id``; the first. ``counted`` adds them to its total
        (a job added by a running job; a block's jobs are counted when it ends)."""

    @abc.abstractmethod
    def close(self, id: str, count: int) -> None:
        """The block that made batch ``id`` has ended, having sent ``count`` jobs."""

    @abc.abstractmethod
    def settle(self, id: str, index: int, outcome: str) -> bool:
        """Count job ``index`` as ``succeeded``, ``failed`` or ``cancelled``; False if it was already."""

    @abc.abstractmethod
    def read(self, id: str) -> dict[str, str]: ...

    @abc.abstractmethod
    def set_cancel(self, id: str) -> None: ...

    @abc.abstractmethod
    def has_run(self, message_id: str) -> bool:
        """True once the callback message ``message_id`` has run to its end."""

    @abc.abstractmethod
    def ran(self, message_id: str) -> None: ...

    def is_cancelled(self, id: str) -> bool:
        return self.read(id).get("cancel") == "1"

    def relay(self) -> int:
        """Send the callbacks waiting to be sent (only RabbitMQ's wait); how many were sent."""
        return 0

    def status(self, id: str) -> BatchStatus | None:
        found = self.read(id)
        return _status(id, found) if found else None

    @abc.abstractmethod
    def recent(self, limit: int) -> list[BatchStatus]:
        """The newest batches first (those not expired)."""


def _shown(fields: dict[bytes, bytes]) -> dict[str, str]:
    """A batch's hash as read from Redis, without the callbacks' messages."""
    return {k.decode(): v.decode() for k, v in fields.items() if not k.endswith(b"_data")}


class RedisBatches(BatchStore):
    #: Callbacks are written onto the broker's queues in the counting script.
    mode = "enqueue"

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.client, self.namespace = broker.client, broker.namespace
        self.prefix = f"{broker.namespace}:bgjobs-batch:"
        self._script = self.client.register_script(_SCRIPT)

    def _create(self, id: str, fields: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.prefix + id, mapping=fields)
        pipe.expire(self.prefix + id, KEEP_S)
        pipe.zadd(self.prefix + "all", {id: float(fields["created_at"])})
        pipe.zremrangebyscore(self.prefix + "all", "-inf", time.time() - KEEP_S)
        pipe.execute()

    def recent(self, limit: int) -> list[BatchStatus]:
        ids = [i.decode() for i in self.client.zrevrange(self.prefix + "all", 0, max(0, limit - 1))]
        pipe = self.client.pipeline(transaction=False)
        for id in ids:
            pipe.hgetall(self.prefix + id)
        found = []
        for id, fields in zip(ids, pipe.execute(), strict=True):
            if fields:  # an expired one leaves its id until the next create trims it
                found.append(_status(id, _shown(fields)))
        return found

    def reserve(self, id: str, count: int, *, counted: bool) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(self.prefix + id, "next", count)
        if counted:
            pipe.hincrby(self.prefix + id, "total", count)
        return int(pipe.execute()[0]) - count

    def _run(self, *args: Any) -> int:
        from .redis_broker import WAKE_CAP

        done = int(self._script(keys=[self.namespace], args=[self.prefix, WAKE_CAP, repr(time.time()), KEEP_S,
                                                                self.mode, *args]))  # fmt: skip
        if done & 2:
            self.relay()
        return done & 1

    def close(self, id: str, count: int) -> None:
        self._run("close", id, count, "")

    def settle(self, id: str, index: int, outcome: str) -> bool:
        return bool(self._run("settle", id, index, outcome))

    def has_run(self, message_id: str) -> bool:
        return bool(self.client.exists(f"{self.prefix}ran:{message_id}"))

    def ran(self, message_id: str) -> None:
        self.client.set(f"{self.prefix}ran:{message_id}", "1", ex=KEEP_S)

    def read(self, id: str) -> dict[str, str]:
        return _shown(self.client.hgetall(self.prefix + id))

    def set_cancel(self, id: str) -> None:
        self.client.hset(self.prefix + id, "cancel", "1")

    def is_cancelled(self, id: str) -> bool:
        return bool(self.client.hget(self.prefix + id, "cancel") == b"1")


class RabbitBatches(RedisBatches):
    """Counts in the coordination store; callbacks pushed there in the counting script, then
    published to RabbitMQ by the worker that counted the last job (or, if it died first, by any
    worker's maintenance within a second). A callback published twice (its relay killed between
    the publish and the removal) runs once: its run is marked done, and a copy that finds the mark
    is skipped."""

    mode = "due"

    def relay(self) -> int:
        due, sent = self.prefix + "due", 0
        lock = self.client.set(self.prefix + "relaying", "1", nx=True, px=10_000)
        if not lock:
            return 0  # another worker relays now
        try:
            while (data := self.client.lindex(due, 0)) is not None:
                self.broker.enqueue(dramatiq.Message.decode(data))
                self.client.lpop(due)
                sent += 1
        finally:
            self.client.delete(self.prefix + "relaying")
        return sent


class LocalBatches(BatchStore):
    """The same counts in this process (the stub broker's), callbacks sent through the broker."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self._lock = threading.Lock()
        self._batches: dict[str, dict[str, Any]] = {}
        self._ran: set[str] = set()

    def _create(self, id: str, fields: dict[str, str]) -> None:
        with self._lock:
            self._batches[id] = {**fields, "done": set(), "failed_jobs": set()}

    def reserve(self, id: str, count: int, *, counted: bool) -> int:
        with self._lock:
            b = self._batches[id]
            first = int(b["next"])
            b["next"] = str(first + count)
            if counted:
                b["total"] = str(int(b["total"]) + count)
            return first

    def close(self, id: str, count: int) -> None:
        with self._lock:
            b = self._batches.get(id)
            if b is None:
                return
            b["total"] = str(int(b["total"]) + count)
            if b["state"] == "open":
                b["state"] = "running"
            due = self._finish(id)
        self._send(due)

    def settle(self, id: str, index: int, outcome: str) -> bool:
        with self._lock:
            counted, due = self._settle(id, index, outcome)
        self._send(due)
        return counted

    def _settle(self, id: str, index: int, outcome: str) -> tuple[bool, list[dict[str, str]]]:
        b = self._batches.get(id)
        if b is None:
            return False, []
        if index in b["done"]:
            if outcome != "succeeded" or index not in b["failed_jobs"]:
                return False, []
            b["failed_jobs"].discard(index)
            b["failed"] = str(int(b["failed"]) - 1)
        else:
            b["done"].add(index)
            if outcome == "failed":
                b["failed_jobs"].add(index)
        b[outcome] = str(int(b[outcome]) + 1)
        return True, self._finish(id)

    def _finish(self, id: str) -> list[dict[str, str]]:
        b = self._batches[id]
        total, ok = int(b["total"]), int(b["succeeded"])
        if b["state"] == "open" or ok + int(b["failed"]) + int(b["cancelled"]) < total:
            return []
        if b["state"] == "running":
            b.update(state="done", finished_at=repr(time.time()))
        due = []
        for kind in ("complete", "success") if ok == total else ("complete",):
            if b.get(f"{kind}_sent") != "1":
                b[f"{kind}_sent"] = "1"
                if f"{kind}_data" in b:
                    due.append({"data": b[f"{kind}_data"]})
        if b.get("parent"):
            outcome = "succeeded" if ok == total else "failed"
            counted, more = self._settle(b["parent"], int(b["parent_index"]), outcome)
            due += more if counted else []
        return due

    def _send(self, due: list[dict[str, str]]) -> None:
        for callback in due:
            self.broker.enqueue(dramatiq.Message.decode(callback["data"].encode()))

    def read(self, id: str) -> dict[str, str]:
        with self._lock:
            b = self._batches.get(id)
            if b is None:
                return {}
            return {k: v for k, v in b.items() if isinstance(v, str) and not k.endswith("_data")}

    def set_cancel(self, id: str) -> None:
        with self._lock:
            if id in self._batches:
                self._batches[id]["cancel"] = "1"

    def has_run(self, message_id: str) -> bool:
        with self._lock:
            return message_id in self._ran

    def ran(self, message_id: str) -> None:
        with self._lock:
            self._ran.add(message_id)

    def recent(self, limit: int) -> list[BatchStatus]:
        with self._lock:
            ids = sorted(self._batches, key=lambda i: float(self._batches[i]["created_at"]), reverse=True)
        return [s for s in (self.status(i) for i in ids[:limit]) if s is not None]


_stores: dict[int, tuple[Any, BatchStore]] = {}
_stores_lock = threading.Lock()


def store_for(broker: dramatiq.Broker) -> BatchStore:
    """The batch store of ``broker`` (one per broker).

    Raises:
        ConfigurationError: a RabbitMQ broker; batches need the Redis broker (or the stub) for now.
    """
    from .errors import ConfigurationError
    from .operated import OperatedBroker
    from .redis_broker import BgjobsRedisBroker

    with _stores_lock:
        found = _stores.get(id(broker))
        if found is not None and found[0] is broker:
            return found[1]
        if isinstance(broker, BgjobsRedisBroker):
            store: BatchStore = RedisBatches(broker)
        elif isinstance(broker, OperatedBroker):  # RabbitMQ, with its coordination store
            store = RabbitBatches(broker)
        elif type(broker).__name__ == "StubBroker":
            store = LocalBatches(broker)
        else:
            raise ConfigurationError(
                f"batches need bgjobs's Redis or RabbitMQ broker (or the stub), not {type(broker).__name__}"
            )
        _stores[id(broker)] = (broker, store)
        return store
