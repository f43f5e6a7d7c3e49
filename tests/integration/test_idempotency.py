"""Idempotency records on real SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from bgjobs import db, idempotency
from bgjobs.db import engine_for


def test_upgrade_creates_only_bgjobs_tables(database_url: str) -> None:
    engine = engine_for(database_url)
    db.upgrade(engine)
    names = inspect(engine).get_table_names()
    assert "bgjobs_idempotency" in names and "bgjobs_alembic_version" in names
    assert all(n.startswith("bgjobs_") for n in names)


def test_a_key_is_claimed_once_and_a_rollback_frees_it(database_url: str) -> None:
    engine = engine_for(database_url)
    db.upgrade(engine)
    # A claim in a transaction that rolls back leaves the key free
    with pytest.raises(RuntimeError), db.session(engine) as s:
        assert idempotency.claim(s, "payout:r1:v1:USD", scope="payouts")
        raise RuntimeError("worker died before commit")
    with db.session(engine) as s:
        assert idempotency.lookup(s, "payout:r1:v1:USD") is None
    # A committed claim takes the key for good
    with db.session(engine) as s:
        assert idempotency.claim(s, "payout:r1:v1:USD", scope="payouts", result="tx_1")
    with db.session(engine) as s:
        assert not idempotency.claim(s, "payout:r1:v1:USD", scope="payouts")
        record = idempotency.lookup(s, "payout:r1:v1:USD")
        assert record is not None and record.result == "tx_1"


def test_concurrent_claims_let_exactly_one_win(database_url: str) -> None:
    engine = engine_for(database_url)
    db.upgrade(engine)
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def contender() -> None:
        barrier.wait()
        for _ in range(20):
            try:
                with db.session(engine) as s:
                    wins.append(idempotency.claim(s, "notify:42:email"))
                return
            except OperationalError:  # SQLite's writer lock under contention: the caller retries
                continue

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    with db.session(engine) as s:
        assert len(s.exec(select(idempotency.IdempotencyRecord)).all()) == 1
