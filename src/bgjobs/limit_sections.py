"""Per-key limits from settings (``BGJOBS_KEY_LIMITS``): a deployment's own caps and rates for the
actors that declare per-key limits in code."""

from __future__ import annotations

from pydantic import Field

from .sections import Section

__all__ = ["KeyLimitSettings"]


class KeyLimitSettings(Section):
    """One actor's cap, rate and burst per key, in place of what its code declares (each optional).

    ``BGJOBS_KEY_LIMITS='{"reports.build": {"limit": 5, "rate": "300/m", "burst": 10}}'``. Changes
    made at run time (``bgjobs limits set``, the console) still win until they are reset.
    """

    #: Jobs of one key at once (0 holds every key); None: as declared.
    limit: int | None = Field(default=None, ge=0)
    #: Starts per period, like ``100/m``; None: as declared.
    rate: str | None = None
    #: Starts a key may make at once; None: as declared.
    burst: int | None = Field(default=None, ge=1)
