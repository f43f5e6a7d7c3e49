"""bgjobs's public API as data: every name its public modules export, and each callable's parameters.

``python -m tests.support.public_api > tests/fixtures/public_api.json`` records it at a release;
``tests/unit/test_public_api.py`` then fails when a recorded name goes or its signature changes
incompatibly without a "Breaking changes" entry naming it in CHANGELOG.md's unreleased section.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from typing import Any

#: The modules whose ``__all__`` is the public API.
MODULES = (
    "bgjobs", "bgjobs.cleanup", "bgjobs.console", "bgjobs.db", "bgjobs.events", "bgjobs.exports",
    "bgjobs.jobs", "bgjobs.notifications", "bgjobs.outbox", "bgjobs.payouts", "bgjobs.ports",
    "bgjobs.testing", "bgjobs.webhooks",
)  # fmt: skip

Params = list[list[Any]] | None


def _params(value: Any) -> Params:
    """[name, kind, has a default] per parameter; None for what is not called."""
    if not callable(value) or inspect.ismodule(value):
        return None
    try:
        found = inspect.signature(value)
    except (TypeError, ValueError):
        return None
    empty = inspect.Parameter.empty
    return [[p.name, p.kind.name, p.default is not empty] for p in found.parameters.values()]


def collect() -> dict[str, Params]:
    api: dict[str, Params] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            api[f"{module_name}.{name}"] = _params(getattr(module, name))
    return api


def incompatible(before: Params, now: Params | str) -> str | None:
    """Why code written against ``before`` may break against ``now`` (None: it will not)."""
    if now == "missing":
        return "removed"
    if before is None or now is None or not isinstance(now, list):
        return None if before == now else "it is no longer called the same way"
    old = {name: (kind, default) for name, kind, default in before}
    new = {name: (kind, default) for name, kind, default in now}
    for name, (kind, default) in old.items():
        if kind in ("VAR_POSITIONAL", "VAR_KEYWORD"):
            continue
        if name not in new:
            return f"parameter {name!r} is gone"
        if new[name][0] != kind:
            return f"parameter {name!r} is now {new[name][0]}"
        if default and not new[name][1]:
            return f"parameter {name!r} lost its default"
    for name, (kind, default) in new.items():
        if name not in old and not default and kind not in ("VAR_POSITIONAL", "VAR_KEYWORD"):
            return f"new required parameter {name!r}"
    return None


def dumps(api: dict[str, Params]) -> str:
    """One name per line, so a release's change to the record reads as a diff of names."""
    lines = [f"  {json.dumps(name)}: {json.dumps(params)}" for name, params in sorted(api.items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(collect()))
