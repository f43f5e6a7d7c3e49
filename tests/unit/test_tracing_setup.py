"""How a worker process sets up tracing from the environment: the OTLP protocol from the
signal-specific variable first, the service's name from the SDK's own variables, and an empty
``BGJOBS_TRACING__ENABLED`` read as unset."""

from __future__ import annotations

import pytest

from bgjobs import tracing, tracing_provider
from bgjobs.errors import ConfigurationError
from bgjobs.settings import Settings

PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


@pytest.mark.parametrize(("traces", "general", "wire"), [
    (None, None, "http"),
    ("grpc", None, "grpc"),  # was ignored: every batch went out over HTTP to a gRPC collector
    ("grpc", "http/protobuf", "grpc"),  # the signal's own variable wins
    ("http/protobuf", "grpc", "http"),
    (None, "grpc", "grpc"),
    ("", "grpc", "grpc"),  # an empty one is unset
])  # fmt: skip
def test_the_traces_protocol_variable_wins_over_the_general_one(
    monkeypatch: pytest.MonkeyPatch, traces: str | None, general: str | None, wire: str
) -> None:
    for name, value in zip(PROTOCOLS, (traces, general), strict=True):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert tracing_provider._wire() == wire


def test_a_protocol_the_exporter_does_not_speak_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ConfigurationError, match=r"^OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json' is not"):
        tracing_provider._wire()


@pytest.mark.parametrize(("attributes", "service", "name"), [
    (None, None, "bgjobs-worker"),
    ("service.name=billing-worker,deployment.environment=prod", None, "billing-worker"),  # was overridden
    ("service.name=billing-worker", "payments", "payments"),  # OTEL_SERVICE_NAME wins, as the SDK says
    ("deployment.environment=prod", None, "bgjobs-worker"),
])  # fmt: skip
def test_the_service_name_follows_the_sdk_and_bgjobs_names_it_only_when_nothing_does(
    monkeypatch: pytest.MonkeyPatch, attributes: str | None, service: str | None, name: str
) -> None:
    for variable, value in (("OTEL_RESOURCE_ATTRIBUTES", attributes), ("OTEL_SERVICE_NAME", service)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    found = tracing_provider._resource().attributes
    assert found["service.name"] == name
    if attributes and "deployment.environment" in attributes:
        assert found["deployment.environment"] == "prod"  # the rest of the variable is kept


def test_an_empty_setting_that_is_not_text_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGJOBS_TRACING__ENABLED", "")  # raised ConfigurationError at the first send
    monkeypatch.setenv("BGJOBS_WORKER__MAX_DELIVERIES", "")
    monkeypatch.setenv("BGJOBS_TRACING__SHUTDOWN_FLUSH_S", "")
    settings = Settings(broker_url="stub://")
    assert settings.tracing.enabled is False and settings.tracing.shutdown_flush_s == 2.0
    assert settings.worker.max_deliveries == 5
    assert tracing.middleware(settings, worker=False) == []


def test_a_message_carries_what_the_propagator_would_write() -> None:
    """The fast path writes the very headers the default propagator writes, and gives way to it
    when there is baggage to carry."""
    from opentelemetry import baggage, context, trace
    from opentelemetry.propagate import inject
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    from bgjobs.trace_headers import carrier_of

    span = NonRecordingSpan(SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "v1")]),
    ))  # fmt: skip
    expected: dict[str, str] = {}
    inject(expected, context=trace.set_span_in_context(span))
    assert carrier_of(span) == expected == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "vendor=v1"}
    token = context.attach(baggage.set_baggage("tenant", "t1"))
    try:
        assert carrier_of(span)["baggage"] == "tenant=t1"
    finally:
        context.detach(token)
