"""Datasets: what can be exported, registered by the host (or a family) under a name.

A dataset is a function of ``(period, filters)`` returning a SQLAlchemy ``select`` (streamed with
a server-side cursor) or any iterable of mappings, and its columns in order. Declaring the
columns up front fixes the header and the key order whatever the rows hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidPayload
from ._formats import batched

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


def batches_of(result: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Rows as the writers read them, in lists of about ``size``: a database result's rows as they
    are (read by position, the shape decided on the first; fetched a batch at a time), mappings,
    and models as mappings."""
    partitions = getattr(result, "partitions", None)
    batches = partitions(size) if partitions is not None else batched(result, size)
    for first in batches:
        row = first[0]
        if hasattr(row, "_fields") and not (len(row) == 1 and hasattr(row[0], "model_dump")):
            yield first
            yield from batches  # one result: every row of the same shape
            return
        yield [_mapping(r) for r in first]
        for batch in batches:
            yield [_mapping(r) for r in batch]


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
