"""The trace context a message carries: what the global propagator would write, faster.

Every traced send puts its span's context in the message's options. The default propagator (W3C
trace context and baggage) costs a third of a send span; with it and no baggage, the
``traceparent`` header (and ``tracestate``) is written here instead. Any other propagator a host
set (B3, Jaeger) is used as it is.
"""

from __future__ import annotations

from typing import Any

__all__ = ["carrier_of"]

#: The global propagator last looked at, and whether it is the default one.
_W3C: tuple[Any, bool] = (None, False)
#: OpenTelemetry's functions this module calls, looked up once (imports cost on every send).
_otel: Any = None


def carrier_of(span: Any) -> dict[str, str]:
    """The context a message carries for ``span``: what the global propagator writes. With the
    default one (W3C trace context and baggage) and no baggage, the header is written here, at a
    third of the propagator's cost on every send."""
    global _W3C, _otel
    if _otel is None:
        import opentelemetry.baggage
        import opentelemetry.propagate
        import opentelemetry.trace

        _otel = opentelemetry
    textmap = _otel.propagate.get_global_textmap()
    if _W3C[0] is not textmap:
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        kinds = [type(p) for p in getattr(textmap, "_propagators", [])]
        _W3C = (textmap, kinds == [TraceContextTextMapPropagator, W3CBaggagePropagator])
    if _W3C[1] and not _otel.baggage.get_all():
        found = span.get_span_context()
        if found.is_valid:
            header = f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}"
            carrier = {"traceparent": header}
            if found.trace_state:
                carrier["tracestate"] = found.trace_state.to_header()
            return carrier
    carrier = {}
    _otel.propagate.inject(carrier, context=_otel.trace.set_span_in_context(span))
    return carrier
