"""Where notification providers' circuit breakers live in the coordination store, and reading them.

Apart from :mod:`bgjobs.notifications._failover`, which opens and closes them, so the metrics
collector (:mod:`bgjobs.exposition`) can read them without importing the notifications family.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CHANNELS", "circuit_states", "failures_key", "open_key", "probe_key", "providers_key", "tripped_key",
]  # fmt: skip

CHANNELS = ("email", "sms", "push")


def open_key(channel: str, provider: str) -> str:
    """Set (with the cool-down as its ttl) while the provider is skipped."""
    return f"bgjobs-circuit:{channel}:{provider}:open"


def tripped_key(channel: str, provider: str) -> str:
    """Set once the circuit has opened, until a success: the next failure reopens it at once."""
    return f"bgjobs-circuit:{channel}:{provider}:tripped"


def probe_key(channel: str, provider: str, opened: str) -> str:
    """Taken by the one message that probes a half-open circuit (``opened``: the tripped mark's
    value, new each time the circuit opens), so concurrent messages do not all probe at once."""
    return f"bgjobs-circuit:{channel}:{provider}:probe:{opened}"


def failures_key(channel: str, provider: str) -> str:
    """Failures in a row."""
    return f"bgjobs-circuit:{channel}:{provider}:failures"


def providers_key(channel: str) -> str:
    """The channel's providers in order (comma-separated), as a worker last used them."""
    return f"bgjobs-providers:{channel}"


def circuit_states(coordination: Any) -> dict[tuple[str, str], bool]:
    """(channel, provider) -> open, for every channel a worker has sent through with a backup."""
    found: dict[tuple[str, str], bool] = {}
    lists = coordination.marks([providers_key(c) for c in CHANNELS])
    for channel, names in zip(CHANNELS, lists, strict=True):
        chain = names.split(",") if names else []
        opened = coordination.marks([open_key(channel, n) for n in chain]) if chain else []
        for name, o in zip(chain, opened, strict=True):
            found[(channel, name)] = o is not None
    return found
