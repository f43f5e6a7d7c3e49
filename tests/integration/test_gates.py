"""The gates the webhook dispatcher admits deliveries through, kept as keys of the per-key limits:
slots, turns kept for later, pauses, and operators' run-time changes, against a real Redis and the
in-memory store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from bgjobs.coordination import RedisCoordination
from bgjobs.keyed_local import LocalKeyed
from bgjobs.keyed_redis import RedisKeyed
from bgjobs.keyed_store import FULL, GO, LATER, Gate, Keyed

EP = "webhooks.endpoint"


@pytest.fixture(params=["redis", "local"])
def keyed(request: pytest.FixtureRequest) -> Iterator[Keyed]:
    if request.param == "local":
        yield LocalKeyed()
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    namespace = f"gates-{uuid.uuid4().hex}"
    yield RedisKeyed(RedisCoordination(client, namespace))
    found = list(client.scan_iter(f"{namespace}:*"))
    if found:
        client.delete(*found)
    client.close()


def ask(holder: str, *, key: str = "ep1", limit: int = 2, interval: float = 0, own: float = 0,
        turn: int = 0) -> Gate:  # fmt: skip
    return Gate(EP, key, holder, limit, interval, own, turn)


def test_a_key_s_slots_admit_up_to_its_cap_and_free_when_given_back(keyed: Keyed) -> None:
    # Given a cap of 2: two go, the third finds every slot held, one already holding goes again
    found = keyed.gate([ask("a"), ask("b"), ask("c"), ask("a")], lease_ms=60_000, hold_ms=100)
    assert [v for v, _, _ in found] == [GO, GO, FULL, GO]
    assert {limit for _, _, limit in found} == {2}
    assert keyed.state(EP, "ep1").running == 2
    # Another key has slots of its own
    assert keyed.gate([ask("c", key="ep2")], lease_ms=60_000, hold_ms=100)[0][0] == GO
    # When one gives its slot back, the third goes
    keyed.release([(EP, "ep1", "a")])
    assert keyed.gate([ask("c")], lease_ms=60_000, hold_ms=100)[0][0] == GO
    # And a slot whose holder never gave it back lapses with its lease
    assert keyed.gate([ask("d", key="ep3", limit=1)], lease_ms=1, hold_ms=100)[0][0] == GO
    time.sleep(0.01)
    assert keyed.gate([ask("e", key="ep3", limit=1)], lease_ms=60_000, hold_ms=100)[0][0] == GO


def test_turns_are_handed_out_a_rate_apart_and_a_far_one_is_kept_for_later(keyed: Keyed) -> None:
    # Given one turn a second and a hold of 1.5 s: the first goes now, the second in a second,
    # the third's turn (2 s away) is kept for it
    found = keyed.gate([ask(h, limit=10, interval=1000) for h in "abc"], lease_ms=60_000, hold_ms=1500)
    assert [v for v, _, _ in found] == [GO, GO, LATER]
    assert [round(w, -1) for _, w, _ in found] == [0, 1000, 2000]
    # When it comes back with its kept turn, it goes at that turn, and the next new one queues after it
    kept = int(time.time() * 1000) + found[2][1]
    again = keyed.gate([ask("c", limit=10, interval=1000, turn=kept), ask("d", limit=10, interval=1000)],
                       lease_ms=60_000, hold_ms=60_000)  # fmt: skip
    assert [v for v, _, _ in again] == [GO, GO]
    assert again[1][1] - again[0][1] >= 900


def test_a_pause_holds_every_ask_until_it_ends(keyed: Keyed) -> None:
    until = int(time.time() * 1000) + 5000
    keyed.pause(EP, "ep1", until_ms=until)
    assert keyed.paused_until(EP, "ep1") == until and keyed.paused_until(EP, "ep2") == 0
    (verdict, wait, _), (other, _, _) = keyed.gate([ask("a"), ask("b", key="ep2")], lease_ms=60_000,
                                                   hold_ms=100)  # fmt: skip
    assert verdict == LATER and 4000 < wait <= 5000
    assert other == GO


def test_run_time_changes_rank_above_the_settings_and_a_key_s_own_rate_between_them(keyed: Keyed) -> None:
    def waits(key: str, own: float = 0) -> int:
        found = keyed.gate([ask(f"{key}{n}", key=key, limit=10, interval=1000, own=own) for n in range(2)],
                           lease_ms=60_000, hold_ms=60_000)  # fmt: skip
        return found[1][1]

    # Given every endpoint changed to 10 turns a second at run time
    keyed.override(EP, "interval", "100")
    assert 90 <= waits("e1") <= 110
    # Then an endpoint's own rate (its rate_limit: 2 a second) still holds for it
    assert 490 <= waits("e2", own=500) <= 510
    # And a change for that endpoint alone ranks above its own rate
    keyed.override(EP, "interval", "50", key="e3")
    assert 40 <= waits("e3", own=500) <= 60
    # A cap changed for one endpoint is the one its asks report
    keyed.override(EP, "limit", "1", key="e4")
    found = keyed.gate([ask("x", key="e4"), ask("y", key="e4")], lease_ms=60_000, hold_ms=100)
    assert [(v, limit) for v, _, limit in found] == [(GO, 1), (FULL, 1)]
