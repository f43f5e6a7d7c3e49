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


def rows_of(result: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    """Rows as mappings, whether they come as mappings, SQLAlchemy rows or models."""
    for row in result:
        if isinstance(row, Mapping):
            yield row
        elif hasattr(row, "_mapping"):
            mapping = row._mapping
            if len(mapping) == 1 and hasattr(row[0], "model_dump"):
                yield row[0].model_dump()
            else:
                yield mapping
        elif hasattr(row, "model_dump"):
            yield row.model_dump()
        else:
            raise InvalidPayload(
                f"a dataset row must be a mapping, a row or a model, not {type(row).__name__}"
            )
