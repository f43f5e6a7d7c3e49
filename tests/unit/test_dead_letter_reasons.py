"""What a dead letter keeps of its failure: the reason in one line, and the last traceback, bounded
and masked."""

from __future__ import annotations

import dramatiq

from bgjobs.middleware import TRACEBACK_CHARS, describe_failure


def _failure() -> BaseException:
    def look_up(customers: dict[str, str]) -> str:
        return customers["jane.doe@example.com via redis://app:s3cret@cache:6379/0"]

    try:
        look_up({})
    except KeyError as exc:
        return exc
    raise AssertionError("look_up did not fail")


def test_a_letter_whose_retries_ran_out_keeps_its_last_traceback_with_secrets_masked() -> None:
    message = dramatiq.Message(queue_name="default", actor_name="billing.sync", args=(), kwargs={},
                               options={"retries": 3})  # fmt: skip
    found = describe_failure(message, _failure())
    assert found["kind"] == "exhausted"
    assert found["reason"].startswith("retries exhausted after 3 attempt(s); last error KeyError")
    told = found["traceback"]
    assert told.startswith("Traceback (most recent call last):")
    assert "in look_up" in told and told.rstrip().endswith("j***@example.com via redis://app:***@cache:6379/0'")
    assert "jane.doe" not in told and "s3cret" not in told


def test_a_deep_traceback_keeps_its_end_within_the_bound() -> None:
    message = dramatiq.Message(queue_name="default", actor_name="a", args=(), kwargs={}, options={})
    exc = KeyError("k" * 10_000)
    try:
        raise exc
    except KeyError as raised:
        told = describe_failure(message, raised)["traceback"]
    assert told is not None and len(told) <= TRACEBACK_CHARS
    assert told.endswith("k" * 100 + "'\n")


def test_a_failure_without_a_traceback_keeps_none() -> None:
    message = dramatiq.Message(queue_name="default", actor_name="a", args=(), kwargs={}, options={})
    assert "traceback" not in describe_failure(message, KeyError("never raised"))
