"""Every Python block of README.md and docs/ runs as part of the suite (Sybil; ``nox -s tests`` runs
``pytest docs README.md`` after the tests), so an example that no longer works as written fails
here before a reader finds it.

Each page's blocks share one namespace, in order. A page gives what its fragments assume (a host's
model, an adapter, a request's objects) in hidden setup blocks (``<!-- invisible-code-block:
python ... -->``) beside them, and runs on the stub broker and a SQLite file of its own, with the
bundled memory adapters wired, as a host's unit tests would (``jobs`` is the harness).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

from bgjobs import db, runtime, settings
from bgjobs.testing import JobsHarness, stub_jobs


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsHarness]:
    """A page's world, shared by its blocks in order: no BGJOBS_* of the machine's, the stub
    broker, a fresh SQLite file."""
    assert "PYTEST_XDIST_WORKER" not in os.environ, (
        "a page's blocks run in order in one process: run them with `pytest -p no:xdist docs README.md`"
    )
    where = tmp_path_factory.mktemp("docs")
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("BGJOBS_")]:
            patch.delenv(name)
        patch.chdir(where)
        patch.setenv("BGJOBS_BROKER_URL", "stub://")
        patch.setenv("BGJOBS_DATABASE_URL", f"sqlite:///{where / 'docs.db'}")
        settings.get_settings.cache_clear()
        runtime.reset()
        current = settings.get_settings()
        db.upgrade(db.engine_for(current.database_url))
        with stub_jobs(settings=current) as harness:
            yield harness
        runtime.reset()
        settings.get_settings.cache_clear()


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md", "docs/*.md"],
    fixtures=["jobs"],
).pytest()
