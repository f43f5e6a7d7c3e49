"""Exports' tasks: what a worker is asked to run, by name, queue and payload (no code here)."""

from __future__ import annotations

from ..typed import task
from ._models import ExportJob

__all__ = ["run_export"]

#: One export per message, on the ``exports`` queue; an operator may cap each requester's exports
#: running at once, or their rate (``BGJOBS_KEY_LIMITS='{"exports.run": {"limit": 2}}'``).
run_export = task("exports.run", queue="exports", payload=ExportJob, keyed_by="owner")
