"""Per-key limits as operators see and change them: each limited actor's cap and rate, its keys at
their caps with the jobs waiting, and changes at run time (``bgjobs limits``, the console's Limits
page, ``/api/v1/limits``). A change is kept in the coordination store, read by every worker's next
admission without a restart, and the waiting keys are looked at again at once."""

from __future__ import annotations

from typing import Any

from .errors import InvalidPayload, NotFound
from .keying import GATED, enqueue_pumped, keyed_of, limited_actors, limits_of
from .per_key import parse_rate

__all__ = ["change", "keys", "overview"]

SEP = "\x1f"


def _broker() -> Any:
    from . import runtime

    return runtime.current().broker


def _limited() -> dict[str, Any]:
    broker = _broker()
    return {name: limits_of(name, broker) for name in limited_actors()}


def _effective(actor: str, declared: Any, overrides: dict[str, str]) -> dict[str, Any]:
    limit = int(overrides.get(f"{actor}{SEP}limit", declared.limit))
    interval = float(overrides.get(f"{actor}{SEP}interval", declared.interval_ms))
    burst = int(overrides.get(f"{actor}{SEP}burst", declared.burst))
    return {
        "limit": None if limit < 0 else limit,
        "rate": None if not interval else f"{60_000 / interval:g}/m",
        "burst": burst,
    }


def overview() -> list[dict[str, Any]]:
    """Each actor with per-key limits: its key fields, declared and current limits, how many keys
    hold slots and jobs wait, and its 100 busiest keys."""
    keyed = keyed_of(_broker())
    overrides, totals = keyed.overrides(), keyed.totals()
    out = []
    for actor, declared in _limited().items():
        busy, waiting = totals.get(actor, (0, 0))
        out.append({
            "actor": actor, "key": list(declared.fields),
            "declared": _effective(actor, declared, {}), "current": _effective(actor, declared, overrides),
            "changed": sorted(f.split(SEP, 1)[1].replace(SEP, " ") for f in overrides
                              if f.startswith(actor + SEP)),
            "keys": [s.__dict__ for s in keyed.states(actor)], "busy_keys": busy, "waiting": waiting,
            # Webhook endpoints take turns one at a time, and their deliveries wait in the dispatcher
            "lanes": actor not in GATED,
        })  # fmt: skip
    return out


def keys(actor: str) -> list[dict[str, Any]]:
    """The actor's 1,000 busiest keys holding slots or with jobs waiting, most waiting first."""
    _known(actor)
    return [s.__dict__ for s in keyed_of(_broker()).states(actor, limit=1000)]


def _known(actor: str) -> Any:
    declared = limits_of(actor, _broker())
    if declared is None:
        names = ", ".join(_limited()) or "none is declared in this process"
        raise NotFound(f"actor: no actor {actor!r} with per-key limits ({names})")
    return declared


def change(
    actor: str, *, key: str | None = None, limit: int | None = None, rate: str | None = None,
    burst: int | None = None, reset: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Change an actor's limits, or one key's own, at run time; ``reset`` goes back to what the
    code declares (or, for a key, to the actor's) first. ``limit=0`` holds every job of the actor
    (or key) in its lane.

    Raises:
        NotFound: no such actor with per-key limits.
        InvalidPayload: a value out of range, a rate that does not parse, or nothing to change.
    """
    declared = _known(actor)
    if limit is not None and limit < 0:
        raise InvalidPayload(f"limit: {limit}; give 0 (hold every job) or more")
    if burst is not None and burst < 1:
        raise InvalidPayload(f"burst: {burst}; give 1 or more")
    if burst is not None and actor in GATED:
        raise InvalidPayload(f"burst: {actor} takes its turns one at a time; give limit or rate")
    interval = None
    if rate is not None:
        try:
            interval = parse_rate(rate, what="rate")
        except Exception as exc:
            raise InvalidPayload(str(exc)) from None
    if not reset and limit is None and rate is None and burst is None:
        raise InvalidPayload("limit: nothing to change; give limit, rate or burst, or reset")
    keyed = keyed_of(_broker())
    if reset:
        for what in ("limit", "interval", "burst"):
            keyed.override(actor, what, None, key=key)
    for what, value in (("limit", limit), ("interval", interval), ("burst", burst)):
        if value is not None:
            keyed.override(actor, what, f"{value:g}" if isinstance(value, float) else str(value), key=key)
    enqueue_pumped(_broker(), keyed, keyed.due())  # the waiting keys a change freed start now
    overrides = keyed.overrides()
    current = _effective(actor, declared, overrides)
    if key is not None:  # the key's own values where it has them, else the actor's
        mine = dict(overrides)
        for what in ("limit", "interval", "burst"):
            if (own := overrides.get(SEP.join([actor, key, what]))) is not None:
                mine[f"{actor}{SEP}{what}"] = own
        current = {"key": key, **_effective(actor, declared, mine)}
    return {"actor": actor, **current}
