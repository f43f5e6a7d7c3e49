"""Retention policies: which rows of which table may go, and how (delete, archive, export then delete).

A policy is declared in code (``register_policy``) or in settings (``BGJOBS_CLEANUP__POLICIES``).
It names a table, its timestamp column and an age; an optional filter narrows it. A policy
without an age, or younger than ``BGJOBS_CLEANUP__MIN_AGE_DAYS``, is refused when declared: a
typo must not empty a table.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import Table, and_
from sqlmodel import SQLModel

from .. import retention, runtime
from ..errors import ConfigurationError
from ..migrations.schema import MODEL_MODULES

__all__ = ["Action", "Policy", "bgjobs_policies", "parse_age", "policies", "register_policy", "reset"]

Action = Literal["delete", "archive", "export-then-delete"]
Where = Callable[[Table], Any]

_AGE = re.compile(r"^\s*(\d+)\s*(d|h|w)\s*$")


def parse_age(value: str | timedelta | None, *, name: str) -> timedelta:
    """``365d``, ``12h``, ``4w`` or a timedelta.

    Raises:
        ConfigurationError: no age, or one that does not parse; the message names the policy.
    """
    if isinstance(value, timedelta):
        return value
    match = _AGE.match(value or "")
    if not match:
        raise ConfigurationError(
            f"cleanup policy {name}: older_than={value!r}; give an age like 365d, 12h or 4w"
        )
    n, unit = int(match.group(1)), match.group(2)
    try:
        return {"d": timedelta(days=n), "h": timedelta(hours=n), "w": timedelta(weeks=n)}[unit]
    except OverflowError:
        raise ConfigurationError(
            f"cleanup policy {name}: older_than={value!r} is too long; give an age like 365d, 12h or 4w"
        ) from None


@dataclass(frozen=True)
class Policy:
    name: str
    table: str
    column: str
    older_than: timedelta
    action: Action = "delete"
    #: Extra conditions: column -> value equality, or a function of the table returning a clause.
    where: Mapping[str, Any] | Where | None = None
    #: Where ``archive`` copies rows; ``<table>_archive`` by default.
    archive_table: str | None = None
    #: Policies run in this order (lower first): children before parents.
    order: int = 100
    owner: str = field(default="host", compare=False)

    def clause(self, table: Table) -> Any:
        if self.where is None:
            return None
        if callable(self.where):
            return self.where(table)
        return and_(*(table.c[name] == value for name, value in self.where.items()))


_lock = threading.Lock()
_policies: dict[str, Policy] = {}


def _table_name(table: str | type[SQLModel]) -> str:
    if isinstance(table, str):
        return table
    return str(table.__tablename__)


def register_policy(
    name: str,
    table: str | type[SQLModel],
    *,
    column: str,
    older_than: str | timedelta | None,
    action: Action = "delete",
    where: Mapping[str, Any] | Where | None = None,
    archive_table: str | None = None,
    order: int = 100,
    min_age: timedelta | None = None,
) -> Policy:
    """Declare a retention policy (replacing one of the same name).

    Raises:
        ConfigurationError: no age, an age under the floor, or an unknown action.
    """
    age = parse_age(older_than, name=name)
    if min_age is None:
        min_age = timedelta(days=runtime.current().settings.cleanup.min_age_days)
    if age < min_age:
        raise ConfigurationError(
            f"cleanup policy {name}: older_than={age} is under the floor of {min_age} "
            "(BGJOBS_CLEANUP__MIN_AGE_DAYS)"
        )
    if action not in ("delete", "archive", "export-then-delete"):
        raise ConfigurationError(
            f"cleanup policy {name}: action {action!r}; use delete, archive or export-then-delete"
        )
    policy = Policy(name, _table_name(table), column, age, action, where, archive_table, order)
    with _lock:
        _policies[name] = policy
    return policy


def reset() -> None:
    with _lock:
        _policies.clear()


def bgjobs_policies(settings: Any) -> list[Policy]:
    """bgjobs's own policies, as the modules owning the tables declare them (:mod:`bgjobs.retention`);
    a retention of 0 days turns one off."""
    for module in MODEL_MODULES:  # every table's owner, so that each has declared its retention
        importlib.import_module(module)
    found = []
    for r in retention.declared():
        age = r.days(settings) * timedelta(days=1)
        if age > timedelta(0):
            found.append(Policy(r.name, r.table, r.column, age, where=r.where, order=r.order, owner="bgjobs"))
    return found


def policies(settings: Any = None) -> list[Policy]:
    """Every policy: bgjobs's own, the host's, and those in settings, in run order."""
    if settings is None:
        settings = runtime.current().settings
    found = {p.name: p for p in bgjobs_policies(settings)}
    floor = timedelta(days=settings.cleanup.min_age_days)
    for item in settings.cleanup.policies:
        p = register_policy(
            item.name, item.table, column=item.column, older_than=item.older_than, action=item.action,
            where=item.where or None, archive_table=item.archive_table, order=item.order, min_age=floor,
        )  # fmt: skip
        found[p.name] = p
    with _lock:
        found.update(_policies)
    return sorted(found.values(), key=lambda p: (p.order, p.name))
