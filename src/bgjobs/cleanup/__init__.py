"""Cleanup: declarative retention policies that archive, delete or export then delete old rows in
bounded batches, and compress old logs. See docs/cleanup.md.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ..lazy import exports as _exports

if _TYPE_CHECKING:
    from . import actors
    from ._compress import compress_logs
    from ._policies import Policy, parse_age, policies, register_policy, reset
    from ._service import run_policy
    from .actors import run_cleanup

#: Where each public name lives (docs/architecture.md: sending never imports handling).
_EXPORTS: dict[str, str] = {
    "actors": "actors", "compress_logs": "_compress", "Policy": "_policies", "parse_age": "_policies",
    "policies": "_policies", "register_policy": "_policies", "reset": "_policies",
    "run_policy": "_service", "run_cleanup": "actors",
}  # fmt: skip

__getattr__, __dir__ = _exports(__name__, _EXPORTS)

__all__ = [
    "Policy",
    "actors",
    "compress_logs",
    "parse_age",
    "policies",
    "register_policy",
    "reset",
    "run_cleanup",
    "run_policy",
]
