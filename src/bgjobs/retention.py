"""How long each table bgjobs owns keeps its rows: declared by the module that owns the table.

The cleanup family runs these as its ``bgjobs.*`` policies (docs/cleanup.md). Each family says
what of its own may go (``bgjobs_webhook_deliveries`` once delivered or failed, ...) beside its
models, so the cleanup family knows no other family's tables, statuses or columns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table

from .settings import Settings

__all__ = ["Retention", "declared", "keep"]


@dataclass(frozen=True)
class Retention:
    name: str
    table: str
    column: str
    #: The retention in days, read from settings (0 turns the policy off).
    days: Callable[[Settings], int]
    #: Which rows may go at all (finished ones), as a clause on the table.
    where: Callable[[Table], Any] | None = None
    #: Policies run in this order (lower first): children before parents.
    order: int = 900


_lock = threading.Lock()
_declared: dict[str, Retention] = {}


def keep(
    name: str, table: str, column: str, *, days: Callable[[Settings], int],
    where: Callable[[Table], Any] | None = None, order: int = 900,
) -> None:  # fmt: skip
    """Declare the retention of one of bgjobs's tables (at import of the module that owns it)."""
    with _lock:
        _declared[name] = Retention(name, table, column, days, where, order)


def declared() -> list[Retention]:
    """Every retention declared by the modules imported so far."""
    with _lock:
        return list(_declared.values())
