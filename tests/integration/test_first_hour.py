"""What a newcomer's mistakes get: one line naming the cause and the fix, a non-zero exit from a
command, no traceback. Each command runs as a user would run it, in a process of its own."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import bgjobs
from bgjobs import runtime, wiring
from bgjobs.errors import BrokerUnavailable, ConfigurationError
from bgjobs.settings import Settings
from bgjobs.testing import stub_jobs


class Job(bgjobs.Payload):
    n: int


def bgjobs_command(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}
    clean.update({"BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'first.db'}", **env})
    return subprocess.run([sys.executable, "-m", "bgjobs.cli", *argv], env=clean, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BGJOBS_JOBS", "myapp.jobs"), ("BGJOBS_JOBS", "[myapp.jobs]"), ("BGJOBS_ACTORS", "{bad")],
)
def test_a_setting_that_is_not_json_gets_one_line_naming_it_with_an_example(
    tmp_path: Path, variable: str, value: str
) -> None:
    done = bgjobs_command(tmp_path, "status", **{variable: value})
    assert done.returncode == 2
    line = one_line(done)
    assert line.startswith(f"bgjobs: {variable} is not valid JSON (")
    assert f"write it as JSON, for example {variable}='" in line


def test_a_misspelt_setting_is_named_with_the_closest_real_one(tmp_path: Path) -> None:
    done = bgjobs_command(tmp_path, "db", "current", BGJOBS_MAILR="smtp")
    assert done.returncode == 0, done.stderr
    assert one_line(done) == (
        "bgjobs: warning: BGJOBS_MAILR is not a bgjobs setting and is ignored; did you mean BGJOBS_MAILER?"
    )


def test_a_misspelt_setting_in_a_section_is_refused_in_one_line_with_the_closest_one(tmp_path: Path) -> None:
    said = ("bgjobs: BGJOBS_WORKER__MAX_DELIVERYS is not a bgjobs setting; "
            "did you mean BGJOBS_WORKER__MAX_DELIVERIES?")  # fmt: skip
    done = bgjobs_command(tmp_path, "status", BGJOBS_WORKER__MAX_DELIVERYS="3", BGJOBS_BROKER_URL="stub://")
    assert done.returncode == 2
    assert one_line(done) == said
    # and the worker says the same, in one line
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}
    env.update({"BGJOBS_BROKER_URL": "stub://", "BGJOBS_WORKER__MAX_DELIVERYS": "3",
                "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"})  # fmt: skip
    worker = [sys.executable, "-m", "dramatiq", "bgjobs.actors", "-p", "1", "-t", "1"]
    ran = subprocess.run(worker, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode != 0
    lines = [line for line in (ran.stdout + ran.stderr).splitlines() if "MAX_DELIVERYS" in line]
    assert lines == ["bgjobs: configuration error: " + said.removeprefix("bgjobs: ")]
    assert "Traceback" not in ran.stdout + ran.stderr


def test_an_unwritable_sqlite_path_gets_one_line(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    done = bgjobs_command(tmp_path, "db", "upgrade", BGJOBS_DATABASE_URL=f"sqlite:///{blocked}/bgjobs.db")
    assert done.returncode == 2
    line = one_line(done)
    assert line.startswith("bgjobs: the database refused or did not answer (")
    assert line.endswith("check BGJOBS_DATABASE_URL")


def test_a_command_called_wrong_exits_2_with_one_line(tmp_path: Path) -> None:
    done = bgjobs_command(tmp_path, "dead-letters", "requeue", BGJOBS_BROKER_URL="stub://")
    assert done.returncode == 2
    assert one_line(done) == "bgjobs: dead-letters requeue: give message ids or --all (not both)"


def test_a_postgresql_url_without_its_driver_says_which_extra_to_install() -> None:
    from bgjobs.engines import engine_for

    with pytest.raises(ConfigurationError) as caught:
        engine_for("postgresql+asyncpg://app:secret@127.0.0.1/app")
    text = str(caught.value)
    assert "pip install 'bgjobs[postgres]'" in text and "secret" not in text and "\n" not in text


def test_a_send_with_no_redis_answering_raises_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bgjobs.embedded import free_port

    monkeypatch.setenv("BGJOBS_BROKER_URL", f"redis://:secret@127.0.0.1:{free_port()}/0")
    runtime.reset()

    @bgjobs.actor(name="first_hour.ping")
    def ping(payload: Job) -> None: ...

    with pytest.raises(BrokerUnavailable) as caught:
        ping.send({"n": 1})
    text = str(caught.value)
    assert text.startswith("cannot reach the broker at redis://:***@127.0.0.1:")
    assert text.endswith("check BGJOBS_BROKER_URL") and "secret" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_no_mailer_hint_names_the_bundled_choices() -> None:
    with pytest.raises(ConfigurationError) as caught:
        wiring.resolve("mailer", settings=Settings())
    expected = "BGJOBS_MAILER to a bundled one (console, memory, smtp) or to pkg.module:Class"
    assert expected in str(caught.value)


def test_the_actor_decorator_works_bare_and_honours_dramatiq_s_option_names() -> None:
    @bgjobs.actor
    def bare(payload: Job) -> None: ...

    @bgjobs.actor(queue_name="webhooks", actor_name="first_hour.spelled", priority=5)
    def spelled(payload: Job) -> None: ...

    with stub_jobs():
        assert (bare.name, bare.queue) == ("bare", "default")
        bound = spelled.actor
        assert (bound.actor_name, bound.queue_name, bound.priority) == ("first_hour.spelled", "webhooks", 5)
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) retries_max; actor options are "):

        @bgjobs.actor(retries_max=3)
        def typo(payload: Job) -> None: ...


def test_a_taken_metrics_port_gets_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bgjobs.exposition import serve_metrics

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        monkeypatch.setenv("dramatiq_prom_port", str(port))
        monkeypatch.setenv("dramatiq_prom_db", str(tmp_path / "prom"))
        monkeypatch.setenv("BGJOBS_BROKER_URL", "stub://")
        runtime.reset()
        with caplog.at_level(logging.ERROR, logger="bgjobs.metrics"):
            assert serve_metrics() == 1
    (record,) = caplog.records
    assert f"cannot serve metrics on 127.0.0.1:{port}" in record.getMessage()
    assert "BGJOBS_METRICS__PORT" in record.getMessage() and record.exc_info is None


def test_a_failure_that_will_be_retried_logs_one_line_and_the_last_attempt_its_traceback() -> None:
    from bgjobs.errors import TransientError
    from bgjobs.settings import RetrySettings
    from bgjobs.worker import OneLineRetries

    @bgjobs.actor(name="first_hour.vendor")
    def vendor(payload: Job) -> None: ...

    def logged(message: object) -> logging.LogRecord:
        error = TransientError("SMTP server did not answer\nsecond line")
        record = logging.LogRecord("dramatiq.worker.WorkerThread", logging.ERROR, __file__, 1,
                                   "Failed to process message %s with unhandled exception.", (message,),
                                   (TransientError, error, None))  # fmt: skip
        assert OneLineRetries().filter(record)
        return record

    with stub_jobs(settings=Settings(broker_url="stub://", retries=RetrySettings(max_retries=2))):
        first = vendor.message({"n": 1})
        record = logged(first)
        assert record.getMessage() == ("first_hour.vendor failed on attempt 1 and will be retried: "
                                       "TransientError: SMTP server did not answer")  # fmt: skip
        assert (record.levelname, record.exc_info) == ("WARNING", None)
        last = logged(first.copy(options={**first.options, "retries": 2}))  # the retries are spent
        assert last.levelname == "ERROR" and last.exc_info is not None  # dead-lettered: the traceback stays


HOST_MODULE = '''
import bgjobs
from bgjobs.cleanup import register_policy


@bgjobs.job("myapp.hello")
def hello(ctx: bgjobs.JobContext) -> dict[str, int]:
    return {"said": 1}


register_policy("sessions", "bgjobs_runs", column="started_at", older_than="90d")
'''


def test_commands_find_the_host_s_modules_in_the_current_directory_as_the_worker_does(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HOST_MODULE)
    jobs = {"BGJOBS_JOBS": '["myapp.jobs"]', "BGJOBS_BROKER_URL": "stub://"}
    assert bgjobs_command(tmp_path, "db", "upgrade", **jobs).returncode == 0
    triggered = bgjobs_command(tmp_path, "trigger", "myapp.hello", **jobs)
    assert triggered.returncode == 0, triggered.stderr
    assert re.fullmatch(r"[0-9a-f-]{36}\n", triggered.stdout)  # the message id
    listed = bgjobs_command(tmp_path, "trigger", **jobs)  # no job: the known ones, the host's included
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^myapp\.hello\s+-\s", listed.stdout, re.M), listed.stdout
    assert re.search(r"^payouts\.weekly\s+0 8 \* \* mon\s+.*--period 2025-W23", listed.stdout, re.M)
    assert "bgjobs trigger JOB [--name value ...]" in listed.stdout
    dry = bgjobs_command(tmp_path, "cleanup", "run", "--policy", "sessions", "--dry-run", **jobs)
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"^sessions\s+would delete\s+", dry.stdout, re.M), dry.stdout


def test_a_worker_asked_for_a_queue_that_does_not_exist_stops_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}
    env.update({"BGJOBS_BROKER_URL": "stub://", "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}",
                "BGJOBS_METRICS__ENABLED": "false"})  # fmt: skip
    subprocess.run([sys.executable, "-m", "bgjobs.cli", "db", "upgrade"], env=env, check=True, cwd=tmp_path,
                   capture_output=True)  # fmt: skip
    worker = [sys.executable, "-m", "dramatiq", "bgjobs.actors", "-p", "1", "-t", "1", "-Q", "outbox"]
    done = subprocess.run(worker, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert ("bgjobs: configuration error: -Q outbox: no such queue; the queues are cleanup, default, "
            "exports, notifications, payouts, webhooks") in done.stdout + done.stderr  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr


def test_host_code_triggers_bundled_and_declared_jobs_without_importing_them_first(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HOST_MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}
    env.update({"BGJOBS_BROKER_URL": "stub://", "BGJOBS_JOBS": '["myapp.jobs"]',
                "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'host.db'}"})  # fmt: skip
    code = ("import bgjobs\n"
            "print(bgjobs.trigger('payouts.weekly', period='2025-W23').actor_name)\n"
            "print(bgjobs.trigger('myapp.hello').actor_name)\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "payouts.weekly\nmyapp.hello\n"
