"""One masking function for everything that leaves the process: every secret and personal detail
of the corpus is masked, what operators need to read is not, and bgjobs's and Dramatiq's log
records are masked as they are made."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bgjobs.redact import mask_logs, mask_text
from tests.support.secrets_corpus import CORPUS, TEXT, leaked


@pytest.mark.parametrize(("text", "secret"), CORPUS)
def test_every_form_of_the_corpus_is_masked(text: str, secret: str) -> None:
    masked = mask_text(text)
    assert secret not in masked, masked
    assert masked != text


@pytest.mark.parametrize("text", [
    "2026-12-04 10:00:00 failed", "amount 440.00 USD", "HTTP 503 after 1.25 s", "order 12345",
    "message 3f2b1c9e-8a7d-4e6f-9b1a-2c3d4e5f6a7b", "retries exhausted after 3 attempt(s)", "port 6379",
    "ep_7cc6cb8f14da4221b2f45166c37be480", "period 2026-W49", "card 4242 4242 4242 4241 (not a card: Luhn)",
])  # fmt: skip
def test_what_an_operator_reads_is_left_as_it_is(text: str) -> None:
    assert mask_text(text) == text


def test_what_is_masked_keeps_enough_to_debug() -> None:
    assert mask_text("to +447700900123") == "to +44********23"
    assert mask_text("card 4242 4242 4242 4242") == "card ****4242"
    assert mask_text("ann.lee@example.com") == "a***@example.com"
    assert mask_text("GET /send?token=abc123xyz&to=x") == "GET /send?token=***&to=x"


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What bgjobs's and Dramatiq's loggers and a host's logger write through a plain handler."""
    mask_logs()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)


def test_log_records_of_bgjobs_and_dramatiq_are_masked_with_their_traceback(logged: io.StringIO) -> None:
    try:
        raise RuntimeError(TEXT)
    except RuntimeError:
        logging.getLogger("dramatiq.worker.WorkerThread").warning("Failed to process message %s", TEXT,
                                                                  exc_info=True)  # fmt: skip
        logging.getLogger("bgjobs.worker").error("dead-lettering: %s", TEXT)
    written = logged.getvalue()
    assert "dramatiq.worker.WorkerThread Failed to process message" in written
    assert "RuntimeError: vendor answered 503" in written  # the traceback is there, masked
    assert leaked(written) == []


def test_a_host_s_own_logger_is_left_as_the_host_set_it(logged: io.StringIO) -> None:
    logging.getLogger("myapp.billing").warning("card %s", "4242 4242 4242 4242")
    assert "4242 4242 4242 4242" in logged.getvalue()


def test_filters_still_read_a_record_s_template_and_arguments_and_what_they_write_is_masked(
    logged: io.StringIO,
) -> None:
    """bgjobs's own filters (the outage and retry lines) read the template and rewrite the record,
    dropping its traceback: masking waits for the formatter, so they work and their line is masked."""

    class Folding(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            assert record.msg == "Consumer encountered a connection error: %s"  # as it was made
            record.msg, record.args = "folded: %s", (record.args[0] if record.args else "",)  # type: ignore[index]
            record.exc_info, record.exc_text = None, None
            return True

    source = logging.getLogger("dramatiq.worker.ConsumerThread(masking-test)")
    folding = Folding()
    source.addFilter(folding)
    try:
        try:
            raise ConnectionError(TEXT)
        except ConnectionError as exc:
            source.critical("Consumer encountered a connection error: %s", exc, exc_info=True)
    finally:
        source.removeFilter(folding)
    written = logged.getvalue()
    assert "folded: vendor answered 503" in written and "Traceback" not in written
    assert leaked(written) == []
