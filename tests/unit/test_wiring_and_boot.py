from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import inspect

import bgjobs
from bgjobs import db, wiring
from bgjobs.adapters.console import ConsoleMailer
from bgjobs.adapters.localfs import LocalFileStorage
from bgjobs.broker import build_broker
from bgjobs.cli import main
from bgjobs.errors import ConfigurationError
from bgjobs.ports import EmailMessage
from bgjobs.settings import LocalStorageSettings, Settings
from bgjobs.worker import _boot
from tests.support import setup_hooks


def test_boot_runs_the_setup_hook_imports_jobs_and_builds_named_adapters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'boot.db'}"
    db.upgrade(db.engine_for(url))
    settings = Settings(
        broker_url="stub://", database_url=url,
        setup="tests.support.setup_hooks:setup",
        jobs=["tests.support.stub_jobs"],
        storage="localfs",
        localfs=LocalStorageSettings(root=str(tmp_path / "files")),
    )
    broker = _boot(settings)
    assert setup_hooks.calls == ["setup"]
    assert wiring.mailer() is setup_hooks.mailer
    assert isinstance(wiring.storage(), LocalFileStorage)
    assert wiring.storage().url(key="a.txt").startswith("file://")
    assert {"greet", "flaky"} <= set(broker.actors)
    assert {
        "default",
        "notifications",
        "webhooks",
        "payouts",
        "exports",
        "cleanup",
    } <= broker.get_declared_queues()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"mailer": "myapp.nowhere:Mailer"}, "^BGJOBS_MAILER: cannot load 'myapp.nowhere:Mailer'"),
        ({"setup": "myapp.nowhere:setup"}, "^BGJOBS_SETUP: cannot load 'myapp.nowhere:setup'"),
        ({"storage": "console"}, "the console adapters do not include a storage"),
        ({"mailer": "bgjobs.adapters.localfs:LocalFileStorage"}, "mailer must be a Mailer"),
        ({"jobs": ["myapp.missing_jobs"]}, "BGJOBS_JOBS: cannot import 'myapp.missing_jobs'"),
    ],
)
def test_boot_refuses_bad_wiring_with_a_clear_message(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):
        _boot(Settings(broker_url="stub://", **overrides))  # type: ignore[arg-type]


def test_configure_checks_the_port_type() -> None:
    with pytest.raises(ConfigurationError, match="sms must be a SmsSender"):
        bgjobs.configure(sms=ConsoleMailer())  # type: ignore[arg-type]


def test_an_amqp_url_selects_rabbitmq_with_its_coordination_store() -> None:
    broker = build_broker(Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/",
                                   coordination_url="redis://127.0.0.1:6399/3"))  # fmt: skip
    assert isinstance(broker, RabbitmqBroker)
    assert broker.confirm_delivery  # send() returns once RabbitMQ has the message
    assert "webhooks" in broker.get_declared_queues()
    assert broker.client.connection_pool.connection_kwargs["db"] == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("coordination", [None, "memcached://127.0.0.1:11211"])
def test_rabbitmq_without_a_redis_coordination_store_is_refused_naming_the_setting(
    coordination: str | None,
) -> None:
    settings = Settings(broker_url="amqp://guest:secret@127.0.0.1:5672/", coordination_url=coordination)
    with pytest.raises(ConfigurationError, match="BGJOBS_COORDINATION_URL") as refused:
        build_broker(settings)
    assert "secret" not in str(refused.value)


def test_an_unknown_broker_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="BGJOBS_BROKER_URL='kafka://x'"):
        build_broker(Settings(broker_url="kafka://x"))


def test_console_adapter_logs_masked_recipients(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bgjobs.console")
    ConsoleMailer().send(message=EmailMessage(to=("jane.doe@example.com",), subject="Hi", text="t"))
    assert "j***@example.com" in caplog.text
    assert "jane.doe" not in caplog.text


def test_db_upgrade_command_creates_the_tables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BGJOBS_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out == "upgraded the database from empty to 0008\n"
    assert "bgjobs_idempotency" in inspect(db.engine_for(f"sqlite:///{tmp_path / 'x.db'}")).get_table_names()


def test_cli_reports_configuration_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS", "x")
    from bgjobs import settings

    settings.get_settings.cache_clear()
    assert main(["db", "upgrade"]) == 2
    assert capsys.readouterr().err.startswith("bgjobs: BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS='x'")


def test_the_wheel_ships_the_lua_script_and_the_typed_marker(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("bgjobs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bgjobs/maintenance.lua" in names
    assert "bgjobs/undecodable.lua" in names
    assert "bgjobs/py.typed" in names
    # The migrations run from the installed package: env, template and every revision
    assert {"bgjobs/migrations/env.py", "bgjobs/migrations/script.py.mako",
            "bgjobs/migrations/versions/0001_baseline.py"} <= set(names)  # fmt: skip
    assert any(n.endswith("entry_points.txt") for n in names)
