"""Exports' table and payload."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from ..claims import Claims
from ..clock import now as _now
from ..typed import Payload

__all__ = ["CLAIMS", "ExportInfo", "ExportJob", "ExportRecord"]


class ExportRecord(SQLModel, table=True):
    __tablename__ = "bgjobs_exports"

    id: str = Field(primary_key=True, max_length=40)
    #: The requester's key: requesting the same key again returns this export.
    key: str | None = Field(default=None, max_length=200, unique=True)
    dataset: str = Field(max_length=100)
    fmt: str = Field(max_length=8)
    gzip: bool = False
    period: str | None = Field(default=None, max_length=100)
    filters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: Who is told when it is done: a notifications ``Recipient`` as JSON, or None.
    requested_by: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    #: ``pending``, ``running``, ``done`` or ``failed``.
    status: str = Field(default="pending", max_length=16, index=True)
    attempts: int = 0
    #: The worker running it (:mod:`bgjobs.claims`), and until when its claim holds.
    lease_until: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=32)
    rows: int | None = None
    size: int | None = Field(default=None, sa_column=Column(BigInteger))
    sha256: str | None = Field(default=None, max_length=64)
    storage_key: str = Field(max_length=1000)
    error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=_now, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None


#: An export is claimed while it runs: two workers never upload one export at once.
CLAIMS = Claims(ExportRecord.__table__, name="export", final=frozenset({"done", "failed"}))  # type: ignore[attr-defined]


class ExportJob(Payload):
    export_id: str
    #: Who asked (``requested_by``'s user id): the key of ``exports.run``'s per-key limits.
    owner: str | None = None


class ExportInfo(BaseModel):
    """An export as ``get`` returns it, with a URL from the storage adapter once it is done."""

    model_config = ConfigDict(frozen=True)

    id: str
    dataset: str
    fmt: str
    status: str
    rows: int | None
    size: int | None
    sha256: str | None
    storage_key: str
    url: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
