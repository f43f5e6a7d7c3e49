"""Exports' worker side: the handler of :data:`~bgjobs.exports.tasks.run_export`."""

from __future__ import annotations

from . import _handling as handling
from . import _templates  # noqa: F401  (registers the exports family's notification templates)
from ._models import ExportJob
from .tasks import run_export

__all__ = ["run_export"]


@run_export.handler
def _run(job: ExportJob) -> None:
    handling.run(job)
