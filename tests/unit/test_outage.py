"""The broker-outage account: the first failure at once, then one line per doubling step."""

from __future__ import annotations

import itertools
import logging

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
    assert said[:5] == [0.0, 6.0, 18.0, 39.0, 81.0]  # the first failure at or after 5, 10, 20, 40 s later
    assert all(later - earlier <= 303 for earlier, later in itertools.pairwise(said))
    assert len(said) <= 9  # 5,600 failures in 20 minutes
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
