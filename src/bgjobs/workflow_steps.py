"""How a workflow's steps report back: the step running in this thread, its result kept, its
state (running, succeeded, failed with the reason, cancelled) for the run's status.

A workflow's records live beside its stages' batches (:mod:`bgjobs.batch_store`): in the
broker's Redis, RabbitMQ's coordination store, or this process for the stub broker. A step's
result is kept before its batch counts it, so the stage after it always finds it.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from pydantic import BaseModel

from .batch_store import KEEP_S, LocalBatches, store_for
from .errors import PermanentError
from .outage import patiently

__all__ = ["RESULT_LIMIT", "STEP", "WORKFLOW", "Records", "Workflows", "kept", "records_for", "step"]

WORKFLOW, STEP = "bgjobs_workflow", "bgjobs_step"
#: The largest result a step may return, as JSON: a larger one belongs in storage (return its key).
RESULT_LIMIT = 64 * 1024
#: How long a step's report waits out a store outage or failover before it gives up.
REPORT_PATIENCE_S = 30.0

#: The workflow step running in this thread: (workflow id, "stage.index").
step: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("bgjobs_step", default=None)
_result: contextvars.ContextVar[str | None] = contextvars.ContextVar("bgjobs_step_result", default=None)


def kept(result: Any) -> Any:
    """In a workflow step, hold ``result`` (as JSON) for its run and return None, so Dramatiq does
    not warn of a value with no results backend; elsewhere, ``result`` unchanged.

    Raises:
        PermanentError: the result is not JSON, or larger than :data:`RESULT_LIMIT`.
    """
    found = step.get()
    if found is None:
        return result
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    try:
        encoded = json.dumps(result, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"workflow step {found[1]}: its result is not JSON ({exc})") from None
    if len(encoded) > RESULT_LIMIT:
        raise PermanentError(
            f"workflow step {found[1]}: its result is {len(encoded)} bytes, over {RESULT_LIMIT}: "
            "store it (an export, your storage) and return its key"
        )
    _result.set(encoded)
    return None


class Records:
    """A workflow's hashes (its record, its results, its steps' states) and the index of runs."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client, self.prefix = client, prefix + "wf:"

    def put(self, key: str, fields: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.prefix + key, mapping=fields)
        pipe.expire(self.prefix + key, KEEP_S)
        pipe.execute()

    def get(self, key: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.client.hgetall(self.prefix + key).items()}

    def fields(self, key: str) -> set[str]:
        """The field names of hash ``key``, without its values (a run's results can be 64 KiB each)."""
        return {k.decode() for k in self.client.hkeys(self.prefix + key)}

    def index(self, id: str, at: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.prefix + "all", {id: at})
        pipe.zremrangebyscore(self.prefix + "all", "-inf", time.time() - KEEP_S)
        pipe.execute()

    def newest(self, limit: int) -> list[str]:
        return [i.decode() for i in self.client.zrevrange(self.prefix + "all", 0, max(0, limit - 1))]


class LocalRecords(Records):
    """The same in this process, for the stub broker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hashes: dict[str, dict[str, str]] = {}
        self._all: dict[str, float] = {}

    def put(self, key: str, fields: dict[str, str]) -> None:
        with self._lock:
            self._hashes.setdefault(key, {}).update(fields)

    def get(self, key: str) -> dict[str, str]:
        with self._lock:
            return dict(self._hashes.get(key, {}))

    def fields(self, key: str) -> set[str]:
        with self._lock:
            return set(self._hashes.get(key, {}))

    def index(self, id: str, at: float) -> None:
        with self._lock:
            self._all[id] = at

    def newest(self, limit: int) -> list[str]:
        with self._lock:
            return sorted(self._all, key=self._all.__getitem__, reverse=True)[:limit]


_records: dict[int, tuple[Any, Records]] = {}
_records_lock = threading.Lock()


def records_for(broker: dramatiq.Broker) -> Records:
    """The workflow records of ``broker``'s batch store (one per broker)."""
    store = store_for(broker)
    with _records_lock:
        found = _records.get(id(store))
        if found is None or found[0] is not store:
            made = LocalRecords() if isinstance(store, LocalBatches) else Records(store.client, store.prefix)  # type: ignore[attr-defined]
            found = _records[id(store)] = (store, made)
        return found[1]


class Workflows(Middleware):
    """Marks a workflow step running, succeeded with its result, failed with the reason, or
    cancelled. Its hooks run before :class:`bgjobs.batching.Batches` counts the step (Dramatiq runs
    "after" hooks in reverse order), so the next stage finds every result of this one."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        id = message.options.get(WORKFLOW)
        if id is not None:
            step.set((id, message.options[STEP]))
            _result.set(None)
            self._mark(broker, id, {message.options[STEP]: "running"})

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        id = message.options.get(WORKFLOW)
        if id is None:
            return
        if exception is None:
            name = message.options[STEP]
            self._mark(broker, id, {name: "succeeded"}, {name: _result.get() or "null"})
        step.set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        id = message.options.get(WORKFLOW)
        if id is not None:
            self._mark(broker, id, {message.options[STEP]: "cancelled"})
            step.set(None)

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        id = message.options.get(WORKFLOW)
        if id is not None:
            from .middleware import describe_failure

            why = describe_failure(message, getattr(message, "_exception", None))["reason"]
            self._mark(broker, id, {message.options[STEP]: f"failed\t{why}"})

    @staticmethod
    def _mark(
        broker: dramatiq.Broker, id: str, states: dict[str, str], results: dict[str, str] | None = None
    ) -> None:
        records = records_for(broker)

        def write() -> None:
            if results:
                records.put(f"{id}:results", results)
            records.put(f"{id}:steps", states)

        patiently(write, patience_s=REPORT_PATIENCE_S)
