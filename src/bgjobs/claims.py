"""One way to do a unit of work once: take it by its key, hold it, record its outcome.

Notifications, webhooks, payouts and exports each have a row per unit of work (a channel
message, a delivery attempt, a payout, an export). A worker that is about to call a port for it
(a mail server, a merchant's endpoint, the payment gateway, storage) first **claims** the row, in
the database that holds the row, so a claim is as durable as the work it guards and the same on
every engine (Redis, Sentinel, RabbitMQ):

1. **Take**: one conditional ``UPDATE`` sets the row's ``claimed_by`` (a token of this holder),
   its ``lease_until`` (one worker heartbeat timeout ahead) and its ``attempts``, where the row
   still has the attempts and status the worker read and no live lease. Of two copies of a job,
   one wins. The answer is ``taken``, ``duplicate`` (the row is settled), or ``busy`` (another
   worker holds it: the job looks again :func:`recheck_ms` later); the families add
   ``postponed`` (quiet hours, a webhook's turn), which never takes a claim.
2. **Hold**: while the work runs, one thread per process renews every claim it holds, every
   third of the ttl, so a live holder never loses its claim and a killed (or paused) one frees it
   on the same clock as its messages. Before each port call the holder calls
   :meth:`Claim.check`: a holder that was paused past its lease, whose row another worker has
   taken meanwhile, stops there with :class:`~bgjobs.errors.LeaseLost` instead of calling the
   port beside the new holder.
3. **Settle**: the outcome is written where ``claimed_by`` is still this holder's token (and
   the claim cleared). A holder that lost its claim records nothing: the row is the new
   holder's, and so is its outcome (one ``export_ready`` email, not an ``export_failed`` too).

A taken claim whose lease had run out (``in_doubt``) means an earlier holder died between taking
and settling, maybe after calling the port: the families pass the same idempotency key again and
flag what the port cannot deduplicate.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import and_, bindparam, or_, select, update

from . import db, runtime
from .clock import now as _now
from .errors import LeaseLost

__all__ = ["Answer", "Claim", "Claims", "Seen", "recheck_ms"]

logger = logging.getLogger("bgjobs.claims")

#: A copy that found its row claimed by another worker looks again this soon (the holder renews
#: its lease while it works, so the lease's end says nothing about when the work ends).
RECHECK_MS = 2_000


class Answer(enum.StrEnum):
    TAKEN = "taken"
    DUPLICATE = "duplicate"
    BUSY = "busy"
    POSTPONED = "postponed"


@dataclass(frozen=True)
class Seen:
    """A row's claim columns as a worker read them."""

    status: str
    attempts: int
    lease_until: datetime | None


def recheck_ms(seen: Seen, now: datetime) -> int:
    """How long a copy that found the row busy waits before it looks again."""
    left = RECHECK_MS
    if seen.lease_until is not None:
        left = min(left, int((db.aware(seen.lease_until) - now).total_seconds() * 1000))
    return max(0, left) + 100


def _ttl_ms() -> int:
    return runtime.current().settings.worker.heartbeat_timeout_ms


@dataclass(eq=False)
class Claim:
    """A row this worker holds: check it before each port call, settle it once."""

    claims: Claims
    key: str
    attempt: int
    #: An earlier holder died between its take and its settle, maybe after calling the port.
    in_doubt: bool
    ttl_ms: int
    #: The engine of the database the row is in (the renewing thread has no runtime of its own).
    engine: Any
    token: str = field(default_factory=lambda: uuid4().hex)
    lost: threading.Event = field(default_factory=threading.Event)
    #: Until then the lease is surely this holder's, without asking the database.
    sure_until: float = 0.0
    renewed_at: float = 0.0
    settled: bool = False

    def __post_init__(self) -> None:
        self.renewed(time.monotonic())

    def renewed(self, at: float) -> None:
        self.renewed_at, self.sure_until = at, at + self.ttl_ms / 1000 * 2 / 3

    def check(self) -> None:
        """Before a port call: go on while the claim is this holder's, or stop here.

        A claim renewed less than two thirds of its ttl ago is this holder's without a query; an
        older one (its worker was paused, or the database did not answer) is renewed first.

        Raises:
            LeaseLost: another worker has taken the row, or the database did not answer for the
                whole ttl.
        """
        if not self.lost.is_set() and time.monotonic() >= self.sure_until:
            asked = time.monotonic()
            try:
                kept = self.claims.renew([self])
            except Exception:
                if asked >= self.renewed_at + self.ttl_ms / 1000:
                    self.lost.set()
            else:
                if self in kept:
                    self.renewed(asked)
                else:
                    self.lost.set()
        if self.lost.is_set():
            raise LeaseLost(f"{self.claims.name} {self.key} is no longer this worker's (its lease ran "
                            "out while the worker was held up, and another took it); not going on")

    def hold(self) -> None:
        """Renew the claim in the background (every third of its ttl) until :meth:`let_go`."""
        _renewer.add(self)

    def let_go(self) -> None:
        _renewer.discard(self)

    @contextlib.contextmanager
    def kept(self) -> Iterator[Claim]:
        """Renew the claim in the background until the block ends; a block that ends without
        settling it (an error the job retries) gives the row back, so the retry need not wait for
        the lease to run out."""
        self.hold()
        try:
            yield self
        finally:
            self.let_go()
            if not self.settled and not self.lost.is_set():
                # A database that does not answer: the lease runs out instead
                with contextlib.suppress(Exception), self.engine.begin() as conn:
                    self.claims.settle_many(conn, [(self, {})])


class Claims:
    """The claim columns of one table: its key, ``status``, ``attempts``, ``lease_until`` and
    ``claimed_by``; ``final`` are the statuses of a settled row."""

    def __init__(self, table: Any, *, name: str, final: frozenset[str], key: str = "id") -> None:
        self.table, self.name, self.final = table, name, final
        self.key = table.c[key]
        t = table
        self._free = or_(t.c.lease_until.is_(None), t.c.lease_until <= bindparam("now"))
        self._takes: dict[tuple[str, ...], Any] = {}
        self._settles: dict[tuple[str, ...], Any] = {}
        self._renew = (
            update(t).where(self.key == bindparam("k"), t.c.claimed_by == bindparam("token"))
            .values(lease_until=bindparam("lease")).returning(self.key)
        )  # fmt: skip
        self._read_many = select(self.key, t.c.status, t.c.attempts, t.c.lease_until).where(
            self.key.in_(bindparam("keys", expanding=True)))  # fmt: skip

    def answer(self, seen: Seen | None, now: datetime) -> Answer:
        """What a worker that read ``seen`` may do: take it, drop its copy, or wait for the holder."""
        if seen is None or seen.status in self.final:
            return Answer.DUPLICATE
        if seen.lease_until is not None and db.aware(seen.lease_until) > now:
            return Answer.BUSY
        return Answer.TAKEN

    def take(
        self, conn: Any, keys: list[str], seen: Seen, now: datetime, *, attempt: int | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> dict[str, Claim]:  # fmt: skip
        """Claim the rows ``keys`` that are all still as ``seen`` and free, in the caller's
        transaction; returns the claims taken (a row another copy took first is left out).

        ``attempt`` is the attempt number to record (one more than seen, by default); ``values``
        are further columns the family sets when it takes a row (its working status)."""
        extra = dict(values or {})
        names = tuple(sorted(extra))
        stmt = self._takes.get(names)
        if stmt is None:
            t = self.table
            stmt = self._takes[names] = (
                update(t)
                .where(self.key.in_(bindparam("keys", expanding=True)), self._free,
                       t.c.attempts == bindparam("seen_attempts"), t.c.status == bindparam("seen_status"))
                .values(attempts=bindparam("attempt"), lease_until=bindparam("lease"),
                        claimed_by=bindparam("token"), **{n: bindparam(f"v_{n}") for n in names})
                .returning(self.key)
            )  # fmt: skip
        ttl = _ttl_ms()
        engine = conn.engine if hasattr(conn, "engine") else conn.get_bind()  # a Connection or a Session
        number = seen.attempts + 1 if attempt is None else attempt
        doubt = seen.lease_until is not None
        token = uuid4().hex
        params = {"keys": keys, "seen_attempts": seen.attempts, "seen_status": seen.status, "now": now,
                  "attempt": number, "lease": now + timedelta(milliseconds=ttl), "token": token,
                  **{f"v_{n}": v for n, v in extra.items()}}  # fmt: skip
        return {
            k: Claim(self, k, number, doubt, ttl, engine, token=token)
            for (k,) in conn.execute(stmt, params)
        }

    def take_one(
        self, conn: Any, key: str, seen: Seen, now: datetime, *, values: Mapping[str, Any] | None = None
    ) -> Claim | None:
        return self.take(conn, [key], seen, now, values=values).get(key)

    def take_row(
        self, key: str, now: datetime, *, values: Mapping[str, Any] | None = None
    ) -> tuple[Answer, Seen | None, Claim | None]:
        """Read row ``key``'s claim columns and take it if it may be, in one short transaction: the
        answer, what was read, and the claim when taken (a row another copy took between the read
        and the take answers ``busy``)."""
        return self.take_rows([key], now, values=values)[key]

    def take_rows(
        self, keys: list[str], now: datetime, *, values: Mapping[str, Any] | None = None
    ) -> dict[str, tuple[Answer, Seen | None, Claim | None]]:
        """:meth:`take_row` for several rows in one transaction, one ``UPDATE`` for the rows read
        alike (usually all of them: pending, never tried); a missing row answers ``duplicate``."""
        found: dict[str, Seen] = {}
        claims: dict[str, Claim] = {}
        with db.get_engine().begin() as conn:
            for key, *columns in conn.execute(self._read_many, {"keys": keys}):
                found[key] = Seen(*columns)
            alike: dict[tuple[str, int, bool], list[str]] = {}
            for key, row in found.items():
                if self.answer(row, now) is Answer.TAKEN:
                    group = (row.status, row.attempts, row.lease_until is not None)
                    alike.setdefault(group, []).append(key)
            for same in alike.values():
                claims.update(self.take(conn, same, found[same[0]], now, values=values))
        answers: dict[str, tuple[Answer, Seen | None, Claim | None]] = {}
        for key in keys:
            seen = found.get(key)
            answer = self.answer(seen, now)
            if answer is Answer.TAKEN and key not in claims:
                answer = Answer.BUSY
            answers[key] = (answer, seen, claims.get(key))
        return answers

    def settle(self, conn: Any, claim: Claim, **values: Any) -> bool:
        """Record the outcome of ``claim`` in the caller's transaction and clear the claim; False
        (nothing written) when the row is no longer this holder's."""
        return self.settle_many(conn, [(claim, values)])

    def settle_many(self, conn: Any, settled: list[tuple[Claim, dict[str, Any]]]) -> bool:
        """:meth:`settle` for several claims whose outcomes set the same columns, in one statement;
        False when not every row was still its holder's: then each claim counts as lost (which
        ones cannot be told), and the families leave what follows an outcome to their sweeps."""
        if not settled:
            return True
        names = tuple(sorted(settled[0][1]))
        stmt = self._settles.get(names)
        if stmt is None:
            t = self.table
            stmt = self._settles[names] = (
                update(t).where(self.key == bindparam("k"), t.c.claimed_by == bindparam("token"))
                .values(lease_until=None, claimed_by=None, **{n: bindparam(f"v_{n}") for n in names})
            )  # fmt: skip
        params = [{"k": c.key, "token": c.token, **{f"v_{n}": v[n] for n in names}} for c, v in settled]
        done = conn.execute(stmt, params if len(params) > 1 else params[0]).rowcount == len(params)
        for claim, _ in settled:
            claim.settled = done
            if not done:
                claim.lost.set()
        return bool(done)

    def renew(self, claims: list[Claim]) -> set[Claim]:
        """Extend the leases of ``claims`` (rows of one database) by their ttl, in one transaction;
        the claims still held."""
        now = _now()
        kept = set()
        with claims[0].engine.begin() as conn:
            for claim in claims:
                lease = now + timedelta(milliseconds=claim.ttl_ms)
                if conn.execute(self._renew, {"k": claim.key, "token": claim.token, "lease": lease}).first():
                    kept.add(claim)
        return kept

    def where_free(self, now: datetime) -> Any:
        """The condition of a row not settled that no one holds at ``now`` (for sweeps that resend
        what a dead holder left)."""
        t = self.table
        free = or_(t.c.lease_until.is_(None), t.c.lease_until <= now)
        return and_(t.c.status.not_in(sorted(self.final)), free)


class _Renewer:
    """The one thread per process that renews the claims its workers hold."""

    def __init__(self) -> None:
        self._held: weakref.WeakSet[Claim] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, claim: Claim) -> None:
        with self._lock:
            self._held.add(claim)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bgjobs-claims", daemon=True)
                self._thread.start()

    def discard(self, claim: Claim) -> None:
        with self._lock:
            self._held.discard(claim)

    def _run(self) -> None:
        while True:
            time.sleep(0.5)
            with self._lock:
                held = list(self._held)
            now = time.monotonic()
            if not held:
                with self._lock:
                    if not self._held:
                        self._thread = None
                        return
            due: dict[tuple[Claims, Any], list[Claim]] = {}
            for claim in held:
                if not claim.lost.is_set() and now - claim.renewed_at >= claim.ttl_ms / 3000:
                    due.setdefault((claim.claims, claim.engine), []).append(claim)
            for (claims, _), some in due.items():
                try:
                    kept = claims.renew(some)
                except Exception:  # a dropped connection: the next beat tries again
                    logger.warning("could not renew %d %s claim(s)", len(some), claims.name, exc_info=True)
                    continue
                for claim in some:
                    if claim in kept:
                        claim.renewed(now)
                    else:
                        logger.error("%s %s: the claim was lost while held", claims.name, claim.key)
                        claim.lost.set()


_renewer = _Renewer()
