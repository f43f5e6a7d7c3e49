"""Actors the batch tests run, in the test process (stub broker) and in real workers
(``BGJOBS_JOBS=["tests.support.batch_actors"]``). Each run is a line in ``TEST_RUNS_FILE`` (or,
without it, an entry in :data:`RUNS`): a job that ran twice shows twice."""

from __future__ import annotations

import os
import threading
import time

import bgjobs

RUNS: list[str] = []
_lock = threading.Lock()
#: Retried (a Redis failover can fail a read), but a PermanentError is final: "fail" keys are.
RETRIED = {"max_retries": 5, "min_backoff": 100, "max_backoff": 1000}


class Item(bgjobs.Payload):
    key: str
    sleep_s: float = 0.0
    children: int = 0
    #: Sent again for later, handing its place in the batch to the copy (``bgjobs.batching.carry``).
    again: bool = False


def _note(line: str) -> None:
    where = os.environ.get("TEST_RUNS_FILE")
    if where:
        with open(where, "a") as runs:
            runs.write(line + "\n")
    else:
        with _lock:
            RUNS.append(line)


@bgjobs.actor(queue="default", **RETRIED)
def item(payload: Item) -> None:
    """Runs once per delivery; ``fail*`` keys fail for good; ``children`` adds that many jobs to
    its own batch, or, as a nested batch, with ``nested`` in its key."""
    if payload.key.startswith("fail"):
        raise bgjobs.PermanentError(f"{payload.key} fails")
    if payload.again:
        from bgjobs.batching import carry

        item.send(payload.model_copy(update={"again": False}), delay=60_000, **carry())
        _note(f"{payload.key} postponed")
        return
    if payload.key.startswith("nested") and payload.children:
        with bgjobs.batch(on_complete=done.message(Item(key=f"{payload.key}:inner-complete"))):
            for n in range(payload.children):
                item.send(Item(key=f"{payload.key}.{n}"))
    elif payload.children:
        running = bgjobs.current_batch()
        assert running is not None
        for n in range(payload.children):
            running.send(item.message(Item(key=f"{payload.key}.{n}")))
    time.sleep(payload.sleep_s)
    if bgjobs.cancelled():
        _note(f"{payload.key} stopped")
        return
    _note(payload.key)


@bgjobs.actor(queue="default", **RETRIED)
def done(payload: Item) -> None:
    """A callback: notes its key with the batch's counts."""
    running = bgjobs.current_batch()
    assert running is not None
    s = running.status()
    _note(f"{payload.key} total={s.total} succeeded={s.succeeded} failed={s.failed} cancelled={s.cancelled}")


class Step(bgjobs.Payload):
    key: str
    sleep_s: float = 0.0
    #: Bytes of padding in its result (a result over the bound fails the step).
    pad: int = 0


def _ran(line: str) -> bool:
    where = os.environ.get("TEST_RUNS_FILE")
    if where:
        return os.path.exists(where) and line in open(where).read().splitlines()
    with _lock:
        return line in RUNS


@bgjobs.actor(queue="default", **RETRIED)
def step(payload: Step) -> dict[str, object]:
    """A workflow's step: notes its key and the keys of the results before it, returns its own.
    Keys with ``fail-once`` fail on their first run only, so a requeue succeeds; with ``fail``, always."""
    before = [r["key"] for stage in bgjobs.workflow_results() for r in stage]
    time.sleep(payload.sleep_s)
    if "fail-once" in payload.key and not _ran(f"{payload.key} failed"):
        _note(f"{payload.key} failed")
        raise bgjobs.PermanentError(f"{payload.key} fails once")
    if "fail" in payload.key and "fail-once" not in payload.key:
        raise bgjobs.PermanentError(f"{payload.key} fails")
    if bgjobs.cancelled():
        _note(f"{payload.key} stopped")
        return {"key": payload.key}
    _note(f"{payload.key} after {','.join(sorted(before))}")
    return {"key": payload.key, "pad": "x" * payload.pad}


@bgjobs.actor(queue="default", max_retries=3, min_backoff=10, max_backoff=20)
def flaky_step(payload: Step) -> dict[str, object]:
    """A workflow's step that fails its first attempt (a retry) and succeeds on the next."""
    if not _ran(f"{payload.key} attempt"):
        _note(f"{payload.key} attempt")
        raise bgjobs.TransientError(f"{payload.key}: first attempt")
    _note(f"{payload.key} after retry")
    return {"key": payload.key}


@bgjobs.actor(queue="default", max_retries=0, unique=bgjobs.Unique(key=("key",), window="10m"))
def unique_item(payload: Item) -> None:
    """One at a time per key; a duplicate sent meanwhile is dropped."""
    time.sleep(payload.sleep_s)
    _note(f"unique {payload.key} {payload.children}")


@bgjobs.actor(queue="default", max_retries=0, unique=bgjobs.Unique(key=("key",), on_conflict="replace"))
def replaced_item(payload: Item) -> None:
    """The last one sent per key runs; the ones it replaced are skipped."""
    _note(f"replaced {payload.key} {payload.children}")


@bgjobs.actor(queue="default", max_retries=0, debounce="2s", unique=bgjobs.Unique(key=("key",)))
def debounced_item(payload: Item) -> None:
    """The last of a burst per key runs, 2 s after the burst."""
    _note(f"debounced {payload.key} {payload.children}")


@bgjobs.actor(queue="default", max_retries=0)
def cancellable(payload: Item) -> None:
    """Notes its start, then waits up to ``sleep_s`` for a cancel: notes ``stopped`` if one came."""
    _note(f"{payload.key} started")
    deadline = time.monotonic() + payload.sleep_s
    while time.monotonic() < deadline:
        if bgjobs.cancelled():
            _note(f"{payload.key} stopped")
            return
        time.sleep(0.02)
    _note(f"{payload.key} finished")


@bgjobs.actor(queue="default", max_retries=0, concurrency=bgjobs.PerKey("key", limit=2))
def capped_item(payload: Item) -> None:
    """At most 2 at once per key: notes its start and end, with the time and this process's id,
    so a test measures the peak itself (:func:`tests.support.peaks.peak_per_key`)."""
    _note(f"capped {payload.key} start {time.time():.6f} {os.getpid()} {payload.children}")
    time.sleep(payload.sleep_s)
    _note(f"capped {payload.key} end {time.time():.6f} {os.getpid()} {payload.children}")


@bgjobs.actor(queue="default", max_retries=0, rate=bgjobs.PerKey("key", rate="10/s"))
def rated_item(payload: Item) -> None:
    """At most 10 starts a second per key; notes each start's time."""
    _note(f"rated {payload.key} {time.time():.6f} {payload.children}")
