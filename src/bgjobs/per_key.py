"""Per-key concurrency caps and rate limits, as an actor declares them (docs/controls.md).

::

    @bgjobs.actor(concurrency=bgjobs.PerKey("tenant_id", limit=2),
                  rate=bgjobs.PerKey("tenant_id", rate="100/m", burst=10))
    def build_report(payload: Report) -> None: ...

This module only parses and checks the declaration; :mod:`bgjobs.keyed_store` keeps the slots,
turns and lanes, and :mod:`bgjobs.keying` admits sends and releases finished jobs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import dramatiq

from .errors import ConfigurationError

__all__ = ["ADMITTED", "KeyLimits", "PerKey", "parse_rate"]

#: The option marking a message that went through admission (a requeued dead letter has none).
ADMITTED = "bgjobs_admitted"
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_rate(value: str, *, what: str) -> float:
    """``"100/m"``, ``"5/s"``, ``"1000/h"``, ``"3/10s"``: milliseconds between turns.

    Raises:
        ConfigurationError: a rate that does not parse or is zero; ``what`` names it.
    """
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) <= 0:
        raise ConfigurationError(f"{what}={value!r}: give a rate like 100/m, 5/s, 1000/h or 3/10s")
    span = int(match.group(2) or 1) * _UNITS[match.group(3)]
    if span <= 0:
        raise ConfigurationError(f"{what}={value!r}: its period must be more than nothing")
    return span / int(match.group(1))


@dataclass(frozen=True)
class PerKey:
    """A limit per value of payload fields (``"tenant_id"``, or several): ``limit`` jobs running
    (queued and running, in fact: see docs/controls.md) at once, or ``rate`` jobs started per period
    with bursts of up to ``burst``."""

    key: str | tuple[str, ...]
    limit: int | None = None
    rate: str | None = None
    burst: int = 1
    fields: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", (self.key,) if isinstance(self.key, str) else tuple(self.key))
        if not self.fields:
            raise ConfigurationError("PerKey: name at least one payload field as the key")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigurationError(f"PerKey: limit={self.limit!r}; give a whole number of at least 1")
        if self.rate is not None:
            parse_rate(self.rate, what="PerKey: rate")
        if not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigurationError(f"PerKey: burst={self.burst!r}; give a whole number of at least 1")


@dataclass(frozen=True)
class KeyLimits:
    """An actor's cap and rate per key: ``limit`` -1 for no cap, ``interval_ms`` 0 for no rate."""

    fields: tuple[str, ...]
    limit: int = -1
    interval_ms: float = 0.0
    burst: int = 1

    @classmethod
    def declared(cls, where: str, payload: type[Any], concurrency: Any, rate: Any) -> KeyLimits | None:
        """The actor's limits, checked against its payload's fields; None without any."""
        if concurrency is None and rate is None:
            return None
        for name, given in (("concurrency", concurrency), ("rate", rate)):
            if given is not None and not isinstance(given, PerKey):
                raise ConfigurationError(f"{where}: {name}= takes bgjobs.PerKey(field, ...)")
        if concurrency is not None and concurrency.limit is None:
            raise ConfigurationError(f"{where}: concurrency=PerKey(...) needs limit=")
        if rate is not None and rate.rate is None:
            raise ConfigurationError(f"{where}: rate=PerKey(...) needs rate=, like '100/m'")
        if concurrency is not None and rate is not None and concurrency.fields != rate.fields:
            raise ConfigurationError(f"{where}: concurrency and rate are per {concurrency.fields} and "
                                     f"{rate.fields}; give both the same key")  # fmt: skip
        return cls(
            cls.checked_fields(where, payload, (concurrency or rate).fields),
            limit=concurrency.limit if concurrency is not None else -1,
            interval_ms=parse_rate(rate.rate, what=f"{where}: rate") if rate is not None else 0.0,
            burst=rate.burst if rate is not None else 1,
        )

    @staticmethod
    def checked_fields(where: str, payload: type[Any], fields: tuple[str, ...]) -> tuple[str, ...]:
        """``fields``, each a field of ``payload``.

        Raises:
            ConfigurationError: naming ``where``, the unknown fields and the payload's.
        """
        known = set(getattr(payload, "model_fields", {}))
        if unknown := [f for f in fields if f not in known]:
            raise ConfigurationError(f"{where}: key {', '.join(unknown)} is not a field of "
                                     f"{payload.__name__} ({', '.join(sorted(known))})")  # fmt: skip
        return fields

    def configured(self, given: Any, where: str) -> KeyLimits:
        """These limits with what settings give in their place (:class:`KeyLimitSettings`).

        Raises:
            ConfigurationError: a rate that does not parse, naming ``where``.
        """
        interval = self.interval_ms if given.rate is None else parse_rate(given.rate, what=f"{where}.rate")
        return KeyLimits(
            self.fields,
            limit=self.limit if given.limit is None else given.limit,
            interval_ms=interval,
            burst=self.burst if given.burst is None else given.burst,
        )

    def key(self, message: dramatiq.Message[Any]) -> str:
        """The message's key: its one field's value, or its fields' values as a JSON list."""
        data = message.args[0] if message.args else {}
        values = [data.get(f) if isinstance(data, dict) else None for f in self.fields]
        if len(values) == 1 and isinstance(values[0], str | int):
            return str(values[0])
        return json.dumps(values, separators=(",", ":"), default=str)

    def declaration(self) -> str:
        """The limits as the store keeps them for its scripts: ``limit interval burst``."""
        return f"{self.limit} {self.interval_ms:g} {self.burst}"
