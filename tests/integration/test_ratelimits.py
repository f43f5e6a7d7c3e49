"""Dramatiq's rate limiters on bgjobs's one-round-trip Redis backend, against a real redis-server."""

from __future__ import annotations

import threading
import time

import redis
from dramatiq.rate_limits import ConcurrentRateLimiter, WindowRateLimiter

from bgjobs.ratelimits import ScriptedRedisBackend


def test_a_concurrency_cap_admits_its_limit_and_frees_slots_on_release(redis_url: str) -> None:
    backend = ScriptedRedisBackend(client=redis.Redis.from_url(redis_url))
    limiter = ConcurrentRateLimiter(backend, "cap", limit=2, ttl=10_000)
    with (
        limiter.acquire(raise_on_failure=False) as first,
        limiter.acquire(raise_on_failure=False) as second,
        limiter.acquire(raise_on_failure=False) as third,
    ):
        assert (first, second, third) == (True, True, False)
    with limiter.acquire(raise_on_failure=False) as again:
        assert again


def test_the_cap_holds_under_contention(redis_url: str) -> None:
    backend = ScriptedRedisBackend(client=redis.Redis.from_url(redis_url))
    limiter = ConcurrentRateLimiter(backend, "contended", limit=3, ttl=10_000)
    inside, peak, lock = 0, 0, threading.Lock()

    def work() -> None:
        nonlocal inside, peak
        for _ in range(200):
            with limiter.acquire(raise_on_failure=False) as acquired:
                if not acquired:
                    continue
                with lock:
                    inside += 1
                    peak = max(peak, inside)
                time.sleep(0.0005)  # hold the slot, so threads overlap
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= peak <= 3
    assert int(redis.Redis.from_url(redis_url).get("contended") or 0) == 0


def test_a_window_limit_counts_requests_per_window(redis_url: str) -> None:
    backend = ScriptedRedisBackend(client=redis.Redis.from_url(redis_url))
    limiter = WindowRateLimiter(backend, "window", limit=3, window=60)
    admitted = []
    for _ in range(5):
        with limiter.acquire(raise_on_failure=False) as acquired:
            admitted.append(acquired)
    assert admitted == [True, True, True, False, False]
