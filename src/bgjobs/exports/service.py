"""Exports' logic: ``request`` records and enqueues; ``run`` streams the rows to storage once.

A run reads the dataset with a server-side cursor (``yield_per``), encodes a chunk at a time and
hands the chunks to ``Storage.put``, whose write is atomic (the bundled adapters write a
temporary object and rename or complete it): a worker killed mid-export leaves nothing under the
final key, and the redelivered job starts over from the first row. An export that runs past its
time budget (the actor's time limit less a margin) fails with a message saying so.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy.sql import Select
from sqlmodel import col, select

from .. import db, wiring
from ..clock import now as _now
from ..errors import InvalidPayload, PermanentError
from ..ports.storage import check_key
from ..typed import final_attempt
from .datasets import get_dataset, rows_of
from .formats import FORMATS, encode, gzipped
from .models import ExportInfo, ExportJob, ExportRecord

__all__ = ["exports", "get", "request", "run"]

logger = logging.getLogger("bgjobs.exports")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "json": "application/json",
}


def _settings() -> Any:
    from ..broker import current_settings

    return current_settings()


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part).strip("._") or "_"


def storage_key(record: ExportRecord) -> str:
    """The object's key: the configured prefix and the file-name template, each part made safe."""
    s = _settings().exports
    ext = record.fmt + (".gz" if record.gzip else "")
    name = s.filename.format(dataset=_safe(record.dataset), period=_safe(record.period or "all"),
                             id=record.id, ext=ext)  # fmt: skip
    parts = [_safe(p) for p in name.split("/") if p not in ("", ".", "..")]
    key = check_key(f"{s.prefix.strip('/')}/{'/'.join(parts)}")
    if not key.startswith(s.prefix.strip("/") + "/"):
        raise PermanentError(f"export key {key!r} escapes the prefix {s.prefix!r}")
    return key


def request(
    dataset: str,
    *,
    fmt: str = "csv",
    period: str | None = None,
    filters: Mapping[str, Any] | None = None,
    requested_by: Any = None,
    key: str | None = None,
    gzip: bool = False,
) -> str:
    """Record an export and enqueue it; returns its id. The same ``key`` returns the first export.

    Args:
        period: passed to the dataset (``2025-06``, ``2025-W23``: the dataset decides).
        filters: passed to the dataset; only the names it declares are accepted.
        requested_by: a ``Recipient`` (or its mapping) told when the export is done or failed.

    Raises:
        InvalidPayload: unknown dataset or format, an undeclared filter, a bad recipient.
    """
    ds = get_dataset(dataset)
    if ds.period is not None:
        ds.period(period)
    if fmt not in FORMATS:
        raise InvalidPayload(f"fmt: {fmt!r}; formats are {', '.join(FORMATS)}")
    unknown = sorted(set(filters or {}) - set(ds.filters))
    if unknown:
        raise InvalidPayload(f"filters: {', '.join(unknown)} not accepted by {dataset} (it takes: "
                             f"{', '.join(ds.filters) or 'none'})")  # fmt: skip
    who = None
    if requested_by is not None:
        from ..notifications.service import _recipient

        who = _recipient(requested_by).model_dump(mode="json")
    record = ExportRecord(
        id=f"exp_{uuid.uuid4().hex[:24]}", key=key, dataset=dataset, fmt=fmt, gzip=gzip, period=period,
        filters=dict(filters or {}), requested_by=who, storage_key="",
    )  # fmt: skip
    record.storage_key = storage_key(record)
    with db.session() as s:
        if not db.insert_new(s, ExportRecord, record.model_dump(), unique=("key",) if key else None):
            existing = s.exec(select(ExportRecord).where(ExportRecord.key == key)).one()
            return existing.id
    from .actors import run_export

    run_export.send(ExportJob(export_id=record.id))
    return record.id


def get(export_id: str) -> ExportInfo:
    """An export's status, row count, size, SHA-256, key, and (once done) a URL from the storage adapter.

    Raises:
        InvalidPayload: no export has that id.
    """
    with db.session() as s:
        record = s.get(ExportRecord, export_id)
    if record is None:
        raise InvalidPayload(f"export: no export {export_id!r}")
    return _info(record)


def _info(record: ExportRecord) -> ExportInfo:
    url = None
    if record.status == "done":
        url = wiring.storage().url(key=record.storage_key, expires_in=_settings().exports.url_expiry_s)
    return ExportInfo(
        id=record.id, dataset=record.dataset, fmt=record.fmt, status=record.status, rows=record.rows,
        size=record.size, sha256=record.sha256, storage_key=record.storage_key, url=url, error=record.error,
        created_at=record.created_at, finished_at=record.finished_at,
    )  # fmt: skip


def exports(*, dataset: str | None = None, limit: int = 50) -> list[ExportRecord]:
    """The latest exports, newest first."""
    query = select(ExportRecord).order_by(col(ExportRecord.created_at).desc()).limit(limit)
    if dataset is not None:
        query = query.where(ExportRecord.dataset == dataset)
    with db.session() as s:
        return list(s.exec(query))


def _update(export_id: str, **values: Any) -> ExportRecord:
    with db.session() as s:
        record = s.get(ExportRecord, export_id)
        assert record is not None
        for name, value in values.items():
            setattr(record, name, value)
        s.add(record)
        return record


class _Counted:
    """Rows passing through, counted, with the time budget checked as they go."""

    def __init__(self, rows: Iterable[Mapping[str, Any]], deadline: float, budget_s: float) -> None:
        self.rows, self.deadline, self.budget_s, self.count = rows, deadline, budget_s, 0

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        for row in self.rows:
            self.count += 1
            if self.count % 1000 == 0 and time.monotonic() > self.deadline:
                raise PermanentError(
                    f"the export ran past its time budget of {self.budget_s:.0f} s after {self.count} rows; "
                    "narrow the period or filters, or raise BGJOBS_EXPORTS__TIME_LIMIT_MS"
                )
            yield row


def run(job: ExportJob) -> str:
    """Produce one export; returns ``done`` or ``duplicate`` (already done or failed).

    Raises:
        PermanentError: the dataset failed for good or the time budget ran out (recorded and
            announced as failed); other errors retry from the first row.
    """
    with db.session() as s:
        record = s.get(ExportRecord, job.export_id)
    if record is None or record.status in ("done", "failed"):
        return "duplicate"
    settings = _settings()
    record = _update(record.id, status="running", attempts=record.attempts + 1, started_at=_now(), error=None)
    dataset = get_dataset(record.dataset)
    limit_ms = settings.limits_for("exports.run", "exports").time_limit_ms
    budget_s = max(1.0, limit_ms / 1000 - 30)
    try:
        with db.read() as conn:
            source = dataset.source(period=record.period, filters=dict(record.filters))
            if isinstance(source, Select):
                # On a Core connection an ORM select yields plain rows: no model built per row.
                source = conn.execution_options(yield_per=settings.exports.batch_size).execute(source)
            rows = _Counted(rows_of(source), time.monotonic() + budget_s, budget_s)
            chunks = encode(record.fmt, rows, dataset.columns)
            if record.gzip:
                chunks = gzipped(chunks)
            content_type = "application/gzip" if record.gzip else CONTENT_TYPES[record.fmt]
            stored = wiring.storage().put(key=record.storage_key, chunks=chunks, content_type=content_type)
    except BaseException as exc:
        if isinstance(exc, PermanentError | InvalidPayload) or final_attempt():
            failed = _update(record.id, status="failed", error=f"{type(exc).__name__}: {exc}"[:1000],
                             finished_at=_now())  # fmt: skip
            _announce(failed, "export_failed")
        raise
    done = _update(record.id, status="done", rows=rows.count, size=stored.size, sha256=stored.sha256,
                   finished_at=_now())  # fmt: skip
    logger.info("export %s: %d rows, %d bytes to %s", done.id, rows.count, stored.size, done.storage_key)
    _announce(done, "export_ready")
    return "done"


def _announce(record: ExportRecord, template: str) -> None:
    if record.requested_by is None:
        return
    from .. import notifications

    info = _info(record)
    context = {"export_id": record.id, "dataset": record.dataset, "period": record.period, "fmt": record.fmt,
               "rows": record.rows or 0, "size": record.size or 0, "url": info.url,
               "error": record.error}  # fmt: skip
    notifications.send(template, record.requested_by, context, channels=["email"],
                       key=f"export:{record.id}:{template}")  # fmt: skip
