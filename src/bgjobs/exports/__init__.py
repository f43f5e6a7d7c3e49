"""Exports: datasets streamed as CSV, JSON Lines or JSON to storage, tracked and announced.

``bgjobs.exports.request("invoices", fmt="csv", period="2025-06", requested_by=recipient)``
records an export and returns its id; a worker streams the rows to the ``Storage`` port and
emails the requester a link. See docs/exports.md.
"""

from . import actors
from .datasets import Dataset, get_dataset, register_dataset, registered_datasets
from .formats import FORMATS, encode
from .models import ExportInfo, ExportJob, ExportRecord
from .sender import exports, get, request, storage_key

__all__ = [
    "FORMATS",
    "Dataset",
    "ExportInfo",
    "ExportJob",
    "ExportRecord",
    "actors",
    "encode",
    "exports",
    "get",
    "get_dataset",
    "register_dataset",
    "registered_datasets",
    "request",
    "storage_key",
]
