"""The portal's one table: when each owner's links were last revoked."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

__all__ = ["PortalRevocation"]


class PortalRevocation(SQLModel, table=True):
    """``bgjobs_portal_revocations``: links of ``owner`` issued at or before ``revoked_at`` are refused."""

    __tablename__ = "bgjobs_portal_revocations"

    owner: str = Field(primary_key=True, max_length=200)
    revoked_at: datetime
