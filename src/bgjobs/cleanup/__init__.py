"""Cleanup: declarative retention policies that archive, delete or export then delete old rows in
bounded batches, and compress old logs. See docs/cleanup.md.
"""

from . import actors
from ._compress import compress_logs
from ._policies import Policy, parse_age, policies, register_policy, reset
from ._service import run_policy
from .actors import run_cleanup

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
