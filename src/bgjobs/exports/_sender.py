"""Requesting an export (the host side): record it, enqueue it, read it back.

``request`` checks everything a worker would refuse (dataset, format, filters, recipient) so a
bad request fails in the caller, records the export under a storage key made safe here, and
sends :data:`~bgjobs.exports.tasks.run_export`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from sqlmodel import col, select

from .. import db, runtime, wiring
from ..clock import now as _now
from ..errors import InvalidPayload, PermanentError
from ..notifications import Recipient
from ..ports.storage import check_key
from ..recovery import recovery_sweep
from ._datasets import get_dataset
from ._formats import FORMATS
from ._models import CLAIMS, ExportInfo, ExportJob, ExportRecord
from .tasks import run_export

__all__ = ["exports", "get", "info", "request", "resend_pending", "storage_key"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part).strip("._") or "_"


def storage_key(record: ExportRecord) -> str:
    """The object's key: the configured prefix and the file-name template, each part made safe."""
    s = runtime.current().settings.exports
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
        who = Recipient.of(requested_by).model_dump(mode="json")
    record = ExportRecord(
        id=f"exp_{uuid.uuid4().hex[:24]}", key=key, dataset=dataset, fmt=fmt, gzip=gzip, period=period,
        filters=dict(filters or {}), requested_by=who, storage_key="",
    )  # fmt: skip
    record.storage_key = storage_key(record)
    with db.session() as s:
        if not db.insert_new(s, ExportRecord, record.model_dump(), unique=("key",) if key else None):
            existing = s.exec(select(ExportRecord).where(ExportRecord.key == key)).one()
            return existing.id
    run_export.send(ExportJob(export_id=record.id, owner=_owner(who)))
    return record.id


def _owner(requested_by: Mapping[str, Any] | None) -> str | None:
    return None if requested_by is None else requested_by.get("user_id")


@recovery_sweep("exports")
def resend_pending() -> int:
    """After the store lost its data: the jobs of the exports not started yet, and of those whose
    worker died with it (its claim has run out); one that a worker runs now keeps running."""
    with db.session() as s:
        found = list(s.exec(
            select(ExportRecord.id, ExportRecord.requested_by).where(CLAIMS.where_free(_now()))))  # fmt: skip
    for export_id, requested_by in found:
        run_export.send(ExportJob(export_id=export_id, owner=_owner(requested_by)))
    return len(found)


def get(export_id: str) -> ExportInfo:
    """An export's status, row count, size, SHA-256, key, and (once done) a URL from the storage adapter.

    Raises:
        InvalidPayload: no export has that id.
    """
    with db.session() as s:
        record = s.get(ExportRecord, export_id)
    if record is None:
        raise InvalidPayload(f"export: no export {export_id!r}")
    return info(record)


def info(record: ExportRecord) -> ExportInfo:
    """What :func:`get` shows of a record."""
    url = None
    if record.status == "done":
        expiry = runtime.current().settings.exports.url_expiry_s
        url = wiring.storage().url(key=record.storage_key, expires_in=expiry)
    return ExportInfo(
        id=record.id, dataset=record.dataset, fmt=record.fmt, status=record.status, rows=record.rows,
        size=record.size, sha256=record.sha256, storage_key=record.storage_key, url=url, error=record.error,
        created_at=record.created_at, finished_at=record.finished_at,
    )  # fmt: skip


def exports(*, dataset: str | None = None, limit: int = 50) -> list[ExportInfo]:
    """The latest exports, newest first."""
    query = select(ExportRecord).order_by(col(ExportRecord.created_at).desc()).limit(limit)
    if dataset is not None:
        query = query.where(ExportRecord.dataset == dataset)
    with db.session() as s:
        return [info(record) for record in s.exec(query)]
