"""Running an export (the worker side): stream the rows to storage once, then tell the requester.

A run reads the dataset with a server-side cursor (``yield_per``), encodes a chunk at a time and
hands the chunks to ``Storage.put``, whose write is atomic (the bundled adapters write a
temporary object and rename or complete it): a worker killed mid-export leaves nothing under the
final key, and the redelivered job starts over from the first row. An export that runs past its
time budget (the actor's time limit less a margin) fails with a message saying so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy.sql import Select

from .. import db, notifications, runtime, tracing, wiring
from ..claims import Answer, Claim, recheck_ms
from ..clock import now as _now
from ..errors import InvalidPayload, LeaseLost, PermanentError
from ..typed import final_attempt
from ._datasets import batches_of, get_dataset
from ._formats import encode_batches, gzipped
from ._models import CLAIMS, ExportJob, ExportRecord
from ._sender import info
from .tasks import run_export

__all__ = ["CLAIMS", "CONTENT_TYPES", "run"]

logger = logging.getLogger("bgjobs.exports")

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "json": "application/json",
}


def _settle(claim: Claim, **values: Any) -> ExportRecord | None:
    """Record the outcome under the claim; the record, or None when another worker took it over."""
    with db.session() as s:
        if not CLAIMS.settle(s, claim, **values):
            return None
        return s.get(ExportRecord, claim.key)


class _Counted:
    """Batches of rows passing through, counted, with the time budget checked as they go."""

    def __init__(self, batches: Iterable[list[Any]], deadline: float, budget_s: float) -> None:
        self.batches, self.deadline, self.budget_s, self.count = batches, deadline, budget_s, 0

    def __iter__(self) -> Iterator[list[Any]]:
        for batch in self.batches:
            self.count += len(batch)
            if time.monotonic() > self.deadline:
                raise PermanentError(
                    f"the export ran past its time budget of {self.budget_s:.0f} s after {self.count} rows; "
                    "narrow the period or filters, or raise BGJOBS_EXPORTS__TIME_LIMIT_MS"
                )
            yield batch


def run(job: ExportJob) -> str:
    """Produce one export; returns ``done``, ``duplicate`` (already done or failed, or taken over
    by another worker) or ``busy`` (another worker runs it; this job looks again later).

    Raises:
        PermanentError: the dataset failed for good or the time budget ran out (recorded and
            announced as failed); other errors retry from the first row.
    """
    now = _now()
    values = {"status": "running", "started_at": now, "error": None}
    answer, seen, claim = CLAIMS.take_row(job.export_id, now, values=values)
    if answer is Answer.DUPLICATE:
        return "duplicate"
    if claim is None:
        assert seen is not None
        run_export.send(job, delay=recheck_ms(seen, now))
        return "busy"
    with claim.kept():
        return _run(claim)


def _run(claim: Claim) -> str:
    with db.reading() as s:
        record = s.get(ExportRecord, claim.key)
    assert record is not None
    settings = runtime.current().settings
    dataset = get_dataset(record.dataset)
    limit_ms = settings.limits_for("exports.run", "exports").time_limit_ms
    budget_s = max(1.0, limit_ms / 1000 - 30)
    try:
        with db.read() as conn:
            source = dataset.source(period=record.period, filters=dict(record.filters))
            if isinstance(source, Select):
                # On a Core connection an ORM select yields plain rows: no model built per row.
                source = conn.execution_options(yield_per=settings.exports.batch_size).execute(source)
            rows = _Counted(batches_of(source, settings.exports.batch_size), time.monotonic() + budget_s,
                            budget_s)  # fmt: skip
            chunks = encode_batches(record.fmt, rows, dataset.columns)
            if record.gzip:
                chunks = gzipped(chunks)
            content_type = "application/gzip" if record.gzip else CONTENT_TYPES[record.fmt]
            storage = wiring.storage()
            claim.check()  # a worker held up past its claim stops here: another runs the export
            with tracing.span("storage.put", **{"bgjobs.export": record.id, "bgjobs.format": record.fmt}):
                stored = storage.put(key=record.storage_key, chunks=chunks, content_type=content_type)
    except BaseException as exc:
        if _taken_over(claim, exc):
            return "duplicate"
        if isinstance(exc, PermanentError | InvalidPayload) or final_attempt():
            failed = _settle(claim, status="failed", error=f"{type(exc).__name__}: {exc}"[:1000],
                             finished_at=_now())  # fmt: skip
            if failed is None:
                return "duplicate"
            _announce(failed, "export_failed")
        raise
    done = _settle(claim, status="done", rows=rows.count, size=stored.size, sha256=stored.sha256,
                   finished_at=_now())  # fmt: skip
    if done is None:
        logger.warning("export %s: another worker took it over while this one was held up; its "
                       "outcome is that worker's", claim.key)  # fmt: skip
        return "duplicate"
    logger.info("export %s: %d rows, %d bytes to %s", done.id, rows.count, stored.size, done.storage_key)
    _announce(done, "export_ready")
    return "done"


def _taken_over(claim: Claim, exc: BaseException) -> bool:
    """Whether the export failed because another worker took it over (this one was held up past
    its claim): that worker's upload is the export's, and this failure is nobody's."""
    if isinstance(exc, Exception):
        try:
            claim.check()
        except LeaseLost:
            logger.warning("export %s: another worker took it over while this one was held up (%s: %s); "
                           "its outcome is that worker's", claim.key, type(exc).__name__, exc)  # fmt: skip
            return True
    return False


def _announce(record: ExportRecord, template: str) -> None:
    if record.requested_by is None:
        return
    url = info(record).url
    context = {"export_id": record.id, "dataset": record.dataset, "period": record.period, "fmt": record.fmt,
               "rows": record.rows or 0, "size": record.size or 0, "url": url,
               "error": record.error}  # fmt: skip
    notifications.send(template, record.requested_by, context, channels=["email"],
                       key=f"export:{record.id}:{template}")  # fmt: skip
