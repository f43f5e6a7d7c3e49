"""The coordination contract, run against each backend: a real Redis and the in-process one."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from bgjobs.coordination import Coordination, LocalCoordination, RedisCoordination
from tests.support.workers import wait_for


@pytest.fixture(params=["redis", "local"])
def backend(request: pytest.FixtureRequest) -> Coordination:
    if request.param == "local":
        return LocalCoordination()
    url = request.getfixturevalue("redis_url")
    return RedisCoordination(redis.Redis.from_url(url), "dramatiq")


def test_a_lease_has_one_holder_until_it_is_released_or_lapses(backend: Coordination) -> None:
    # Given a lease taken by one holder (a TTL no stall of a busy machine outlasts)
    first, second = backend.lease("job:x", ttl_ms=3000), backend.lease("job:x", ttl_ms=3000)
    assert first.acquire()
    # Then nobody else takes it while it is renewed, and the other cannot renew or release it
    assert not second.acquire()
    assert first.renew()
    assert not second.acquire()
    assert not second.renew()
    second.release()
    assert not second.acquire()
    # When the holder stops renewing (it died), the lease lapses and another takes it
    wait_for(second.acquire, timeout=60, what="the lease to lapse")
    assert not first.renew()
    # And release frees it at once
    second.release()
    assert backend.lease("job:x", ttl_ms=3000).acquire()


def test_a_kept_lease_outlives_its_ttl_and_is_released_after(backend: Coordination) -> None:
    held = backend.lease("job:kept", ttl_ms=1000)
    assert held.acquire()
    with held.kept():
        # Three TTLs: only renewal keeps it (while kept, it is checked over and over)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert not backend.lease("job:kept", ttl_ms=1000).acquire()
            time.sleep(0.1)
    assert backend.lease("job:kept", ttl_ms=1000).acquire()


def test_a_dedupe_key_is_first_once_within_its_window(backend: Coordination) -> None:
    assert backend.first_time("event:k1", ttl_s=1)
    assert not backend.first_time("event:k1", ttl_s=1)
    assert backend.first_time("event:k2", ttl_s=1)
    # Once the window has passed, it is first again
    wait_for(lambda: backend.first_time("event:k1", ttl_s=1), timeout=60, what="the window to pass")


def test_a_wake_token_ends_a_wait_and_a_wait_without_one_times_out(backend: Coordination) -> None:
    started = time.monotonic()
    backend.wait("wake:q", timeout_s=0.3)
    assert time.monotonic() - started >= 0.25
    threading.Timer(0.1, lambda: backend.wake("wake:q", cap=4)).start()
    started = time.monotonic()
    backend.wait("wake:q", timeout_s=5)
    assert time.monotonic() - started < 2


def test_a_mutex_admits_one_at_a_time(backend: Coordination) -> None:
    with backend.mutex("relay", ttl_s=5) as mine:
        assert mine
        with backend.mutex("relay", ttl_s=5) as theirs:
            assert not theirs
    with backend.mutex("relay", ttl_s=5) as again:
        assert again


def test_a_holder_whose_lease_was_taken_is_stopped_before_its_next_port_call(backend: Coordination) -> None:
    from bgjobs.errors import LeaseLost

    # Given a kept lease (renewed every second)
    first = backend.lease("job:held-up", ttl_ms=3000)
    assert first.acquire()
    with first.kept() as held:
        held.check()  # its own: the holder goes on
        # When it is lost: it lapsed while its holder was held up, and another took it
        if isinstance(backend, LocalCoordination):
            backend.leases.pop(first.key)
        else:
            backend.client.delete(first.key)  # type: ignore[attr-defined]
        assert backend.lease("job:held-up", ttl_ms=3000).acquire()
        # Then the holder is stopped at its next check, and the renewal thread marks it lost too
        with pytest.raises(LeaseLost, match=r"the lease .*job:held-up is no longer this worker's"):
            held.check()
        assert held.lost.is_set()


def test_a_holder_cut_off_from_the_store_for_the_whole_ttl_stops(redis_url: str) -> None:
    from bgjobs.embedded import free_port

    store = RedisCoordination(redis.Redis.from_url(redis_url), "dramatiq")
    lease = store.lease("job:cut-off", ttl_ms=5000)
    assert lease.acquire()
    with lease.kept() as held:
        # When the store stops answering the holder (its connection points nowhere now)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
        lease.client = nowhere  # type: ignore[attr-defined]
        held.check()  # within the ttl since the last renewal, it is still its own
        # Then once the ttl has passed without a renewal, the lease has surely expired
        wait_for(lambda: _stopped(held), timeout=30, what="the holder to be stopped")


def _stopped(held: object) -> bool:
    from bgjobs.errors import LeaseLost

    try:
        held.check()  # type: ignore[attr-defined]
    except LeaseLost:
        return True
    return False
