"""The event catalog: the event types an owner can subscribe to, each with its JSON Schema.

``webhooks.event_type("payment.completed", schema=PaymentCompleted, description=..., example=...)``
registers a type (at import, beside the model); ``publish`` then checks its data against the model,
so a receiver never gets a body its documentation does not describe. The portal offers the
catalog's types when an endpoint is added, and serves the catalog as JSON Schema.
Types not in the catalog can still be published (the catalog is opt-in, per type).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigurationError, InvalidPayload

__all__ = ["EventType", "catalog", "catalog_schema", "check", "event_type"]

_NAME = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


@dataclass(frozen=True)
class EventType:
    name: str
    schema: type[BaseModel]
    description: str
    example: Mapping[str, Any]

    def json_schema(self) -> dict[str, Any]:
        return self.schema.model_json_schema(mode="serialization")


_TYPES: dict[str, EventType] = {}


def event_type(
    name: str,
    *,
    schema: type[BaseModel],
    description: str = "",
    example: Mapping[str, Any] | BaseModel | None = None,
) -> EventType:
    """Register an event type; publishing it checks its data against ``schema``.

    Raises:
        ConfigurationError: a bad name, a schema that is not a pydantic model, or an example
            that does not match it.
    """
    if not _NAME.match(name) or len(name) > 100:
        raise ConfigurationError(
            f"event type {name!r}: dotted words (payment.completed), at most 100 characters"
        )
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigurationError(f"event type {name}: schema= must be a pydantic model class")
    if isinstance(example, BaseModel):
        example = example.model_dump(mode="json")
    try:
        shown = schema.model_validate(example).model_dump(mode="json") if example is not None else {}
    except ValidationError as exc:
        raise ConfigurationError(
            f"event type {name}: the example does not match the schema: {_first(exc)}"
        ) from None
    registered = EventType(name=name, schema=schema, description=description, example=shown)
    _TYPES[name] = registered
    return registered


def catalog() -> list[EventType]:
    """The registered event types, by name."""
    return [_TYPES[n] for n in sorted(_TYPES)]


def catalog_schema() -> dict[str, Any]:
    """The catalog as one document: each type's description, JSON Schema of its data, and example."""
    return {
        "event_types": {
            t.name: {"description": t.description, "schema": t.json_schema(), "example": dict(t.example)}
            for t in catalog()
        }
    }


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def check(name: str, data: BaseModel | Mapping[str, Any]) -> BaseModel | Mapping[str, Any]:
    """``data`` as the catalog's model of ``name`` reads it (unchanged for a type not in the catalog).

    Raises:
        InvalidPayload: the data does not match the type's schema, naming the field.
    """
    found = _TYPES.get(name)
    if found is None or isinstance(data, found.schema):
        return data
    try:
        payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        return found.schema.model_validate(payload)
    except ValidationError as exc:
        raise InvalidPayload(f"data.{_first(exc)} (event type {name})") from None
