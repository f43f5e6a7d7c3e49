"""A worker process's own OpenTelemetry tracer provider: made from the SDK's ``OTEL_*`` variables
after Dramatiq forks the process, and shut down, within a bound, once the worker has stopped.

The exporter is the one the variables ask for (``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` before
``OTEL_EXPORTER_OTLP_PROTOCOL``, as the specification orders them), and the service is named by
``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` (``bgjobs-worker`` only when neither does). The
SDK's own shutdown waits 30 s per processor for a collector that does not answer; a stopping worker
waits ``BGJOBS_TRACING__SHUTDOWN_FLUSH_S`` (2 s) and says what it drops. And its log records
carry the trace and span ids of the span current where they are made.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .errors import ConfigurationError

__all__ = ["correlate_logs", "install_provider", "shut_down"]

logger = logging.getLogger("bgjobs.tracing")

#: The OTLP protocols, as ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` names them, and the exporter
#: package of each (the Python SDK has none for ``http/json``).
_WIRES = {"http/protobuf": "http", "grpc": "grpc"}


def _wire() -> str:
    """The OTLP exporter the environment asks for: the traces variable first, then the general
    one, as the OpenTelemetry specification orders them; ``http/protobuf`` by default."""
    import os

    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = os.environ.get(name, "").strip().lower()
        if value:
            if value not in _WIRES:
                raise ConfigurationError(f"{name}={value!r} is not a protocol the Python exporter speaks; "
                                         "use http/protobuf or grpc")  # fmt: skip
            return _WIRES[value]
    return "http"


def _resource() -> Any:
    """The SDK's resource (``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``), named
    ``bgjobs-worker`` only when neither variable names the service."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    found = Resource.create()
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return found.merge(Resource({SERVICE_NAME: "bgjobs-worker"}))
    return found


def install_provider() -> Any:
    """This process's SDK tracer provider, exporting as the ``OTEL_*`` variables say; None when
    one is set already (a host's, or a test's)."""
    import importlib
    import os

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    # Shut down by the middleware within its bound, not by the SDK's exit hook (30 s a processor)
    provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif kind != "none":
        wire = _wire()
        package = f"opentelemetry-exporter-otlp-proto-{wire}"
        try:
            exporter = importlib.import_module(f"opentelemetry.exporter.otlp.proto.{wire}.trace_exporter")
        except ImportError:
            raise ConfigurationError(f"the OTLP exporter needs {package}: pip install {package}") from None
        provider.add_span_processor(BatchSpanProcessor(exporter.OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _waiting(provider: Any) -> int | None:
    """How many ended spans wait for export, where the SDK lets it be read (None otherwise)."""
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    queues = [getattr(getattr(p, "_batch_processor", None), "_queue", None) for p in processors]
    return sum(len(q) for q in queues if q is not None) if queues and None not in queues else None


def shut_down(provider: Any, bound_s: float) -> None:
    """Export what is left and shut the provider down, waiting at most ``bound_s``; say what is
    dropped when the collector does not take it in time (the export goes on in a daemon thread
    until the process exits)."""
    waiting = _waiting(provider)
    done = threading.Event()

    def run() -> None:
        try:
            provider.shutdown()
        finally:
            done.set()

    threading.Thread(target=run, name="bgjobs-tracing-shutdown", daemon=True).start()
    if not done.wait(bound_s):
        what = f"{waiting} span(s)" if waiting else "the spans not yet exported"
        logger.warning("tracing: the collector did not take %s within %.1f s of the stop; they are "
                       "dropped (BGJOBS_TRACING__SHUTDOWN_FLUSH_S, OTEL_EXPORTER_OTLP_ENDPOINT)", what,
                       bound_s)  # fmt: skip


def correlate_logs() -> None:
    """Log records made while a span is current carry its trace and span ids."""
    from opentelemetry import trace

    previous = logging.getLogRecordFactory()
    if getattr(previous, "_bgjobs_tracing", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.otelTraceID = format(context.trace_id, "032x")
            record.otelSpanID = format(context.span_id, "016x")
        return record

    factory._bgjobs_tracing = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
