"""The dispatcher: one per worker process, making published messages' first attempts in batches.

``publish`` stores a message, puts it in its owner's lane (:mod:`._lanes`) and sends a
``webhooks.dispatch`` wake-up. The wake-up that finds no dispatcher running in its process
becomes it; the others only nudge it. The dispatcher loops:

1. take a batch from the lanes (owners in turn), up to ``BGJOBS_WEBHOOKS__IN_FLIGHT`` requests
   in flight; read its deliveries in one query;
2. admit them through the endpoints' gates in one round trip, take their attempts with one
   UPDATE, and start their requests on the event loop; one whose endpoint's slots are all taken
   waits in the dispatcher and is admitted again on the next turn of the loop;
3. record whatever attempts have finished, together, in one transaction; a message whose
   deliveries are all recorded (or handed to a job of their own) is settled in its lane.

A slow endpoint holds coroutines and its own slots, never a thread: the dispatcher goes on
taking batches while its requests wait. The wake-up's message stays unacknowledged while the
dispatcher runs, and the batches it took are held under that message's id; if the worker is
killed, Dramatiq redelivers the message and its copy takes the held batches first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future

from .. import db, runtime
from ..clock import now as _now
from ..settings import WebhookSettings
from ._attempts import Finished, record
from ._delivery import HOLD_MS, Launched, backoff, defer, launch, screen
from ._endpoints import current
from ._lanes import Lanes, lanes_for
from ._models import DeliveryJob
from ._statements import Row, read_messages
from .tasks import deliver_webhook, dispatch_webhooks

__all__ = ["BUDGET_S", "dispatch"]

logger = logging.getLogger("bgjobs.webhooks")

#: A dispatcher takes new batches for this long, then finishes what it started and hands over to
#: a fresh wake-up, so its worker thread and its message are given back now and then.
BUDGET_S = 10.0
#: A delivery waits in the dispatcher for a free slot this long, then is sent again for later.
SLOT_WAIT_S = 2.0


class _Process:
    """Whether this process's dispatcher runs, and how to nudge it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: str | None = None  # the running dispatcher's holder
        self.finished: queue.SimpleQueue[Finished | None] = queue.SimpleQueue()
        #: Batches moved under the running dispatcher's holder, for it to start.
        self.adopted: list[str] = []


_here = _Process()


def dispatch(holder: str) -> None:
    """Run this process's dispatcher, or nudge the one running (handing it ``holder``'s held batches)."""
    lanes = lanes_for(runtime.current().coordination)
    with _here.lock:
        if _here.running is not None:
            # Moved while the running dispatcher cannot finish, so the batches are always held under
            # an unacknowledged message: this one's, until the move, then the dispatcher's.
            _here.adopted += lanes.adopt(holder, into=_here.running)
            _here.finished.put(None)
            return
        _here.running = holder
    try:
        _Dispatcher(lanes, current(), holder).run(lanes.held(holder))
    finally:
        with _here.lock:
            _here.running = None
            _here.adopted.clear()
    if lanes.waiting():  # published while this one was finishing: wake a fresh one
        dispatch_webhooks.send({})


class _Dispatcher:
    def __init__(self, lanes: Lanes, settings: WebhookSettings, holder: str) -> None:
        self.lanes, self.settings, self.holder = lanes, settings, holder
        self.in_flight = 0
        self.waiting: list[tuple[DeliveryJob, Row, float]] = []
        #: message id -> its deliveries not yet recorded or handed over
        self.open: Counter[str] = Counter()

    def run(self, held: list[str]) -> None:
        self.start(held)
        deadline = time.monotonic() + BUDGET_S
        while True:
            took = False
            with _here.lock:
                adopted, _here.adopted = _here.adopted, []
            self.start(adopted)
            room = self.settings.in_flight - self.in_flight - len(self.waiting)
            if room > 0 and time.monotonic() < deadline:
                batch = self.lanes.take(self.holder, deliveries=min(room, self.settings.batch_deliveries))
                took = bool(batch)
                self.start(batch)
            if self.waiting:
                self.retry_waiting()
            if not took and not self.in_flight and not self.waiting:
                with _here.lock:
                    if not _here.adopted:
                        _here.running = None  # from here on, a wake-up runs a dispatcher of its own
                        return
            self.collect(block=not took)

    def start(self, message_ids: list[str]) -> None:
        if not message_ids:
            return
        with db.read() as conn:
            rows = read_messages(conn, message_ids)
        for message_id in message_ids:
            self.open[message_id] += 0
        now = _now()
        items = []
        for row in rows:
            if row.status == "pending" and row.attempts > 0:
                continue  # waiting for a retry, which has a job of its own
            # An attempt under way (or whose worker died) is screened as a copy of it: left to its
            # lease, or made again once the lease has run out.
            number = row.attempts if row.status == "delivering" else row.attempts + 1
            job = DeliveryJob(delivery_id=row.delivery_id, endpoint_id=row.endpoint_id, attempt=number)
            screened = screen(job, row, now)
            if isinstance(screened, DeliveryJob):
                items.append((screened, row))
                self.open[row.message_id] += 1
        self.settle([message_id for message_id in message_ids if self.open[message_id] == 0])
        self.launch(items)

    def launch(self, items: list[tuple[DeliveryJob, Row]]) -> None:
        if not items:
            return
        for (_job, row), launched in zip(items, launch(items, self.settings, hold_ms=HOLD_MS), strict=True):
            if isinstance(launched, DeliveryJob):
                self.waiting.append((launched, row, time.monotonic()))
            elif isinstance(launched, str):
                self.done(row)
            else:
                self.in_flight += 1
                self.watch(launched)

    def watch(self, launched: Launched) -> None:
        def finished(future: Future[Finished]) -> None:
            _here.finished.put(future.result())

        launched[1].add_done_callback(finished)

    def retry_waiting(self) -> None:
        now = time.monotonic()
        again, self.waiting = self.waiting, []
        for job, row, since in again:
            if now - since > SLOT_WAIT_S:
                defer(job, delay_s=backoff(job.deferrals), why="concurrency cap")
                self.done(row)
        still = [(job, row) for job, row, since in again if now - since <= SLOT_WAIT_S]
        kept = {id(job): since for job, _, since in again}
        for (job, row), launched in zip(still, launch(still, self.settings, hold_ms=HOLD_MS), strict=True):
            if isinstance(launched, DeliveryJob):
                self.waiting.append((launched, row, kept.get(id(job), now)))
            elif isinstance(launched, str):
                self.done(row)
            else:
                self.in_flight += 1
                self.watch(launched)

    def collect(self, *, block: bool) -> None:
        """Record the attempts that have finished, waiting a little for one if asked to."""
        finished: list[Finished] = []
        try:
            timeout = 0.05 if self.waiting else 0.5
            found = _here.finished.get(timeout=timeout) if block else _here.finished.get_nowait()
            while True:
                if found is not None:
                    finished.append(found)
                found = _here.finished.get_nowait()
        except queue.Empty:
            pass
        if not finished:
            return
        self.in_flight = max(0, self.in_flight - len(finished))
        for f, (outcome, _) in zip(finished, record(finished, self.settings), strict=True):
            if outcome == "exhausted":
                deliver_webhook.send(f.started.job.model_copy(update={"check": True}))
            self.done(f.started.row)

    def done(self, row: Row) -> None:
        self.open[row.message_id] -= 1
        if self.open[row.message_id] <= 0:
            self.settle([row.message_id])

    def settle(self, message_ids: list[str]) -> None:
        for message_id in message_ids:
            self.open.pop(message_id, None)
        self.lanes.settle(self.holder, message_ids)
