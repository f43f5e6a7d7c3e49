"""The schema the code declares, and what separates a database from it (``bgjobs db check``).

The only part of :mod:`bgjobs.migrations` that imports the model modules. Upgrading never needs
them (the baseline revision carries its own metadata, and each later revision its own
operations), so :func:`bgjobs.db.upgrade` runs without importing the models that import
``bgjobs.db``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import TABLE_PREFIX, _behind, _compare, _current

if TYPE_CHECKING:
    from sqlalchemy import Engine, MetaData

__all__ = ["MODEL_MODULES", "differences", "models_metadata"]

#: The modules whose import declares every bgjobs table.
MODEL_MODULES = (
    "bgjobs.idempotency", "bgjobs.outbox", "bgjobs.runs", "bgjobs.audit", "bgjobs.exports._models",
    "bgjobs.notifications._models", "bgjobs.notifications._preferences", "bgjobs.payouts._models",
    "bgjobs.webhooks._models", "bgjobs.portal._models",
)  # fmt: skip


def models_metadata() -> MetaData:
    """The metadata of every bgjobs model, as the code declares it (imports the model modules)."""
    from sqlalchemy import MetaData
    from sqlmodel import SQLModel

    for module in MODEL_MODULES:
        importlib.import_module(module)
    found = MetaData()
    for name, table in SQLModel.metadata.tables.items():
        if name.startswith(TABLE_PREFIX):
            table.to_metadata(found)
    return found


def differences(engine: Engine | None = None) -> list[str]:
    """What separates the database from this bgjobs: a missing revision, then each schema difference."""
    from .. import runtime

    with (engine or runtime.current().engine).connect() as conn:
        behind = _behind(_current(conn))
        return ([behind] if behind else []) + _compare(conn, models_metadata())
