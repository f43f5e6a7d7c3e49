"""Exports: datasets streamed as CSV, JSON Lines or JSON to storage, tracked and announced.

``bgjobs.exports.request("invoices", fmt="csv", period="2025-06", requested_by=recipient)``
records an export and returns its id; a worker streams the rows to the ``Storage`` port and
emails the requester a link. See docs/exports.md.
"""

from . import (
    _templates,  # noqa: F401  (registers the exports family's notification templates)
    actors,
    tasks,
)
from ._datasets import Dataset, get_dataset, register_dataset, registered_datasets
from ._formats import FORMATS, encode
from ._models import ExportInfo, ExportJob
from ._sender import exports, get, request

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
