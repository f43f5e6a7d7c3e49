"""The broker-outage account: the first failure at once, then one line per doubling step."""

from __future__ import annotations

import itertools
import logging

import pytest

from bgjobs.outage import BrokerOutageLog, Outage


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_failures_are_logged_once_per_doubling_step_with_the_count_folded_in() -> None:
    clock = Clock()
    outage = Outage(clock=clock, url="redis://:***@db:6379/0")
    said: list[float] = []
    for tick in range(0, 400):  # 14 consumer threads failing every 3 s for 20 minutes, roughly
        clock.t = 100.0 + tick * 3
        for _ in range(14):
            if outage.failed("Error 111 connecting to db:6379. Connection refused.") is not None:
                said.append(clock.t - 100.0)
    assert said[:4] == [0.0, 30.0, 90.0, 210.0]  # the first failure at or after 30, 60, 120 s later
    assert all(later - earlier <= 303 for earlier, later in itertools.pairwise(said))
    assert len(said) <= 7  # 5,600 failures in 20 minutes
    fresh = Outage(clock=clock)
    fresh.watch("redis://:sekrit@db:6379/0")
    first = fresh.failed("refused")
    assert first is not None and "redis://:***@db:6379/0 (refused)" in first and "BGJOBS_BROKER_URL" in first
    assert "sekrit" not in first


def test_an_answer_ends_the_outage_and_says_for_how_long_once() -> None:
    clock = Clock()
    outage = Outage(clock=clock, url="redis://h/0")
    assert outage.answered() is None  # never down: nothing to say
    outage.failed("refused")
    clock.t += 42
    assert outage.answered() == "the broker at redis://h/0 answers again after 42 s"
    assert outage.answered() is None
    outage.failed("refused")
    outage.failed("refused")
    said = "the broker at redis://h/0 answers again after 0 s; 1 more failure(s) since the last report"
    assert outage.answered() == said
    assert outage.failed("refused") is not None  # a new outage is reported at once


def test_the_consumer_log_filter_keeps_one_line_per_step_and_drops_the_restart_notices() -> None:
    clock = Clock()
    gate = BrokerOutageLog(Outage(clock=clock, url="redis://h/0"))

    def record(msg: str, *args: object) -> logging.LogRecord:
        name = "dramatiq.worker.ConsumerThread(q)"
        return logging.LogRecord(name, logging.CRITICAL, "", 0, msg, args, None)

    error = record("Consumer encountered a connection error: %s", "Error 111")
    assert gate.filter(error) and error.levelname == "ERROR"
    assert "redis://h/0 (Error 111)" in error.getMessage()
    assert not gate.filter(record("Restarting consumer in %0.2f seconds.", 3.0))
    assert not gate.filter(record("Consumer encountered a connection error: %s", "Error 111"))
    assert gate.filter(record("Consumer encountered an unexpected error."))


def test_on_rabbitmq_a_redis_error_is_told_as_the_coordination_store_s(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from bgjobs import outage

    for account in (outage.broker_outage, outage.coordination_outage):
        monkeypatch.setattr(account, "url", account.url)
    monkeypatch.setattr(outage, "_apart", outage._apart)
    try:
        outage.watch("amqp://u:pw@rabbit:5672/%2F", "redis://:sekrit@coord:6379/0")
        with caplog.at_level(logging.ERROR, logger="bgjobs.broker"):
            outage.report(RedisConnectionError("Error 111 connecting to coord:6379. Connection refused."))
        (line,) = [r.getMessage() for r in caplog.records]
        assert line.startswith("cannot reach the coordination store at redis://:***@coord:6379/0 (Error 111")
        assert "check BGJOBS_COORDINATION_URL" in line and "RabbitMQ" not in line and "sekrit" not in line
        assert outage.store_outage() is outage.coordination_outage and outage.coordination_outage.down
        assert not outage.broker_outage.down
        outage.store_outage().recover()
        # On the Redis broker, the broker is the store
        outage.watch("redis://broker:6379/0", None)
        assert outage.store_outage() is outage.broker_outage
    finally:
        outage.coordination_outage.answered()
