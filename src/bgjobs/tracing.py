"""OpenTelemetry tracing: one trace from the host's request to the vendor call, across the queue.

Optional (``pip install 'bgjobs[otel]'``) and off unless ``BGJOBS_TRACING__ENABLED=true``. Off, the
broker gets no tracing middleware and nothing imports OpenTelemetry, so it costs nothing.

On:

- every enqueue (``send()``, ``send_many()``, events, the outbox relay, the scheduler, ``trigger``,
  Dramatiq's retries) opens a producer span ``send <actor>`` and puts its W3C ``traceparent`` (and
  ``tracestate``) in the message's options, under ``bgjobs_trace``;
- the worker continues that trace: a consumer span ``process <actor>`` per processing, with the
  messaging attributes, current while the job runs, so a job's own sends are its children and
  its port calls (:func:`span`) nest under it; a retry's span is linked to the attempt before it;
- log records carry ``otelTraceID`` and ``otelSpanID`` while a span is current;
- each worker process sets up its own tracer provider after Dramatiq forks it (the SDK's
  ``OTEL_*`` variables choose and configure the exporter: OTLP over HTTP by default) and, once the
  worker has stopped taking and running jobs, exports what is left for at most
  ``BGJOBS_TRACING__SHUTDOWN_FLUSH_S`` (2 s), so a clean stop loses no span while the collector
  answers and a collector outage never holds a stopping worker past its termination grace. A host
  process keeps its own provider: bgjobs only asks the API for a tracer, so its spans join the
  host's FastAPI or Flask traces.

Dramatiq's maintainer declined to carry OpenTelemetry in Dramatiq, and the third-party instrumentor
never detaches the context it attaches; this middleware attaches the job's context when it starts
and detaches it when it ends, on the worker thread that ran it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

from dramatiq.middleware import Middleware

from .errors import ConfigurationError
from .redact import mask_text
from .trace_headers import carrier_of
from .tracing_provider import correlate_logs, install_provider, shut_down

__all__ = [
    "OPTION", "SEMCONV", "Note", "Tracing", "attached", "deferred_context", "enabled", "middleware",
    "one_trace", "setup_process", "span", "switch_on", "within",
]  # fmt: skip

logger = logging.getLogger("bgjobs.tracing")

#: The message option that carries the trace context (a W3C carrier: ``traceparent``, ``tracestate``).
OPTION = "bgjobs_trace"
#: In the carrier of a retry: the attempt before it, which its span links to.
_PREVIOUS = "bgjobs-previous"
#: In a carrier kept with deferred work (an outbox row): send it as a child of that context, not of
#: whatever is current when the relay sends it.
_DEFERRED = "bgjobs-deferred"

#: Set once tracing is on in this process; :func:`span` is a no-op (one global read) until then.
_on = False


def enabled(settings: Any) -> bool:
    """Whether ``settings`` turn tracing on; an error naming the extra if it is not installed."""
    if not settings.tracing.enabled:
        return False
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "BGJOBS_TRACING__ENABLED=true needs OpenTelemetry: pip install 'bgjobs[otel]'"
        ) from None
    return True


def switch_on() -> None:
    """Record spans and carry contexts in this process from now on (a runtime with tracing on)."""
    global _on
    _on = True


def middleware(settings: Any, *, worker: bool) -> list[Middleware]:
    """The tracing middleware for a broker built from ``settings`` (none when tracing is off)."""
    if not enabled(settings):
        return []
    return [Tracing(worker=worker, shutdown_flush_s=settings.tracing.shutdown_flush_s)]


def deferred_context() -> str | None:
    """The current trace context as JSON, for work sent later (an outbox row); None when off."""
    if not _on:
        return None
    import json

    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return json.dumps({**carrier, _DEFERRED: "1"}) if carrier else None


@contextlib.contextmanager
def within(carrier: str | None) -> Iterator[None]:
    """Run the block as a child of the span running now (the job's) when ``carrier``, the context
    some work was deferred in, is of the same trace, or absent: a webhook attempt is the child of
    the dispatch or delivery job that made it. Work deferred in another trace keeps its own."""
    if not _on or not carrier:
        yield
        return
    import json

    from opentelemetry import trace

    now = trace.get_current_span().get_span_context()
    if now.is_valid and json.loads(carrier).get("traceparent", "")[3:35] == format(now.trace_id, "032x"):
        yield
        return
    with attached(carrier):
        yield


@contextlib.contextmanager
def attached(carrier: str | None) -> Iterator[None]:
    """Make a context kept with deferred work (:func:`deferred_context`) current for the block: work
    picked up in a batch (a webhook delivery) continues the trace it was published in."""
    if not _on or not carrier:
        yield
        return
    import json

    from opentelemetry import context
    from opentelemetry.propagate import extract

    token = context.attach(extract(json.loads(carrier)))
    try:
        yield
    finally:
        context.detach(token)


def setup_process(settings: Any) -> None:
    """In one of bgjobs's own commands (the scheduler, ``trigger``): a tracer provider for the
    process, flushed when it exits (within ``BGJOBS_TRACING__SHUTDOWN_FLUSH_S``). Nothing when
    tracing is off."""
    if not enabled(settings):
        return
    import atexit

    provider = install_provider()
    if provider is not None:
        atexit.register(shut_down, provider, settings.tracing.shutdown_flush_s)


P = ParamSpec("P")
R = TypeVar("R")


def one_trace(prepare: Callable[[], object]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The messages one call sends share one trace, also when the caller has no span (a host
    without a tracer provider of its own, and no incoming ``traceparent``): the call then runs in
    a context with a fresh, sampled trace id, which its ``send`` spans carry to the workers. The
    root itself is recorded nowhere (nothing in that host records spans); the workers' spans of
    the call are one trace under it. Used by ``notifications.send`` and ``webhooks.publish``: an
    email and an SMS of one request were two unrelated traces.

    ``prepare`` runs first (the runtime's ``current``, which switches tracing on in a host whose
    first call this is)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def traced(*args: P.args, **kwargs: P.kwargs) -> R:
            prepare()
            return fn(*args, **kwargs) if not _on else _in_one_trace(fn, *args, **kwargs)

        return traced

    return decorate


def _in_one_trace(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    import random

    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    if trace.get_current_span().get_span_context().is_valid:
        return fn(*args, **kwargs)
    root = SpanContext(trace_id=random.getrandbits(128) or 1, span_id=random.getrandbits(64) or 1,
                       is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))  # fmt: skip
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(root)))
    try:
        return fn(*args, **kwargs)
    finally:
        context.detach(token)


_cached_tracer: Any = None


def _tracer() -> Any:
    """bgjobs's tracer, made once: the SDK makes a new tracer on every ``get_tracer`` (a third of
    a send span's cost). Made before a provider is set, it is the API's proxy, which follows the
    provider once one is (a worker process sets its own after the fork)."""
    global _cached_tracer
    if _cached_tracer is None:
        from opentelemetry import trace

        _cached_tracer = trace.get_tracer("bgjobs", schema_url=f"https://opentelemetry.io/schemas/{SEMCONV}")
    return _cached_tracer


class Note:
    """What a :func:`span` block may add to its span: attributes, or a failure that raised nothing
    (a webhook endpoint's 500). A no-op when tracing is off."""

    def __init__(self, current: Any = None) -> None:
        self.current = current

    def set(self, **attributes: Any) -> None:
        if self.current is not None:
            self.current.set_attributes(attributes)

    def fail(self, text: str, *, error_type: str = "_OTHER") -> None:
        """The call failed without an exception (an HTTP status): ``error_type`` says how, as the
        conventions ask (the status code, or ``_OTHER``)."""
        if self.current is not None:
            from opentelemetry.trace import Status, StatusCode

            self.current.set_status(Status(StatusCode.ERROR, mask_text(text)[:500]))
            self.current.set_attribute("error.type", error_type)


_UNTRACED = Note()


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Note]:
    """A client span around a port call (``mail.send``, ``payment.payout``, ...), when tracing is on.

    Errors set the span's status and record the exception's type and message, masked as logs are
    (no traceback, no arguments); never pass a secret or a body as an attribute.
    """
    if not _on:
        yield _UNTRACED
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    with _tracer().start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield Note(current)
        except BaseException as exc:
            _failed(current, exc, Status, StatusCode)
            raise


def _failed(current: Any, exc: BaseException, status: Any, code: Any) -> None:
    text = mask_text(f"{type(exc).__name__}: {exc}")[:500]
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    current.set_status(status(code.ERROR, text))
    current.set_attribute("error.type", name)
    current.add_event("exception", {"exception.type": name, "exception.message": text})


class Tracing(Middleware):
    """Puts the trace context into every message sent and continues it where the message runs."""

    def __init__(self, *, worker: bool, shutdown_flush_s: float = 2.0) -> None:
        switch_on()
        self.worker = worker
        self.shutdown_flush_s = shutdown_flush_s
        self.provider: Any = None
        self._local = threading.local()
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        # Looked up once: a traced send costs about 15 µs, and imports in it were a sixth of that.
        self._trace, self._producer = trace, SpanKind.PRODUCER
        correlate_logs()

    def after_process_boot(self, broker: Any) -> None:
        if self.worker:  # in each worker process, after Dramatiq forked it
            self.provider = install_provider()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # After Dramatiq stopped its workers and consumers: a flush before that (the SDK's, 30 s
        # against a collector that does not answer) kept the stopping worker taking jobs.
        if self.provider is not None:
            provider, self.provider = self.provider, None
            shut_down(provider, self.shutdown_flush_s)

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self._end_sending()  # a send that failed has no after_enqueue: its span ends here
        given = message.options.get(OPTION)
        parent = None
        if given:
            if given.get(_DEFERRED):  # an outbox row: a child of the transaction that deferred it
                from opentelemetry.propagate import extract

                parent = extract(given)
            elif not self._trace.get_current_span().get_span_context().is_valid:
                # Moved on by the broker outside any job (a delayed retry released from the delay
                # queue, a dead letter requeued): it keeps the trace it was sent in.
                return
        sending = _tracer().start_span(
            f"send {_queue(message)}", context=parent, kind=self._producer,
            attributes=_attributes(message, "send"),
        )  # fmt: skip
        carrier = carrier_of(sending)
        running = getattr(self._local, "span", None)
        if running is not None and message.options.get("retries", 0) and message.message_id == running[2]:
            carrier[_PREVIOUS] = carrier_of(running[0]).get("traceparent", "")
        message.options[OPTION] = carrier
        # An enqueue runs on the thread that sent it, from before_enqueue to after_enqueue.
        self._local.sending = sending

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self._end_sending()

    def _end_sending(self) -> None:
        sending = getattr(self._local, "sending", None)
        if sending is not None:
            self._local.sending = None
            sending.end()

    def before_process_message(self, broker: Any, message: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.propagate import extract
        from opentelemetry.trace import Link, SpanKind

        carrier = message.options.get(OPTION) or {}
        links = []
        if carrier.get(_PREVIOUS):
            before = trace.get_current_span(extract({"traceparent": carrier[_PREVIOUS]})).get_span_context()
            if before.is_valid:
                links.append(Link(before, {"bgjobs.link": "previous attempt"}))
        processing = _tracer().start_span(
            f"process {_queue(message)}", context=extract(carrier), kind=SpanKind.CONSUMER,
            attributes={**_attributes(message, "process"),
                        "messaging.dramatiq.retry_count": int(message.options.get("retries", 0))},
            links=links,
        )  # fmt: skip
        token = context.attach(trace.set_span_in_context(processing))
        self._local.span = (processing, token, message.message_id)

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        running = getattr(self._local, "span", None)
        if running is None or running[2] != message.message_id:
            return
        self._local.span = None
        processing, token, _ = running
        if exception is not None:
            _failed(processing, exception, Status, StatusCode)
        processing.end()
        context.detach(token)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self.after_process_message(broker, message)


#: The OpenTelemetry semantic conventions these spans follow (messaging; HTTP client for webhooks).
SEMCONV = "1.30.0"


def _queue(message: Any) -> str:
    return str(message.queue_name).removesuffix(".DQ")


def _attributes(message: Any, operation: str) -> dict[str, Any]:
    """A ``send`` or ``process`` span's attributes (messaging conventions of :data:`SEMCONV`): the
    span is named ``<operation> <queue>``, the actor is ``messaging.dramatiq.actor``."""
    return {
        "messaging.system": "dramatiq",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": _queue(message),
        "messaging.message.id": message.message_id,
        "messaging.dramatiq.actor": message.actor_name,
    }
