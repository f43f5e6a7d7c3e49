"""Exports' actor: one export per message, on the ``exports`` queue."""

from __future__ import annotations

from ..typed import actor
from . import service
from .models import ExportJob

__all__ = ["run_export"]


@actor(name="exports.run", queue="exports")
def run_export(job: ExportJob) -> None:
    service.run(job)
