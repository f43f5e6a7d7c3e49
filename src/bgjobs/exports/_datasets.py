"""Datasets: what can be exported, registered by the host (or a family) under a name.

A dataset is a function of ``(period, filters)`` returning a SQLAlchemy ``select`` (streamed with
a server-side cursor) or any iterable of mappings, and its columns in order. Declaring the
columns up front fixes the header and the key order whatever the rows hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidPayload

__all__ = ["Dataset", "get_dataset", "register_dataset", "registered_datasets"]

Source = Callable[..., Any]


@dataclass(frozen=True)
class Dataset:
    name: str
    #: ``source(period=..., filters=...)`` -> a ``select`` or an iterable of mappings.
    source: Source
    columns: tuple[str, ...]
    #: Filters a request may pass; anything else is refused at ``request``.
    filters: tuple[str, ...] = ()
    description: str = ""
    #: Checks a request's period (raises InvalidPayload for one the dataset cannot read).
    period: Callable[[str | None], object] | None = None


_lock = threading.Lock()
_datasets: dict[str, Dataset] = {}


def register_dataset(
    name: str, source: Source, *, columns: Sequence[str], filters: Sequence[str] = (), description: str = "",
    period: Callable[[str | None], object] | None = None,
) -> Dataset:  # fmt: skip
    """Make ``name`` exportable. Registering the same name again replaces it.

    Args:
        period: parses a request's period and raises ``InvalidPayload`` for a bad one; called at
            ``request``, so ``period="2025-13"`` is refused there and never reaches a worker.
    """
    if not columns:
        raise InvalidPayload(f"dataset {name}: columns: at least one column")
    dataset = Dataset(name, source, tuple(columns), tuple(filters), description, period)
    with _lock:
        _datasets[name] = dataset
    return dataset


def registered_datasets() -> dict[str, Dataset]:
    with _lock:
        return dict(_datasets)


def get_dataset(name: str) -> Dataset:
    """Raises:
    InvalidPayload: no dataset has that name; the message lists the known ones.
    """
    with _lock:
        found = _datasets.get(name)
        known = ", ".join(sorted(_datasets)) or "none are registered"
    if found is None:
        raise InvalidPayload(f"dataset: unknown dataset {name!r}; known datasets: {known}")
    return found


def rows_of(result: Iterable[Any]) -> Iterable[Any]:
    """Rows as the writers read them: a database result's rows as they are (read by position, the
    shape decided on the first), mappings, and models as mappings."""
    found = iter(result)
    for first in found:
        if hasattr(first, "_fields") and not (len(first) == 1 and hasattr(first[0], "model_dump")):
            yield first
            yield from found  # one result: every row of the same shape
            return
        yield _mapping(first)
        for row in found:
            yield _mapping(row)


def _mapping(row: Any) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        return row
    if hasattr(row, "_mapping"):
        mapping = row._mapping
        if len(mapping) == 1 and hasattr(row[0], "model_dump"):
            return dict(row[0].model_dump())
        return dict(mapping)
    if hasattr(row, "model_dump"):
        return dict(row.model_dump())
    raise InvalidPayload(f"a dataset row must be a mapping, a row or a model, not {type(row).__name__}")
