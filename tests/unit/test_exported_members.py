"""Every public name is exported, and every export exists (as httpx checks its own)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

import bgjobs


def test_all_is_sorted_and_complete() -> None:
    public = {
        n for n in dir(bgjobs) if not n.startswith("_") and not isinstance(getattr(bgjobs, n), type(bgjobs))
    }
    assert public <= set(bgjobs.__all__) | {"annotations"}
    assert bgjobs.__all__ == sorted(bgjobs.__all__, key=str.casefold) or bgjobs.__all__ == sorted(
        bgjobs.__all__
    )


@pytest.mark.parametrize(
    "module", ["bgjobs", "bgjobs.ports", "bgjobs.errors", "bgjobs.testing", "bgjobs.settings", "bgjobs.money"]
)
def test_every_exported_name_exists(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"


def test_importing_bgjobs_creates_nothing() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bgjobs, bgjobs.testing, bgjobs.ports, bgjobs.adapters.smtp, bgjobs.adapters.localfs;"
        "import bgjobs.runtime as r; assert r.peek() is None;"
        "bad = [m for m in sys.modules if m.startswith(('prometheus_client', 'django'))]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_worker_entry_module_never_imports_django(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from bgjobs import db

    url = f"sqlite:///{tmp_path / 'worker.db'}"
    db.upgrade(db.engine_for(url))  # the worker checks the database's revision at boot
    code = (
        "import sys, bgjobs.actors;"
        "assert 'outbox.relay' in bgjobs.actors.broker.actors;"
        "bad = [m for m in sys.modules if m.startswith(('django', 'dramatiq_crontab', 'apscheduler'))];"
        "assert not bad, bad"
    )
    env = {**os.environ, "BGJOBS_BROKER_URL": "stub://", "BGJOBS_METRICS__ENABLED": "false",
           "BGJOBS_DATABASE_URL": url}  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_importing_bgjobs_loads_no_family_database_or_broker_until_asked() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bgjobs;"
        "heavy = ('sqlalchemy', 'sqlmodel', 'redis', 'dramatiq', 'bgjobs.payouts', 'bgjobs.webhooks');"
        "bad = [m for m in sys.modules if m.startswith(heavy)]; assert not bad, bad;"
        "bgjobs.payouts; assert 'bgjobs.payouts' in sys.modules and 'sqlalchemy' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
