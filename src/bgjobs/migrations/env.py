"""Alembic's environment for bgjobs's own migrations.

It is run by :mod:`bgjobs.migrations` (``bgjobs db upgrade``, ``bgjobs.db.upgrade()``), never by a
host's ``alembic`` command: bgjobs keeps its revision in a table of its own
(``bgjobs_alembic_version``) and looks only at ``bgjobs_*`` tables, so it never touches the host's
tables or the host's own Alembic history.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from bgjobs.migrations import VERSION_TABLE, include_object

config = context.config
options: dict[str, Any] = {
    "version_table": VERSION_TABLE,
    "include_object": include_object,
    "target_metadata": config.attributes.get("target_metadata"),
    "compare_type": True,
    # SQLite cannot ALTER most things: autogenerate writes batch operations (copy and move).
    "render_as_batch": True,
}

if context.is_offline_mode():
    context.configure(url=config.attributes["url"], literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes["connection"]
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()
