"""Exports: datasets streamed as CSV, JSON Lines or JSON to storage, tracked and announced.

``bgjobs.exports.request("invoices", fmt="csv", period="2025-06", requested_by=recipient)``
records an export and returns its id; a worker streams the rows to the ``Storage`` port and
emails the requester a link. See docs/exports.md.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ..lazy import exports as _exports

if _TYPE_CHECKING:
    from . import actors, tasks
    from ._datasets import Dataset, get_dataset, register_dataset, registered_datasets
    from ._formats import FORMATS, encode
    from ._models import ExportInfo, ExportJob
    from ._sender import exports, get, request

#: Where each public name lives (docs/architecture.md: sending never imports handling).
_EXPORTS: dict[str, str] = {
    "actors": "actors", "tasks": "tasks", "Dataset": "_datasets", "get_dataset": "_datasets",
    "register_dataset": "_datasets", "registered_datasets": "_datasets", "FORMATS": "_formats",
    "encode": "_formats", "ExportInfo": "_models", "ExportJob": "_models", "exports": "_sender",
    "get": "_sender", "request": "_sender",
}  # fmt: skip

__getattr__, __dir__ = _exports(__name__, _EXPORTS)

__all__ = [
    "FORMATS",
    "Dataset",
    "ExportInfo",
    "ExportJob",
    "actors",
    "encode",
    "exports",
    "get",
    "get_dataset",
    "register_dataset",
    "registered_datasets",
    "request",
    "tasks",
]
