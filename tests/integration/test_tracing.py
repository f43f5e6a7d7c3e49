"""OpenTelemetry tracing through real worker processes on a real Redis, to a real OTLP/HTTP receiver
on 127.0.0.1 and a real SMTP server: a host's request is one trace to the SMTP call, a retry shows
both attempts, and tracing off imports nothing."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bgjobs import db, events, outbox
from bgjobs.notifications import BookingCreated
from tests.support import worker_jobs
from tests.support.otlp import OtlpReceiver, job_of, otlp_receiver
from tests.support.receivers import SmtpReceiver
from tests.support.workers import ROOT, WorkerProcess, start_worker, use_environment, wait_for


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as s:
        yield s


@pytest.fixture
def traced_env(
    worker_env: dict[str, str], receiver: OtlpReceiver, smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch,
    host_spans: InMemorySpanExporter,
) -> dict[str, str]:  # fmt: skip
    env = {**worker_env, "BGJOBS_TRACING__ENABLED": "true", "BGJOBS_METRICS__ENABLED": "false",
           "BGJOBS_MAILER": "smtp", "BGJOBS_SMTP__HOST": "127.0.0.1", "BGJOBS_SMTP__PORT": str(smtp.port),
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_SERVICE_NAME": "bgjobs-test-worker"}  # fmt: skip
    use_environment(monkeypatch, env)
    host_spans.clear()
    return env


def test_a_host_request_is_one_trace_through_the_queue_to_the_smtp_call(
    traced_env: dict[str, str], workers: list[WorkerProcess], receiver: OtlpReceiver, smtp: SmtpReceiver,
    host_spans: InMemorySpanExporter,
) -> None:  # fmt: skip
    # Spans leave a worker every 10 minutes only: what arrives was flushed by its clean stop
    start_worker(workers, {**traced_env, "OTEL_BSP_SCHEDULE_DELAY": "600000"}, processes=2, threads=2)
    # Given a host request that publishes booking.created (a job that sends a job that sends mail)
    booking = BookingCreated(booking_id="B1", trip_date="2025-06-15",  # type: ignore[arg-type]
                             total={"amount": "500.00", "currency": "USD"},  # type: ignore[arg-type]
                             recipient={"user_id": "u1", "email": "ann@example.com"})  # type: ignore[arg-type]
    with trace.get_tracer("host").start_as_current_span("POST /bookings") as request:
        events.publish("booking.created", booking, key="B1")
    host = format(request.get_span_context().trace_id, "032x")
    wait_for(lambda: len(smtp.messages) == 1, timeout=60, what="the email")
    assert receiver.spans == []
    workers[-1].terminate()  # a clean stop flushes every span
    wait_for(lambda: receiver.named("mail.send"), timeout=10, what="the mail.send span")
    # Then every span, in the host and in the worker processes, is in the request's trace
    (sent,) = [s for s in host_spans.get_finished_spans()
               if job_of(s.name, s.attributes) == "send events.fanout"]
    assert sent.parent is not None and sent.parent.span_id == request.get_span_context().span_id
    chain = ["process events.fanout", "send notifications.on_booking_created",
             "process notifications.on_booking_created", "send notifications.email",
             "process notifications.email", "mail.send"]  # fmt: skip
    found = {name: receiver.named(name) for name in chain}
    assert all(len(spans) == 1 for spans in found.values()), found
    spans = [found[name][0] for name in chain]
    assert {s.trace_id for s in spans} == {host}
    # Each is the child of the one before it: the job enqueued by a job is its child
    assert spans[0].parent_id == format(sent.context.span_id, "016x")
    for parent, child in itertools.pairwise(spans):
        assert child.parent_id == parent.span_id, (parent.name, child.name)
    process = found["process notifications.email"][0]
    # The messaging conventions (tracing.SEMCONV): "<operation> <queue>", the actor an attribute
    assert process.name == "process notifications" and found["send notifications.email"][0].name == (
        "send notifications")  # fmt: skip
    assert process.attributes["messaging.system"] == "dramatiq"
    said = process.attributes
    assert (said["messaging.operation.type"], said["messaging.operation.name"]) == ("process", "process")
    assert found["send notifications.email"][0].attributes["messaging.operation.type"] == "send"
    assert process.attributes["messaging.dramatiq.actor"] == "notifications.email"
    assert process.attributes["messaging.destination.name"] == "notifications"
    assert process.attributes["messaging.dramatiq.retry_count"] == 0
    assert process.service == "bgjobs-test-worker"
    mail = found["mail.send"][0]
    assert mail.attributes["bgjobs.template"] == "booking_confirmation" and mail.status_code != 2
    assert not any("ann@example.com" in str(v) for s in receiver.spans for v in s.attributes.values())
    assert len(smtp.messages) == 1


def test_a_retried_job_shows_both_attempts_in_one_trace_the_second_linked_to_the_first(
    traced_env: dict[str, str], workers: list[WorkerProcess], receiver: OtlpReceiver,
) -> None:  # fmt: skip
    start_worker(workers, traced_env, processes=1, threads=2)
    with trace.get_tracer("host").start_as_current_span("POST /flaky"):
        worker_jobs.flaky_once.send({"key": "traced"})
    wait_for(lambda: len(receiver.named("process flaky_once")) == 2, timeout=60, what="two attempts")
    first, second = sorted(receiver.named("process flaky_once"),
                           key=lambda s: s.attributes["messaging.dramatiq.retry_count"])  # fmt: skip
    assert first.trace_id == second.trace_id
    retries = "messaging.dramatiq.retry_count"
    assert (first.attributes[retries], second.attributes[retries]) == (0, 1)
    assert first.status_code == 2 and "TransientError: first attempt of traced" in first.status_message
    assert first.attributes["error.type"] == "bgjobs.errors.TransientError"
    assert second.status_code != 2 and "error.type" not in second.attributes
    assert (first.trace_id, first.span_id) in second.links
    (retry,) = [s for s in receiver.named("send flaky_once") if s.parent_id == first.span_id]
    assert second.parent_id == retry.span_id


def test_an_outbox_deferred_job_continues_the_trace_of_the_transaction_that_deferred_it(
    traced_env: dict[str, str], workers: list[WorkerProcess], receiver: OtlpReceiver,
) -> None:  # fmt: skip
    start_worker(workers, traced_env, processes=1, threads=2)
    with trace.get_tracer("host").start_as_current_span("POST /orders") as request, db.session() as s:
        outbox.defer(s, worker_jobs.record, {"key": "outboxed"})
    wait_for(lambda: receiver.named("process record"), timeout=60, what="the relayed job's span")
    (sent,) = receiver.named("send record")
    (processed,) = receiver.named("process record")
    host = request.get_span_context()
    assert sent.trace_id == processed.trace_id == format(host.trace_id, "032x")
    assert sent.parent_id == format(host.span_id, "016x")  # the relay sent it in the request's trace
    assert processed.parent_id == sent.span_id


def test_a_trigger_command_s_send_is_the_parent_of_the_run(
    traced_env: dict[str, str], workers: list[WorkerProcess], receiver: OtlpReceiver,
) -> None:  # fmt: skip
    env = {**traced_env, "BGJOBS_JOBS": '["tests.support.worker_jobs", "tests.support.batch_jobs"]'}
    start_worker(workers, env, processes=1, threads=2)
    done = subprocess.run([sys.executable, "-m", "bgjobs.cli", "trigger", "tests.count_things"],
                          env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for(lambda: receiver.named("process tests.count_things"), timeout=60, what="the run's span")
    (sent,) = receiver.named("send tests.count_things")  # exported by the command as it exited
    (run,) = receiver.named("process tests.count_things")
    assert sent.parent_id == "" and run.parent_id == sent.span_id and run.trace_id == sent.trace_id


def test_webhook_attempts_are_client_spans_with_host_status_and_attempt_number(
    traced_env: dict[str, str], workers: list[WorkerProcess], receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from bgjobs import webhooks
    from tests.support.receivers import webhook_receiver

    env = {**traced_env, "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false",
           "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]', "BGJOBS_WEBHOOKS__RETRY_SCHEDULE_S": "[0.2]"}
    use_environment(monkeypatch, env)
    with webhook_receiver() as endpoint:
        endpoint.script("/hook?token=s3cr3t", 500)
        webhooks.add_endpoint(endpoint.url("/hook?token=s3cr3t"), event_types=["*"])
        start_worker(workers, env, processes=1, threads=2)
        with trace.get_tracer("host").start_as_current_span("POST /payments") as request:
            webhooks.publish("payment.succeeded", {"id": "p1", "card": "4242"})
        wait_for(lambda: len(receiver.named("webhook.attempt")) == 2, timeout=60, what="two attempts")
    number, status = "bgjobs.webhook.attempt", "http.response.status_code"
    first, second = sorted(receiver.named("webhook.attempt"), key=lambda s: s.attributes[number])
    assert {first.trace_id, second.trace_id} == {format(request.get_span_context().trace_id, "032x")}
    assert (first.attributes[number], second.attributes[number]) == (1, 2)
    assert (first.attributes[status], second.attributes[status]) == (500, 200)
    assert first.attributes["server.address"] == "127.0.0.1" and first.kind == 3  # CLIENT
    # The HTTP client conventions (tracing.SEMCONV); the URL without its query, which may hold a secret
    said = first.attributes
    assert (said["http.request.method"], said["server.port"]) == ("POST", endpoint.port)
    assert first.attributes["url.full"] == f"http://127.0.0.1:{endpoint.port}/hook"
    assert first.attributes["error.type"] == "500" and "error.type" not in second.attributes
    assert first.status_code == 2 and second.status_code != 2
    # Each attempt is the child of the job that made it: the first of the dispatch, the second of
    # the delivery job its retry sent, as a child of the attempt it repeats
    (dispatch,) = receiver.named("process webhooks.dispatch")
    assert first.parent_id == dispatch.span_id
    (retry,) = receiver.named("send webhooks.deliver")
    # (the job's span ends, and is exported, after the attempt's inside it)
    wait_for(lambda: len(receiver.named("process webhooks.deliver")) == 1, timeout=30, what="the job's span")
    (delivery,) = receiver.named("process webhooks.deliver")
    assert retry.parent_id == first.span_id and delivery.parent_id == retry.span_id
    assert second.parent_id == delivery.span_id
    shown = " ".join(f"{k}={v}" for s in receiver.spans for k, v in s.attributes.items())
    assert "4242" not in shown and "whsec" not in shown and "s3cr3t" not in shown  # never a body or a secret


def test_deliveries_sent_in_one_batch_each_continue_the_trace_of_their_own_publish(
    traced_env: dict[str, str], workers: list[WorkerProcess], receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from bgjobs import webhooks
    from tests.support.receivers import webhook_receiver

    env = {**traced_env, "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false",
           "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]'}  # fmt: skip
    use_environment(monkeypatch, env)
    with webhook_receiver() as endpoint:
        # Three owners' messages, each published in a request of its own, wait for one dispatcher
        requests = {}
        for owner in ("o1", "o2", "o3"):
            added = webhooks.add_endpoint(endpoint.url(f"/{owner}"), event_types=["*"], owner=owner)
            with trace.get_tracer("host").start_as_current_span(f"POST /{owner}") as request:
                webhooks.publish("payment.succeeded", {"owner": owner}, owner=owner)
            requests[added.id] = format(request.get_span_context().trace_id, "032x")
        start_worker(workers, env, processes=1, threads=2)
        wait_for(lambda: len(receiver.named("webhook.attempt")) == 3, timeout=60, what="three attempts")
    made = receiver.named("webhook.attempt")
    assert {s.attributes["bgjobs.webhook.endpoint"]: s.trace_id for s in made} == requests


def test_log_records_in_a_span_carry_its_trace_and_span_ids(
    traced_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from bgjobs import runtime

    runtime.get_broker()  # builds the broker, and with it the tracing middleware
    caplog.set_level(logging.INFO, logger="bgjobs.test")
    with trace.get_tracer("host").start_as_current_span("work") as current:
        logging.getLogger("bgjobs.test").info("inside")
    (record,) = [r for r in caplog.records if r.getMessage() == "inside"]
    assert record.otelTraceID == format(current.get_span_context().trace_id, "032x")  # type: ignore[attr-defined]
    assert record.otelSpanID == format(current.get_span_context().span_id, "016x")  # type: ignore[attr-defined]


_OFF = """
import sys
import dramatiq, redis, httpx, sqlalchemy  # what bgjobs imports anyway (redis-py may load otel metrics)
before = {m for m in sys.modules if m.startswith("opentelemetry")}
from bgjobs.broker import build_broker
from bgjobs.settings import Settings
import bgjobs.notifications, bgjobs.webhooks, bgjobs.worker
broker = build_broker(Settings(broker_url="stub://"), worker=True)
added = sorted(m for m in sys.modules if m.startswith("opentelemetry") and m not in before)
assert not added, added
assert "opentelemetry.propagate" not in sys.modules and "opentelemetry.sdk.trace" not in sys.modules
assert not [m for m in broker.middleware if type(m).__name__ == "Tracing"]
print("untraced")
"""


def test_with_tracing_off_nothing_of_opentelemetry_is_imported_or_added() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGJOBS_", "OTEL_"))}
    done = subprocess.run([sys.executable, "-c", _OFF], env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "untraced", done.stderr


@pytest.mark.parametrize("collector", ["hung", "gone"])
def test_a_collector_down_neither_holds_a_stopping_worker_nor_lets_it_take_jobs(
    traced_env: dict[str, str], workers: list[WorkerProcess], collector: str
) -> None:
    import socket
    import time

    from tests.support.workers import broker_client

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        port = hung.getsockname()[1]
        if collector == "hung":
            hung.listen(64)  # accepts connections (the kernel's backlog) and never answers
        else:
            hung.close()  # nothing listens: every export is refused, and retried until its timeout
        env = {**traced_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
               "OTEL_EXPORTER_OTLP_TIMEOUT": "30", "OTEL_BSP_SCHEDULE_DELAY": "600000",
               "BGJOBS_TRACING__SHUTDOWN_FLUSH_S": "1"}  # fmt: skip
        w = start_worker(workers, env, processes=1, threads=2)
        for i in range(20):
            worker_jobs.record.send({"key": f"before-{i}", "sleep_s": 0})
        wait_for(lambda: worker_jobs.effect_count() == 20, timeout=60, what="the jobs before the stop")

        # When the worker is told to stop while its spans wait for a collector that never answers
        assert w.proc is not None
        stopped_at = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)  # to the main process, as a supervisor sends it
        wait_for(lambda: "Shutting down..." in w.output(), timeout=30, what="the worker to begin stopping")
        for i in range(50):
            worker_jobs.record.send({"key": f"after-{i}", "sleep_s": 0})
        code = w.wait_exit(timeout=60)
        took = time.monotonic() - stopped_at

    # Then it stops within the flush bound and its usual time, taking none of the jobs sent meanwhile
    assert code == 0, w.output()
    assert took < 15, f"the stop took {took:.1f} s"  # the SDK's own flush waited up to 30 s per batch
    assert worker_jobs.effect_count() == 20
    assert broker_client(env).llen("dramatiq:default") == 50  # all still queued for the next worker
    assert "tracing: the collector did not take " in w.output() and "they are dropped" in w.output()


_HOST_WITHOUT_A_PROVIDER = """
from bgjobs.notifications import send
send("booking_confirmation", {"user_id": "u1", "email": "ann@example.com", "phone": "+447700900123"},
     {"booking_id": "B9", "trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"}},
     key="booking:B9:confirmed", channels=["email", "sms"])
"""


def test_one_send_from_a_host_without_a_tracer_provider_is_one_trace(
    traced_env: dict[str, str], workers: list[WorkerProcess], receiver: OtlpReceiver
) -> None:
    env = {**traced_env, "BGJOBS_SMS": "console"}
    start_worker(workers, env, processes=1, threads=2)
    host = {**os.environ, **env, "PYTHONPATH": str(ROOT)}  # a host process that set up no provider
    done = subprocess.run([sys.executable, "-c", _HOST_WITHOUT_A_PROVIDER], env=host, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    channels = ("process notifications.email", "process notifications.sms")
    wait_for(lambda: all(receiver.named(n) for n in channels), timeout=60, what="both channels' spans")
    (email,) = receiver.named("process notifications.email")
    (sms,) = receiver.named("process notifications.sms")
    assert email.trace_id == sms.trace_id  # were two unrelated root traces
    assert email.parent_id and email.parent_id == sms.parent_id  # children of the call's (unrecorded) root
