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

import contextlib
import logging
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future

from .. import db, runtime
from ..clock import now as _now
from ..settings import WebhookSettings
from ._attempts import Finished, free
from ._delivery import HOLD_MS, Later, Round, admit, backoff, screen
from ._endpoints import current
from ._lanes import TRACE_SEPARATOR, Lanes, lanes_for
from ._models import DeliveryJob
from ._statements import Row, read_messages, read_rows
from .tasks import deliver_webhook, dispatch_webhooks

__all__ = ["BUDGET_S", "dispatch"]

logger = logging.getLogger("bgjobs.webhooks")

#: A dispatcher takes new batches for this long, then puts the deliveries still waiting for a slot
#: back in the lanes, wakes the next dispatcher and finishes its own requests, so its worker thread
#: and its message are given back now and then, well within the actor's time limit.
BUDGET_S = 10.0
#: A delivery waiting for a slot of an endpoint that has answered nothing here for this long (a
#: slow endpoint, or one whose slots other workers hold) is sent again for later, as a job.
SLOT_WAIT_S = 2.0
#: Waiting deliveries are all admitted again this often (slots other workers hold free silently).
SWEEP_S = 0.02
#: Deliveries the dispatcher may hold waiting for their endpoints' slots, per request in flight.
QUEUED_PER_REQUEST = 4
#: A request unanswered after this long is slow: it no longer counts against ``in_flight``.
SLOW_S = 1.0
#: After the first finished attempt, the dispatcher gathers more for this long to record together.
GATHER_S = 0.01
GATHER_MAX = 500


class _Process:
    """This process's current dispatcher (the one taking from the lanes), if any."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: _Dispatcher | None = None


_here = _Process()


def dispatch(holder: str) -> None:
    """Run this process's dispatcher, or nudge the one running (handing it ``holder``'s held batches)."""
    lanes = lanes_for(runtime.current().coordination)
    with _here.lock:
        running = _here.current
        if running is not None:
            # Moved while the running dispatcher cannot finish, so the batches are always held under
            # an unacknowledged message: this one's, until the move, then the dispatcher's.
            running.adopted += lanes.adopt(holder, into=running.holder)
            running.finished.put(None)
            return
        dispatcher = _here.current = _Dispatcher(lanes, current(), holder)
    try:
        dispatcher.run(lanes.held(holder))  # it returns only once it has retired
    except BaseException:
        # Given up, batches handed to it or not: they are held under its holder, whose message is
        # retried, and the retry takes them. Left as the current one, it was nudged by every later
        # wake-up (its own retry's too) and never ran again.
        dispatcher.abandon()
        raise
    if lanes.waiting():  # published while this one was finishing: wake a fresh one
        dispatch_webhooks.send({})


class _Dispatcher:
    def __init__(self, lanes: Lanes, settings: WebhookSettings, holder: str) -> None:
        self.lanes, self.settings, self.holder = lanes, settings, holder
        #: Finished attempts (None: a nudge), put there by the event loop.
        self.finished: queue.SimpleQueue[Finished | None] = queue.SimpleQueue()
        #: Batches moved under this dispatcher's holder by wake-ups, for it to start.
        self.adopted: list[str] = []
        #: Taking from the lanes (until its time is up).
        self.taking = True
        self.in_flight = 0
        #: (delivery id, attempt) -> when its request started
        self.since: dict[tuple[str, int], float] = {}
        #: endpoint id -> this dispatcher's requests in flight to it
        self.busy: Counter[str] = Counter()
        #: Each endpoint's cap as its gate last said (changed at run time, or the settings').
        self.caps: dict[str, int] = {}
        #: endpoint id -> deliveries waiting for one of its slots, with when they began to wait
        self.waiting: dict[str, deque[tuple[DeliveryJob, Row, float]]] = {}
        #: endpoints with a slot given back since their waiting deliveries were last admitted
        self.freed: set[str] = set()
        self.last_sweep = time.monotonic()
        #: endpoint id -> when it last answered here (or began to be waited for)
        self.progress: dict[str, float] = {}
        #: lane item -> its deliveries not yet recorded or handed over
        self.open: Counter[str] = Counter()
        #: (delivery id, attempt) -> the lane item it came from
        self.item_of: dict[tuple[str, int], str] = {}
        #: deliveries handed to jobs of their own in the round being built
        self.handed: list[DeliveryJob] = []
        #: attempts finished and handed to the recorder, not yet recorded
        self.recording = 0

    def run(self, held: list[str]) -> None:
        recorder = _Recorder(self.settings)
        try:
            self.loop(held, recorder)
        finally:
            recorder.stop()

    def retire(self) -> bool:
        """Stop being the process's current dispatcher (a wake-up now starts another); False if it
        has batches handed to it to start first."""
        with _here.lock:
            if _here.current is self:
                if self.adopted:
                    return False
                _here.current = None
            return True

    def abandon(self) -> None:
        with _here.lock:
            if _here.current is self:
                _here.current = None

    def hand_back(self) -> None:
        """Out of time: put the deliveries still waiting for a slot back in their owners' lanes, for
        the next dispatcher, and let a fresh wake-up start it while this one finishes its requests."""
        for queue_ in self.waiting.values():
            for job, row, _ in queue_:
                self.lanes.push(row.owner, job.model_dump_json(), 1)
                self.done(job)
        self.waiting.clear()
        while not self.retire():  # batches handed over meanwhile are held under this one: start them
            with _here.lock:
                adopted, self.adopted = self.adopted, []
            self.start(adopted)
        dispatch_webhooks.send({})

    def loop(self, held: list[str], recorder: _Recorder) -> None:
        self.start(held)
        deadline = time.monotonic() + BUDGET_S
        took = True  # so the first turn takes a batch before it waits for anything
        while True:
            if self.taking and time.monotonic() > deadline:
                self.taking = False
                self.hand_back()
            finished = self.collect(block=not took)
            if finished:
                recorder.put(finished)
                self.recording += len(finished)
            self.recorded(recorder)
            round_ = Round()
            took = False
            with _here.lock:
                adopted, self.adopted = self.adopted, []
            self.start(adopted)
            # An owner with IN_FLIGHT deliveries waiting here for their endpoints' slots keeps its turn
            # in the lanes, so its backlog never stands between another owner and the next batch.
            room = self.settings.in_flight - self.active()
            queued = self.queued() < QUEUED_PER_REQUEST * self.settings.in_flight
            if room > 0 and queued and self.taking:
                waiting = Counter(row.owner or "" for q in self.waiting.values() for _, row, _ in q)
                full = [owner for owner, n in waiting.items() if n >= self.settings.in_flight]
                batch = self.lanes.take(self.holder, deliveries=self.settings.batch_deliveries, skip=full)
                took = bool(batch)
                self.start(batch)
            self.admit_waiting(round_)
            self.commit(round_)
            if not took and not self.in_flight and not self.waiting and not self.recording and self.retire():
                return

    def active(self) -> int:
        """Requests in flight that are not yet slow: a slow endpoint's requests (capped by its slots)
        do not count against ``in_flight``, so they never keep the other endpoints' deliveries back."""
        slow = time.monotonic() - SLOW_S
        return sum(1 for at in self.since.values() if at > slow)

    def queued(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def start(self, items: list[str]) -> None:
        """Screen the deliveries of items taken from the lanes and queue them for their endpoints."""
        if not items:
            return
        jobs = {item: DeliveryJob.model_validate_json(item) for item in items if item.startswith("{")}
        messages: dict[str, str] = {}  # message id -> its lane item
        traces: dict[str, str] = {}  # message id -> the trace it was published in
        for item in items:
            if item not in jobs:
                message_id, _, carrier = item.partition(TRACE_SEPARATOR)
                messages[message_id] = item
                if carrier:
                    traces[message_id] = carrier
        with db.read() as conn:
            first = read_messages(conn, list(messages)) if messages else []
            rows = read_rows(conn, [job.delivery_id for job in jobs.values()]) if jobs else {}
        now = _now()
        screened: list[tuple[str, DeliveryJob | str, Row]] = []
        for row in first:
            if row.status == "pending" and row.attempts > 0:
                continue  # waiting for a retry, which has a job of its own
            # An attempt under way (or whose worker died) is screened as a copy of it: left to its
            # lease, or made again once the lease has run out.
            number = row.attempts if row.status == "delivering" else row.attempts + 1
            job = DeliveryJob(delivery_id=row.delivery_id, endpoint_id=row.endpoint_id, attempt=number,
                              trace=traces.get(row.message_id))  # fmt: skip
            screened.append((messages[row.message_id], screen(job, row, now), row))
        for item, job in jobs.items():
            found = rows.get(job.delivery_id)
            if found is not None:
                screened.append((item, screen(job, found, now), found))
        for item in items:
            self.open[item] += 0
        since = time.monotonic()
        for item, outcome, row in screened:
            if isinstance(outcome, DeliveryJob) and (row.delivery_id, outcome.attempt) not in self.item_of:
                self.open[item] += 1
                self.item_of[(row.delivery_id, outcome.attempt)] = item
                self.waiting.setdefault(row.endpoint_id, deque()).append((outcome, row, since))
                self.freed.add(row.endpoint_id)
                self.progress.setdefault(row.endpoint_id, since)
        self.settle([item for item in items if self.open[item] == 0])

    def admit_waiting(self, round_: Round) -> None:
        """Admit the deliveries waiting for endpoints with a slot free here; all of them now and then
        (their slots may be held by other workers), handing over those of stalled endpoints."""
        now = time.monotonic()
        if now - self.last_sweep > SWEEP_S:
            self.freed.update(self.waiting)
            self.last_sweep = now
        items: list[tuple[DeliveryJob, Row, float]] = []
        for endpoint_id in self.freed:
            queue_ = self.waiting.get(endpoint_id)
            stalled = self.progress.get(endpoint_id, now) < now - SLOT_WAIT_S
            while queue_ and stalled and queue_[0][2] < now - SLOT_WAIT_S:
                job, row, _ = queue_.popleft()
                round_.later.append(Later(job, backoff(job.deferrals)))
                self.handed.append(job)
            cap = self.caps.get(endpoint_id, self.settings.endpoint_concurrency)
            for _ in range(min(len(queue_ or ()), cap - self.busy[endpoint_id])):
                items.append(queue_.popleft())  # type: ignore[union-attr]
            if not queue_:
                self.waiting.pop(endpoint_id, None)
                self.progress.pop(endpoint_id, None)
        self.freed.clear()
        since = {id(job): at for job, _, at in items}
        go, full, later, caps = admit([(job, row) for job, row, _ in items], hold_ms=HOLD_MS)
        self.caps.update(caps)
        round_.go += go
        for job, row in full:  # every slot is held elsewhere: wait for the next sweep
            self.waiting.setdefault(row.endpoint_id, deque()).appendleft((job, row, since[id(job)]))
        for deferred, _ in later:
            round_.later.append(deferred)
            self.handed.append(deferred.job)

    def recorded(self, recorder: _Recorder) -> None:
        """Settle what the recorder has recorded; its failure is the dispatcher's."""
        for finished, outcomes in recorder.results():
            self.recording -= len(finished)
            for f, (outcome, _) in zip(finished, outcomes, strict=True):
                if outcome == "exhausted":
                    deliver_webhook.send(f.started.job.model_copy(update={"check": True}))
                self.done(f.started.job)

    def commit(self, round_: Round) -> None:
        round_.commit(self.settings)
        for job in self.handed + round_.lost:
            self.done(job)
        self.handed = []
        for started, future in round_.started:
            self.in_flight += 1
            self.since[(started.job.delivery_id, started.job.attempt)] = time.monotonic()
            self.busy[started.row.endpoint_id] += 1
            future.add_done_callback(self.on_finished)

    def collect(self, *, block: bool) -> list[Finished]:
        """The attempts that have finished, waiting a little for the first if asked to."""
        finished: list[Finished] = []
        try:
            found = self.finished.get(timeout=SWEEP_S) if block else self.finished.get_nowait()
            deadline = time.monotonic() + GATHER_S
            while len(finished) < GATHER_MAX:
                if found is not None:
                    finished.append(found)
                found = self.finished.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pass
        free(finished, self.settings)
        self.in_flight = max(0, self.in_flight - len(finished))
        for f in finished:
            self.since.pop((f.started.job.delivery_id, f.started.job.attempt), None)
        now = time.monotonic()
        for f in finished:
            endpoint_id = f.started.row.endpoint_id
            self.busy[endpoint_id] = max(0, self.busy[endpoint_id] - 1)
            if endpoint_id in self.waiting:
                self.freed.add(endpoint_id)
                self.progress[endpoint_id] = now
        return finished

    def on_finished(self, future: Future[Finished]) -> None:
        self.finished.put(future.result())

    def done(self, job: DeliveryJob) -> None:
        found = self.item_of.pop((job.delivery_id, job.attempt), None)
        if found is None:
            return
        item = found
        self.open[item] -= 1
        if self.open[item] <= 0:
            self.settle([item])

    def settle(self, items: list[str]) -> None:
        for item in items:
            self.open.pop(item, None)
        self.lanes.settle(self.holder, items)


class _Recorder:
    """Records finished attempts on a thread of its own, so the dispatcher goes on admitting and
    starting attempts while a transaction waits for the database (on SQLite, for its one lock)."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.todo: queue.SimpleQueue[list[Finished] | None] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[tuple[list[Finished], list[tuple[str, str | None]]]] = (
            queue.SimpleQueue()
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, name="bgjobs-webhooks-recorder", daemon=True)
        self.thread.start()

    def put(self, finished: list[Finished]) -> None:
        self.todo.put(finished)

    def results(self) -> list[tuple[list[Finished], list[tuple[str, str | None]]]]:
        if self.error is not None:
            raise self.error
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.done.get_nowait())
        return out

    def run(self) -> None:
        while (first := self.todo.get()) is not None:
            batch, last = list(first), False
            with contextlib.suppress(queue.Empty):
                while (more := self.todo.get_nowait()) is not None:
                    batch += more
                last = True  # the stop came behind them
            try:
                self.done.put((batch, Round(finished=batch).commit(self.settings).outcomes))
            except BaseException as exc:  # the dispatcher raises it: its message is retried
                self.error = exc
                return
            if last:
                return

    def stop(self) -> None:
        self.todo.put(None)
        self.thread.join(timeout=60)
