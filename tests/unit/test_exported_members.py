"""The public API is exactly what ``__all__`` says, at the root and in every family (as httpx checks
its own): implementation modules are private (``_delivery.py``), so a family package holds its
exported names and nothing else."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

import bgjobs

FAMILIES = ["bgjobs.cleanup", "bgjobs.exports", "bgjobs.notifications", "bgjobs.payouts", "bgjobs.webhooks"]


def test_the_root_exports_exactly_its_all() -> None:
    """Every name the root offers is in ``__all__`` and the other way round; its submodules (the
    core's ``bgjobs.settings``, ``bgjobs.testing``, ...) are modules of their own and not counted."""
    names = {n for n in dir(bgjobs) if not n.startswith("_")}
    public = {n for n in names if not inspect.ismodule(getattr(bgjobs, n))}
    exported = {n for n in bgjobs.__all__ if not inspect.ismodule(getattr(bgjobs, n))} - {"__version__"}
    assert sorted(public) == sorted(exported)
    families = {n for n in bgjobs.__all__ if inspect.ismodule(getattr(bgjobs, n))}
    assert families == {
        "batches", "cleanup", "events", "exports", "notifications", "outbox", "payouts", "webhooks",
        "workflows",
    }  # fmt: skip
    assert bgjobs.__all__ == sorted(bgjobs.__all__)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_exports_exactly_its_all(family: str) -> None:
    import bgjobs.worker

    for module in bgjobs.worker.FAMILY_MODULES:  # every family loaded, as in a worker
        importlib.import_module(module)
    package = importlib.import_module(family)
    public = {n for n in dir(package) if not n.startswith("_")} - {"annotations"}
    assert sorted(public) == sorted(package.__all__)
    loaded = {n for n in vars(package) if not n.startswith("_")} - {"annotations"}
    assert loaded <= set(package.__all__)  # names load on first use (bgjobs.lazy), and nothing else
    assert len(set(package.__all__)) == len(package.__all__)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_exports_no_table(family: str) -> None:
    """Queries return data objects (``Entry``, ``Attempt``); the tables stay bgjobs's to change."""
    package = importlib.import_module(family)
    tables = [n for n in package.__all__ if getattr(getattr(package, n), "__table__", None) is not None]
    assert tables == []


CORE = ["bgjobs", "bgjobs.ports", "bgjobs.errors", "bgjobs.testing", "bgjobs.settings", "bgjobs.money"]


@pytest.mark.parametrize("module", [*CORE, *FAMILIES])
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
        "bgjobs.payouts.record_earning;"
        "assert 'bgjobs.payouts._ledger' in sys.modules and 'sqlalchemy' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("family", "sending"), [
    ("notifications", "send"), ("webhooks", "publish"), ("payouts", "record_earning"), ("exports", "request"),
])  # fmt: skip
def test_sending_never_imports_handling(family: str, sending: str) -> None:
    """A host that imports a family, then its sending function, loads none of what only a worker
    needs: aiohttp, the broker's consumer, a handler module, the webhook dispatcher or transport."""
    import subprocess
    import sys

    worker_only = ("m == 'aiohttp' or m == 'bgjobs.consumer' or "
                   "m.endswith(('.actors', '._dispatch', '._transport'))")  # fmt: skip
    code = (
        f"import sys, bgjobs.{family} as family;"
        "ours = sorted(m for m in sys.modules if m.startswith('bgjobs')); assert len(ours) <= 4, ours;"
        f"family.{sending}; bad = [m for m in sys.modules if {worker_only}]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
