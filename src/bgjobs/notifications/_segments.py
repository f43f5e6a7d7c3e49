"""How many SMS segments a text costs: carriers bill (and split) by segment, not by message."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

__all__ = ["Segments", "count_segments"]

# The GSM 03.38 default alphabet, and its extension table whose characters take two septets.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


class Segments(NamedTuple):
    encoding: Literal["GSM-7", "UCS-2"]
    #: Septets for GSM-7, UTF-16 code units for UCS-2.
    units: int
    segments: int

    @property
    def per_segment(self) -> int:
        """Units one segment holds when the text fits in one."""
        return 160 if self.encoding == "GSM-7" else 70


def count_segments(text: str) -> Segments:
    """The encoding a phone will use for ``text`` and the number of segments it is split into.

    One character outside GSM-7 (an emoji, a curly quote) makes the whole text UCS-2,
    which cuts a segment from 160 characters to 70; a split text loses 7 (GSM-7) or 3 (UCS-2)
    characters per segment to the concatenation header.
    """
    septets = 0
    for char in text:
        if char in _GSM7_BASIC:
            septets += 1
        elif char in _GSM7_EXTENDED:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return Segments("UCS-2", units, 1 if units <= 70 else math.ceil(units / 67))
    return Segments("GSM-7", septets, 1 if septets <= 160 else math.ceil(septets / 153))
