"""Packages whose names load on first use (PEP 562), as the root package's do.

A family's package lists where each public name lives; ``import bgjobs.webhooks`` then imports
nothing else, and ``bgjobs.webhooks.publish`` imports the sending side alone. A host that only
sends never loads a worker's handlers, the dispatcher, its transport or aiohttp.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["exports"]


def exports(package: str, table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``table`` maps each public name to the
    submodule it lives in (a submodule's own name maps to itself), or to a module of bgjobs
    outside the package by its full name (``bgjobs.errors``)."""

    def __getattr__(name: str) -> Any:
        home = table.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home if home.startswith("bgjobs.") else f"{package}.{home}")
        value = module if home == name else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return __getattr__, __dir__
