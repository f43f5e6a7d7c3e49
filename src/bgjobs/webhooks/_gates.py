"""Each endpoint's gate: its concurrency slots, its rate (turns) and a pause its receiver asked for.

The gates are keys of the general per-key limits (:mod:`bgjobs.keyed_store`), under the name
:data:`ENDPOINT` with the endpoint id as the key: one store, and one place where operators see
each endpoint's deliveries in flight and change its cap or rate at run time (``bgjobs limits``,
the console's Limits page), as for any actor's keys. One call admits a whole batch, in one round
trip on Redis:

- **Turns.** An endpoint with a rate limit of ``r`` per second hands out turns ``1/r`` apart (the
  generic cell rate algorithm: the next free turn is stored, each delivery takes the next one).
  A delivery whose turn is near waits for it on the event loop; one whose turn is further off
  keeps the turn and is sent again for then, so it spends no attempt and holds no thread. The
  receiver sees the rate it was promised, not bursts and silences.
- **Pauses.** A ``Retry-After`` on a 429 or 503 pauses the endpoint until then for every
  delivery, not only the one refused: a receiver that asks for less gets less. A delivery
  admitted before the pause and waiting for its turn looks again before it goes (see
  :mod:`._attempts`).
- **Slots.** At most ``endpoint_concurrency`` requests in flight to an endpoint, across every
  worker. A slot is a sorted-set member with a deadline, so a killed worker's slot frees itself.

An endpoint's own ``rate_limit`` ranks above a rate changed for every endpoint at run time, and
below one changed for that endpoint alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ..coordination import Coordination
from ..keyed_store import Gate, Keyed
from ..keying import GATED, keyed_for
from ..per_key import KeyLimits

__all__ = ["ENDPOINT", "Admission", "Ask", "Gates", "Verdict", "endpoint_limits", "gates_for"]

#: The name endpoints' gates are kept under among the per-key limits.
ENDPOINT = "webhooks.endpoint"


class Verdict(IntEnum):
    GO = 0  #: a slot is held; send after ``wait_ms``
    FULL = 1  #: every slot is taken; try again a little later
    LATER = 2  #: the turn at ``wait_ms`` from now is kept for it; send it again then


@dataclass(frozen=True)
class Ask:
    endpoint_id: str
    holder: str
    #: Milliseconds between turns the endpoint asked for itself (its ``rate_limit``); 0 for none.
    own_interval_ms: int = 0
    #: A turn kept earlier (epoch milliseconds), or 0 to take the next one.
    turn_ms: int = 0


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    wait_ms: int
    #: The endpoint's cap as it is now (changed at run time, or as the settings give it).
    limit: int


def endpoint_limits(settings: Any) -> KeyLimits:
    """Every endpoint's cap and rate as the settings give them (``BGJOBS_WEBHOOKS__...``)."""
    rate = settings.webhooks.rate_limit
    return KeyLimits(("endpoint_id",), limit=settings.webhooks.endpoint_concurrency,
                     interval_ms=0.0 if rate is None else float(max(1, round(1000 / rate))))  # fmt: skip


GATED[ENDPOINT] = endpoint_limits


class Gates:
    """The endpoints' gates in one store."""

    def __init__(self, keyed: Keyed) -> None:
        self.keyed = keyed

    def admit(self, asks: list[Ask], limits: KeyLimits, *, lease_ms: int, hold_ms: int) -> list[Admission]:
        """Admit each ask, in order: GO holds a slot (until released, or ``lease_ms``), LATER keeps
        a turn more than ``hold_ms`` away, FULL takes nothing. ``limits``: every endpoint's."""
        if not asks:
            return []
        self.keyed.declare(ENDPOINT, limits.declaration())
        found = self.keyed.gate([Gate(ENDPOINT, a.endpoint_id, a.holder, limits.limit, limits.interval_ms,
                                      a.own_interval_ms, a.turn_ms) for a in asks],
                                lease_ms=lease_ms, hold_ms=hold_ms)  # fmt: skip
        return [Admission(Verdict(v), wait, limit) for v, wait, limit in found]

    def release(self, held: list[tuple[str, str]]) -> None:
        """Give back slots, as (endpoint id, holder) pairs."""
        if held:
            self.keyed.release([(ENDPOINT, endpoint_id, holder) for endpoint_id, holder in held])

    def pause(self, endpoint_id: str, *, seconds: float) -> None:
        """Hold every delivery to the endpoint for ``seconds`` from now."""
        self.keyed.pause(ENDPOINT, endpoint_id, until_ms=int(time.time() * 1000) + int(seconds * 1000))

    def paused_until(self, endpoint_id: str) -> int:
        """When the endpoint's pause ends (epoch milliseconds), or 0 when it is not paused."""
        return self.keyed.paused_until(ENDPOINT, endpoint_id)


def gates_for(coordination: Coordination) -> Gates:
    """The gates in ``coordination``'s store (a view of its per-key limits, which are kept once
    per store by :func:`~bgjobs.keying.keyed_for`)."""
    return Gates(keyed_for(coordination))
