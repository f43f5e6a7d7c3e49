"""Provider failover for a notification channel: an ordered list of providers and a circuit breaker
per provider, kept in the coordination store so every worker process sees the same state.

A provider that fails ``failover_threshold`` times in a row is *opened* for ``failover_cooldown_s``:
messages go straight to the next provider. When the cool-down ends, the next message tries it
again (half-open): a success closes it, a failure opens it again at once.

Which errors move a message on:

- :class:`~bgjobs.errors.TransientError` (a 5xx, a refused connection, a connect timeout) and a
  vendor refusing the *credentials* (401/403: an expired key is the provider's problem, not the
  message's) go to the next provider at once;
- :class:`~bgjobs.errors.MaybeDelivered` (the request was sent and no answer came) goes on only for
  a duplicable category or template; otherwise the message is pinned to that provider and retried
  there with the same idempotency key, so a payment receipt is never sent by two providers;
- any other permanent error (an invalid number) stops: another provider would refuse it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import runtime, tally, wiring
from ..circuits import failures_key, open_key, probe_key, providers_key, tripped_key
from ..errors import MaybeDelivered, PermanentError, TransientError
from ..settings import NotificationSettings
from ._models import Channel

__all__ = ["Provider", "moves_on", "ordered", "providers", "record_failure", "record_success"]

logger = logging.getLogger("bgjobs.notifications")

_PORTS = {Channel.EMAIL: "mailer", Channel.SMS: "sms", Channel.PUSH: "push"}


@dataclass(frozen=True)
class Provider:
    name: str
    adapter: Any


def _names(adapters: list[Any]) -> Iterator[str]:
    seen: dict[str, int] = {}
    for adapter in adapters:
        base = str(getattr(adapter, "provider_name", None) or type(adapter).__name__)
        seen[base] = seen.get(base, 0) + 1
        yield base if seen[base] == 1 else f"{base}#{seen[base]}"


def providers(channel: Channel) -> list[Provider]:
    adapters = wiring.providers(_PORTS[channel])
    return [Provider(name, a) for name, a in zip(_names(adapters), adapters, strict=True)]


def ordered(channel: Channel, pinned: str | None) -> list[Provider]:
    """The providers to try, in order: a pinned one alone; else those with closed circuits (all,
    if every circuit is open: better a probe than no attempt)."""
    chain = providers(channel)
    if pinned is not None:
        return [p for p in chain if p.name == pinned] or chain[:1]
    if len(chain) == 1:
        return chain
    current = runtime.current()
    coordination = current.coordination
    found = coordination.marks([open_key(channel, p.name) for p in chain]
                               + [tripped_key(channel, p.name) for p in chain])  # fmt: skip
    cooldown = current.settings.notifications.failover_cooldown_s
    closed = []
    for provider, opened, tripped in zip(chain, found[: len(chain)], found[len(chain) :], strict=True):
        if opened is not None:
            continue
        # Half-open (its cool-down over, no success since): one message probes it, the others
        # keep to the backups until that probe has closed the circuit or opened it again.
        if tripped is not None and not coordination.first_time(
            probe_key(channel, provider.name, tripped), ttl_s=cooldown
        ):
            continue
        closed.append(provider)
    return closed or chain


def moves_on(exc: BaseException, *, category: str, template: str, settings: NotificationSettings) -> bool:
    """Whether ``exc`` from one provider sends the message to the next one."""
    if isinstance(exc, MaybeDelivered):
        return category in settings.duplicable or template in settings.duplicable
    if isinstance(exc, TransientError):
        return True
    return isinstance(exc, PermanentError) and getattr(exc, "status", None) in (401, 403)


def record_failure(
    channel: Channel, provider: Provider, settings: NotificationSettings, chain: list[Provider]
) -> None:
    """Count a failure; open the circuit at the threshold, or at once when it was open before.

    Also notes the channel's providers for the circuit gauge: here, not on every delivery, since a
    gauge of circuits only matters once one has failed."""
    coordination = runtime.current().coordination
    coordination.mark(providers_key(channel), ",".join(p.name for p in chain))
    cooldown = settings.failover_cooldown_s
    failures = coordination.count(failures_key(channel, provider.name), ttl_s=cooldown * 10)
    (tripped,) = coordination.marks([tripped_key(channel, provider.name)])
    if failures >= settings.failover_threshold or tripped is not None:
        until = time.time() + cooldown
        coordination.mark(open_key(channel, provider.name), str(until), ttl_s=cooldown)
        coordination.mark(tripped_key(channel, provider.name), str(until), ttl_s=cooldown * 10)
        coordination.forget(failures_key(channel, provider.name))
        logger.warning("%s provider %s failed %d time(s) in a row: skipped for %d s", channel,
                       provider.name, failures, cooldown)  # fmt: skip
        tally.counter("bgjobs_notification_circuit_opened_total",
                      "Times a notification provider's circuit was opened.",
                      ("channel", "provider")).labels(str(channel), provider.name).inc()  # fmt: skip


def record_success(channel: Channel, provider: Provider, *, chain_length: int) -> None:
    """Close the provider's circuit (a no-op without a backup: there is no circuit to keep)."""
    if chain_length > 1:
        runtime.current().coordination.forget(
            failures_key(channel, provider.name), tripped_key(channel, provider.name)
        )
