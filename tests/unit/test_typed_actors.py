from __future__ import annotations

import pytest

from bgjobs import InvalidPayload
from bgjobs.settings import ActorSettings, RetrySettings, Settings
from bgjobs.testing import stub_jobs
from tests.support import stub_jobs as jobs

FAST = Settings(
    broker_url="stub://",
    retries=RetrySettings(max_retries=3, min_backoff_ms=10, max_backoff_ms=50, time_limit_ms=10_000),
)


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    jobs.calls.clear()


def test_a_job_runs_with_its_payload_and_the_wired_port() -> None:
    with stub_jobs(settings=FAST) as h:
        jobs.greet.send(jobs.Greeting(user_id=7, email="ann@example.com"))
        h.drain()
    assert [m.to for m in h.mailer.sent] == [("ann@example.com",)]
    assert h.dead_letters == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_id": "seven", "email": "a@example.com"}, "user_id"),
        ({"user_id": 1, "email": "a@b.c", "x": 1}, "x"),
    ],
)
def test_the_sender_refuses_a_bad_payload_and_enqueues_nothing(
    payload: dict[str, object], field: str
) -> None:
    with stub_jobs(settings=FAST) as h:
        with pytest.raises(InvalidPayload, match=f"invalid payload for greet: {field}: "):
            jobs.greet.send(payload)
        assert h.broker.queues["notifications"].qsize() == 0


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"user_id": "seven", "email": "a@example.com"}, "user_id: Input should be a valid integer"),
        ({"user_id": 1, "email": "a@example.com", "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_the_worker_dead_letters_a_bad_payload_at_once(payload: dict[str, object], fragment: str) -> None:
    # Given a message built by hand, around the sender's validation
    with stub_jobs(settings=FAST) as h:
        jobs.greet.actor.send(payload)
        # When
        h.drain()
    # Then it is dead-lettered on the first attempt, with the field named
    assert len(h.dead_letters) == 1
    assert fragment in h.reason(h.dead_letters[0])
    assert "retries" not in h.dead_letters[0].options
    assert h.mailer.sent == []


def test_transient_errors_retry_until_success() -> None:
    with stub_jobs(settings=FAST) as h:
        jobs.flaky.send({"key": "t", "failures": 2})
        h.drain()
    assert jobs.calls["t"] == 3
    assert h.dead_letters == []


def test_permanent_errors_are_not_retried() -> None:
    with stub_jobs(settings=FAST) as h:
        jobs.flaky.send({"key": "p", "failures": 5, "error": "permanent"})
        h.drain()
    assert jobs.calls["p"] == 1
    assert "PermanentError: refused on attempt 1" in h.reason(h.dead_letters[0])


def test_unknown_errors_retry_up_to_the_limit_then_dead_letter() -> None:
    with stub_jobs(settings=FAST) as h:
        jobs.flaky.send({"key": "u", "failures": 99, "error": "unknown"})
        h.drain()
    assert jobs.calls["u"] == 4  # the first attempt and max_retries=3 retries
    assert h.reason(h.dead_letters[0]).startswith(
        "retries exhausted after 4 attempt(s); last error RuntimeError"
    )


def test_per_actor_settings_override_the_family_and_global_limits() -> None:
    settings = FAST.model_copy(update={"actors": {"flaky": ActorSettings(max_retries=1)}})
    with stub_jobs(settings=settings) as h:
        jobs.flaky.send({"key": "o", "failures": 99, "error": "unknown"})
        h.drain()
        assert jobs.flaky.actor.options["time_limit"] == 10_000
    assert jobs.calls["o"] == 2


def test_a_job_needing_an_unwired_port_is_dead_lettered_naming_the_setting() -> None:
    from bgjobs import wiring

    with stub_jobs(settings=FAST) as h:
        wiring.reset()
        jobs.greet.send({"user_id": 1, "email": "a@example.com"})
        h.drain()
    assert len(h.dead_letters) == 1
    reason = h.reason(h.dead_letters[0])
    assert "ConfigurationError: no Mailer is wired" in reason
    assert "BGJOBS_MAILER" in reason
    assert "retries" not in h.dead_letters[0].options


def test_calling_a_typed_actor_runs_it_inline_with_validation() -> None:
    jobs.flaky({"key": "inline"})
    assert jobs.calls["inline"] == 1
    with pytest.raises(InvalidPayload):
        jobs.flaky({"key": 1, "failures": "x"})


def test_declaring_an_actor_without_a_payload_model_is_refused() -> None:
    import bgjobs
    from bgjobs.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="exactly one parameter"):

        @bgjobs.actor()
        def bad(a: int, b: int) -> None: ...


def test_leaving_stub_jobs_restores_no_runtime() -> None:
    from bgjobs import runtime

    with stub_jobs(settings=FAST):
        assert runtime.peek() is not None
    assert runtime.peek() is None
