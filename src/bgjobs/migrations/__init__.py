"""bgjobs's schema migrations: Alembic scripts shipped in the wheel, run by ``bgjobs db upgrade``.

bgjobs owns ``bgjobs_*`` tables in the host's own database, so its migrations keep out of the
host's way: their revision lives in ``bgjobs_alembic_version`` (never the host's
``alembic_version``), and only ``bgjobs_*`` tables are ever compared, created or altered.

- :func:`upgrade` runs the migrations to head, under a PostgreSQL advisory lock so two deploys
  at once do not race (the second waits, then finds nothing to do). A database created by
  ``create_all`` before migrations existed (tables, no revision) is adopted: checked against the
  baseline, stamped, then upgraded; one that does not match is refused, naming what differs.
- :func:`require_current` is the start-up check of the worker, the scheduler and the CLI.
- :func:`differences` is ``bgjobs db check``: what separates the database from the code
  (:mod:`.schema`, which alone imports the model modules: upgrading never needs them, so
  ``bgjobs.db`` can call :func:`upgrade` without the models that import ``bgjobs.db``).

See docs/migrations.md for writing a migration.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ConfigurationError, DatabaseBehind, SchemaMismatch

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection, Engine, MetaData

__all__ = [
    "BASELINE",
    "VERSION_TABLE",
    "DatabaseBehind",
    "SchemaMismatch",
    "UpgradeReport",
    "alembic_config",
    "current",
    "differences",
    "downgrade",
    "head",
    "history",
    "include_object",
    "models_metadata",
    "require_current",
    "stamp",
    "upgrade",
    "upgrade_sql",
]

VERSION_TABLE = "bgjobs_alembic_version"
TABLE_PREFIX = "bgjobs_"
#: The first revision: the schema as ``create_all`` made it before bgjobs shipped migrations.
BASELINE = "0001"
#: PostgreSQL advisory lock key held while migrating ("bgjobs" in ASCII).
LOCK_KEY = 0x62676A6F6273


@dataclass(frozen=True)
class UpgradeReport:
    before: str | None
    after: str
    #: True when an unversioned database created by ``create_all`` was checked and stamped.
    adopted: bool

    def describe(self) -> str:
        """One line for the operator."""
        if self.adopted:
            return (f"adopted the existing bgjobs tables (they match revision {BASELINE}) and upgraded "
                    f"to {self.after}")  # fmt: skip
        if self.before == self.after:
            return f"nothing to do: the database is at {self.after} (head)"
        return f"upgraded the database from {self.before or 'empty'} to {self.after}"


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Only bgjobs's tables (and what is in them) are compared or migrated."""
    if type_ == "table":
        return bool(name) and str(name).startswith(TABLE_PREFIX) and name != VERSION_TABLE
    table = getattr(obj, "table", None)
    return table is None or str(table.name).startswith(TABLE_PREFIX)


def _quiet_alembic() -> None:
    """Alembic logs its plugins and dialect at INFO on every check: ten lines at each worker boot.
    Its own messages matter only when they warn, unless the host set the level itself."""
    import logging

    found = logging.getLogger("alembic")
    if found.level == logging.NOTSET:
        found.setLevel(logging.WARNING)


def alembic_config(
    *, connection: Connection | None = None, url: str | None = None, output: TextIO | None = None,
    metadata: MetaData | None = None,
) -> Config:  # fmt: skip
    """An Alembic ``Config`` for bgjobs's scripts (no ``alembic.ini``): for ``alembic.command`` calls,
    such as generating a draft revision against ``metadata`` (docs/migrations.md)."""
    _quiet_alembic()  # before the import, which logs its plugins
    from alembic.config import Config

    config = Config(output_buffer=output, stdout=output or io.StringIO())
    config.set_main_option("script_location", str(resources.files("bgjobs") / "migrations"))
    config.attributes.update(connection=connection, url=url, target_metadata=metadata)
    return config


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this bgjobs needs."""
    found = _scripts().get_current_head()
    assert found is not None
    return found


def history() -> list[tuple[str, str | None, str]]:
    """Every revision, oldest first: (revision, the one it follows, its title)."""
    revisions = list(_scripts().walk_revisions())
    rows = [(r.revision, r.down_revision if isinstance(r.down_revision, str) else None, r.doc)
            for r in revisions]  # fmt: skip
    return list(reversed(rows))


def _current(connection: Connection) -> str | None:
    _quiet_alembic()
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def current(engine: Engine | None = None) -> str | None:
    """The database's bgjobs revision (None when bgjobs never migrated it)."""
    from .. import runtime

    with (engine or runtime.current().engine).connect() as conn:
        return _current(conn)


def _behind(found: str | None) -> str | None:
    """The line saying the database is not at head, or None when it is."""
    needed = head()
    if found == needed:
        return None
    return f"the database is at revision {found or 'none'}, this bgjobs needs {needed}"


def require_current(engine: Engine | None = None) -> None:
    """The start-up check: the database is at the revision this bgjobs needs.

    Raises:
        DatabaseBehind: one line, naming both revisions and the command that fixes it.
    """
    if (line := _behind(current(engine))) is not None:
        raise DatabaseBehind(f"{line}: run 'bgjobs db upgrade'")


def _describe(diff: Any) -> str:
    """One line per difference Alembic's comparison found (database vs the expected schema)."""
    if isinstance(diff, list):  # column changes come as a list of one tuple per attribute
        diff = diff[0]
    kind = diff[0]
    if kind == "add_table":
        return f"table {diff[1].name} is missing"
    if kind == "remove_table":
        return f"table {diff[1].name} is not in bgjobs's schema"
    if kind == "add_column":
        return f"table {diff[2]} column {diff[3].name} is missing"
    if kind == "remove_column":
        return f"table {diff[2]} column {diff[3].name} is not in bgjobs's schema"
    if kind in ("add_index", "remove_index"):
        index = diff[1]
        state = "is missing" if kind == "add_index" else "is not in bgjobs's schema"
        return f"table {index.table.name} index {index.name} {state}"
    if kind in ("add_constraint", "remove_constraint"):
        constraint = diff[1]
        state = "is missing" if kind == "add_constraint" else "is not in bgjobs's schema"
        columns = ", ".join(c.name for c in constraint.columns)
        return f"table {constraint.table.name} constraint ({columns}) {state}"
    if kind.startswith("modify_"):
        _, _, table, column, _, existing, wanted = diff
        what = kind.removeprefix("modify_")
        return f"table {table} column {column} {what} is {existing}, expected {wanted}"
    return str(diff)


def _compare(connection: Connection, metadata: MetaData) -> list[str]:
    from alembic.autogenerate import compare_metadata
    _quiet_alembic()
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={
        "include_object": include_object, "compare_type": True, "version_table": VERSION_TABLE,
    })  # fmt: skip
    diffs = compare_metadata(context, metadata)
    # A missing table is one line, not one more per index and constraint it would have.
    missing = {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "add_table"}
    return sorted(
        line for d in diffs
        if not (isinstance(d, tuple) and d[0] != "add_table" and _table_of(d) in missing)
        for line in [_describe(d)]
    )  # fmt: skip


def _table_of(diff: tuple[Any, ...]) -> str | None:
    table = getattr(diff[1], "table", None)
    return str(table.name) if table is not None else None


def _baseline_metadata() -> MetaData:
    script = _scripts().get_revision(BASELINE)
    assert script is not None and script.module is not None
    return script.module.BASELINE  # type: ignore[no-any-return]


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection holding bgjobs's migration lock (PostgreSQL: a session advisory lock)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            conn.commit()
        try:
            yield conn
        finally:
            if postgres:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                conn.commit()


def upgrade(engine: Engine | None = None) -> UpgradeReport:
    """Migrate the database to head (adopting an unversioned ``create_all`` database first).

    Raises:
        SchemaMismatch: bgjobs tables exist without a revision and differ from the baseline;
            the message names each table and column, and nothing was changed.
    """
    from alembic import command

    from .. import runtime

    with _locked(engine or runtime.current().engine) as conn:
        before = _current(conn)
        adopted = before is None and _adoptable(conn, nothing="changed")
        conn.commit()
        if adopted:
            command.stamp(alembic_config(connection=conn), BASELINE)
            conn.commit()
        command.upgrade(alembic_config(connection=conn), "head")
        conn.commit()
        return UpgradeReport(before, _current(conn) or head(), adopted)


def downgrade(engine: Engine, revision: str) -> str | None:
    """Migrate the database down to ``revision`` (``base`` for none); returns where it is now.

    Only for rolling a deploy back: docs/migrations.md says which revisions can be undone and
    what undoing them loses.
    """
    from alembic import command

    with _locked(engine) as conn:
        command.downgrade(alembic_config(connection=conn), revision)
        conn.commit()
        return _current(conn)


def upgrade_sql(url: str, out: TextIO, *, start: str | None = None) -> None:
    """Write the SQL that upgrades a PostgreSQL database to head, for a DBA to review and run,
    instead of running it; it changes nothing.

    Without ``start``, the database is asked where it is (read only): at a revision, the SQL goes
    from there; unversioned with bgjobs 0.1's tables matching the baseline, the script adopts them
    (creates the version table at ``0001``) and goes on from there; empty, it creates everything.

    Raises:
        SchemaMismatch: unversioned bgjobs tables that differ from the baseline, naming each difference.
    """
    from alembic import command

    if not url.startswith("postgresql"):
        raise ConfigurationError("bgjobs db upgrade --sql writes PostgreSQL; BGJOBS_DATABASE_URL is not")
    adopt = False
    if start is None:
        start, adopt = _where_from(url)
    config = alembic_config(url=url, output=out)
    if adopt:
        out.write(f"-- bgjobs: adopting the existing bgjobs tables (they match revision {BASELINE})\n")
        command.stamp(config, BASELINE, sql=True)
    if start == head():
        out.write(f"-- bgjobs: nothing to do: the database is at {start} (head)\n")
        return
    command.upgrade(config, f"{start}:head" if start else "head", sql=True)


def _where_from(url: str) -> tuple[str | None, bool]:
    """The revision a database is at (None: empty), and whether it is to be adopted first."""
    from ..engines import engine_for

    with engine_for(url).connect() as conn:
        found = _current(conn)
        if found is not None:
            return found, False
        return (BASELINE, True) if _adoptable(conn, nothing="written") else (None, False)


def _adoptable(conn: Connection, *, nothing: str) -> bool:
    """Whether an unversioned database holds bgjobs 0.1's tables (to be adopted at the baseline);
    False when it holds none.

    Raises:
        SchemaMismatch: they differ from the baseline, naming each difference; nothing was ``nothing``.
    """
    from sqlalchemy import inspect

    names = inspect(conn).get_table_names()
    if not [t for t in names if t.startswith(TABLE_PREFIX) and t != VERSION_TABLE]:
        return False
    problems = _compare(conn, _baseline_metadata())
    if problems:
        raise SchemaMismatch(
            f"bgjobs tables exist without a revision and do not match revision {BASELINE}: "
            + "; ".join(problems) + f". Nothing was {nothing}"
        )
    return True


def stamp(revision: str, engine: Engine | None = None) -> str:
    """Record ``revision`` as the database's without running anything: for a database a DBA
    upgraded by hand from ``bgjobs db upgrade --sql``. Returns the revision recorded.

    Raises:
        ConfigurationError: no such revision (the message lists them).
    """
    from alembic import command

    from .. import runtime

    known = [r for r, _, _ in history()]
    if revision not in (*known, "head"):
        raise ConfigurationError(f"no bgjobs revision {revision!r}; the revisions: {', '.join(known)}")
    with _locked(engine or runtime.current().engine) as conn:
        command.stamp(alembic_config(connection=conn), revision)
        conn.commit()
        return _current(conn) or revision


# The schema the code declares, after everything it uses from here is defined.
from .schema import differences, models_metadata  # noqa: E402
