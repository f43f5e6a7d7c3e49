"""Cleanup: declarative retention policies that archive, delete or export then delete old rows in
bounded batches, and compress old logs. See docs/cleanup.md.
"""

from . import actors
from .actors import run_cleanup
from .compress import compress_logs
from .policies import Policy, parse_age, policies, register_policy, reset
from .service import run_policy

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
