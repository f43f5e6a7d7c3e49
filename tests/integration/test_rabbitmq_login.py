"""RabbitMQ on a real node on 127.0.0.1: a wrong password is one line from every command and stops
the worker after a bounded time, the password never shown; the right one sends and runs a job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import spawn
from tests.support.rabbitmq import RabbitNode
from tests.support.workers import ROOT

WRONG = "not-the-password"


@pytest.fixture
def rabbit(rabbit_vhost: RabbitNode) -> RabbitNode:
    return rabbit_vhost


@pytest.fixture(autouse=True)
def _coordination(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_COORDINATION_URL", redis_url)


def _env(rabbit: RabbitNode, tmp_path: Path, password: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}
    env.update(
        {
            "BGJOBS_BROKER_URL": rabbit.url(password),
            "BGJOBS_COORDINATION_URL": os.environ["TEST_COORDINATION_URL"],
            "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
            "BGJOBS_METRICS__ENABLED": "false",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
    )
    subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", "db", "upgrade"], env=env, check=True, capture_output=True
    )
    return env


def masked(rabbit: RabbitNode) -> str:
    return f"amqp://{rabbit.user}:***@127.0.0.1:{rabbit.port}/{rabbit.vhost}"


@pytest.mark.parametrize("command", [["trigger", "cleanup.daily"], ["status"]])
def test_a_wrong_password_is_one_line_from_a_command_with_the_password_masked(
    rabbit: RabbitNode, tmp_path: Path, command: list[str]
) -> None:
    env = _env(rabbit, tmp_path, WRONG)  # no management API: status counts through AMQP
    done = subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"bgjobs: RabbitMQ at {masked(rabbit)} refused the login; check the user and password in "
        "BGJOBS_BROKER_URL (and that the user may use its virtual host)"
    ]
    assert WRONG not in done.stdout + done.stderr


def test_a_wrong_management_password_is_one_line_naming_its_setting(
    rabbit: RabbitNode, tmp_path: Path
) -> None:
    env = _env(rabbit, tmp_path)
    env["BGJOBS_RABBITMQ__MANAGEMENT_URL"] = rabbit.management_url.replace(rabbit.password, WRONG)
    done = subprocess.run([sys.executable, "-m", "bgjobs.cli", "status"], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"bgjobs: RabbitMQ's management API at http://{rabbit.user}:***@127.0.0.1:{rabbit.management_port} "
        "answered 401; check the user and password in BGJOBS_RABBITMQ__MANAGEMENT_URL (the user needs the "
        "monitoring tag)"
    ]


def test_a_worker_whose_login_is_refused_stops_within_a_bounded_time_saying_why(
    rabbit: RabbitNode, tmp_path: Path
) -> None:
    env = _env(rabbit, tmp_path, WRONG)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "dramatiq", "bgjobs.actors", "-p", "1", "-t", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    took = time.monotonic() - started
    shown = done.stdout + done.stderr
    assert done.returncode != 0 and took < 60, (took, shown)
    assert f"bgjobs: configuration error: RabbitMQ at {masked(rabbit)} refused the login" in shown
    assert WRONG not in shown and "Traceback" not in shown


def test_with_the_right_password_a_job_is_sent_and_runs(rabbit: RabbitNode, tmp_path: Path) -> None:
    env = _env(rabbit, tmp_path)
    sent = subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", "trigger", "cleanup.daily", "--dry-run", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr
    worker = spawn(
        [sys.executable, "-m", "dramatiq", "bgjobs.actors", "-p", "1", "-t", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            runs = subprocess.run(
                [sys.executable, "-m", "bgjobs.cli", "runs", "--all"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if "cleanup.daily" in runs.stdout and "succeeded" in runs.stdout:
                break
            assert time.monotonic() < deadline, runs.stdout + runs.stderr
            time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_an_unreachable_coordination_store_is_one_line_naming_its_setting(
    rabbit: RabbitNode, tmp_path: Path
) -> None:
    env = _env(rabbit, tmp_path)
    env["BGJOBS_COORDINATION_URL"] = "redis://:store-secret@127.0.0.1:1/0"
    for command in (["status"], ["dead-letters", "list"]):
        done = subprocess.run([sys.executable, "-m", "bgjobs.cli", *command], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("bgjobs: cannot reach the coordination store at redis://:***@127.0.0.1:1/0 (")
        assert line.endswith("is it running? check BGJOBS_COORDINATION_URL")
