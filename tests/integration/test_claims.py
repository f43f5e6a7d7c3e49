"""The one claim primitive (bgjobs.claims), on SQLite and PostgreSQL: take, hold, settle.

Every family's crash tests run through it; these pin the primitive's own answers: of two copies
one takes the row, a live holder keeps it past its ttl, a held-up one loses it and stops before
its port call, and a holder that lost its claim records nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bgjobs import claims, db
from bgjobs.claims import Answer, Claim, Seen
from bgjobs.errors import LeaseLost
from bgjobs.exports._handling import CLAIMS
from bgjobs.exports._models import ExportRecord
from bgjobs.testing import JobsHarness
from tests.support.workers import wait_for

Start = Callable[..., JobsHarness]
TTL_MS = 600


@pytest.fixture
def row(harness: Start, monkeypatch: pytest.MonkeyPatch) -> str:
    harness()
    monkeypatch.setattr(claims, "_ttl_ms", lambda: TTL_MS)  # a heartbeat timeout a test can outlive
    with db.session() as s:
        s.add(ExportRecord(id="x1", dataset="d", fmt="csv", storage_key="k"))
    return "x1"


def seen(key: str) -> Seen:
    with db.read() as conn:
        found = conn.execute(db_select(key)).one()
    return Seen(found.status, found.attempts, found.lease_until)


def db_select(key: str) -> Any:
    t = CLAIMS.table
    return t.select().with_only_columns(t.c.status, t.c.attempts, t.c.lease_until, t.c.claimed_by).where(
        t.c.id == key
    )


def take(key: str, as_seen: Seen | None = None) -> Claim | None:
    with db.get_engine().begin() as conn:
        now = datetime.now(UTC)
        return CLAIMS.take_one(conn, key, as_seen or seen(key), now, values={"status": "running"})


def settle(claim: Claim, status: str) -> bool:
    with db.get_engine().begin() as conn:
        return CLAIMS.settle(conn, claim, status=status)


def holder(key: str) -> str | None:
    with db.read() as conn:
        return conn.execute(db_select(key)).one().claimed_by  # type: ignore[no-any-return]


def test_of_two_copies_that_read_the_row_together_one_takes_it(row: str) -> None:
    both_read = seen(row)
    first, second = take(row, both_read), take(row, both_read)
    assert first is not None and second is None
    assert CLAIMS.answer(seen(row), datetime.now(UTC)) is Answer.BUSY
    assert (first.attempt, first.in_doubt, holder(row)) == (1, False, first.token)
    assert settle(first, "done")
    assert CLAIMS.answer(seen(row), datetime.now(UTC)) is Answer.DUPLICATE
    assert holder(row) is None


def test_a_live_holder_keeps_its_claim_past_its_ttl(row: str) -> None:
    claim = take(row)
    assert claim is not None
    with claim.kept():
        first = claim.renewed_at
        # Two renewals by the process's renewing thread: held well past the 0.6 s ttl
        wait_for(lambda: claim.renewed_at > first, timeout=10, what="a first renewal")
        second = claim.renewed_at
        wait_for(lambda: claim.renewed_at > second, timeout=10, what="a second renewal")
        assert take(row) is None
        assert CLAIMS.answer(seen(row), datetime.now(UTC)) is Answer.BUSY
        claim.sure_until = 0.0  # asks the database
        claim.check()
        assert settle(claim, "done")
    assert holder(row) is None


def test_a_held_up_holder_loses_its_claim_stops_before_its_port_call_and_records_nothing(row: str) -> None:
    paused = take(row)  # never renewed: its worker was paused
    assert paused is not None
    wait_for(lambda: CLAIMS.answer(seen(row), datetime.now(UTC)) is Answer.TAKEN, timeout=10,
             what="the paused holder's lease to run out")  # fmt: skip
    again = take(row)
    assert again is not None and again.in_doubt and again.attempt == 2
    with pytest.raises(LeaseLost, match="export x1 is no longer this worker's"):
        paused.check()
    assert not settle(paused, "failed")
    assert holder(row) == again.token
    assert settle(again, "done")
    assert seen(row).status == "done"


def test_a_block_that_ends_without_settling_gives_the_row_back_at_once(row: str) -> None:
    claim = take(row)
    assert claim is not None
    with pytest.raises(RuntimeError), claim.kept():
        raise RuntimeError("the port failed; the job retries")
    after = seen(row)
    assert (holder(row), after.lease_until) == (None, None)
    retried = take(row)
    assert retried is not None and not retried.in_doubt and retried.attempt == 2


def test_rows_taken_together_answer_each_as_it_stands(row: str) -> None:
    with db.session() as s:  # besides x1 (free, never tried): x2 settled, x3 held, x4 tried once
        for key in ("x2", "x3", "x4"):
            s.add(ExportRecord(id=key, dataset="d", fmt="csv", storage_key=key))
    x2, x3, x4 = take("x2"), take("x3"), take("x4")
    assert x2 is not None and x3 is not None and x4 is not None
    assert settle(x2, "done")
    with pytest.raises(RuntimeError), x4.kept():
        raise RuntimeError("the port failed; the job retries")
    # When the five (one missing) are taken at once
    found = CLAIMS.take_rows(["x1", "x2", "x3", "x4", "x9"], datetime.now(UTC))
    # Then the free ones are taken, each with its own attempt number; the others say why not
    assert {k: a for k, (a, _, _) in found.items()} == {
        "x1": Answer.TAKEN, "x2": Answer.DUPLICATE, "x3": Answer.BUSY, "x4": Answer.TAKEN,
        "x9": Answer.DUPLICATE,
    }  # fmt: skip
    x1_again, x4_again = found["x1"][2], found["x4"][2]
    assert x1_again is not None and x4_again is not None
    assert (x1_again.attempt, x4_again.attempt) == (1, 2)
    assert (holder("x1"), holder("x3"), holder("x4")) == (x1_again.token, x3.token, x4_again.token)
    assert found["x9"][1] is None and found["x3"][2] is None
