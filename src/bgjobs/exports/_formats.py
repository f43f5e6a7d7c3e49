"""Writers: rows in, bytes out, a chunk at a time, so memory stays flat whatever the row count.

- CSV follows RFC 4180 (CRLF line ends, quotes doubled) with a header row, in UTF-8. A text cell
  starting with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) gets a leading ``'`` so a
  spreadsheet shows it instead of running it as a formula.
- JSON Lines writes one object per line; JSON writes one array (for small exports).
- Decimals are written as their exact text in positional notation (``0.000000001``, never
  ``1E-9``), datetimes as ISO 8601 with their offset (naive ones
  are taken as UTC), dates as ISO 8601; None is an empty CSV cell or JSON null.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

__all__ = ["FORMATS", "encode", "gzipped"]

FORMATS = ("csv", "jsonl", "json")
CHUNK = 1 << 16
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _value(value: Any) -> Any:
    """A JSON-ready value that loses nothing (Decimal as text, datetimes with their offset)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        # Positional, never scientific: str() writes Decimal("0.000000001") as "1E-9", which a
        # spreadsheet or a strict reader takes for text. Trailing zeros ("1.50") are kept.
        return format(value, "f")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        raise TypeError("bytes cannot be exported; decode them in the dataset")
    return value


def _cell(value: Any) -> str:
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str:
        return "'" + value if value.startswith(_FORMULA) and not _numeric(value) else value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    value = _value(value)
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value)
        if isinstance(value, dict | list)
        else str(value)
    )
    if text.startswith(_FORMULA) and not _is_number(value):
        return "'" + text
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) or (isinstance(value, str) and _numeric(value))


def _numeric(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


def _csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
        if buffer.tell() >= CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _jsonl(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    parts: list[str] = []
    size = 0
    for row in rows:
        line = json.dumps({c: _value(row.get(c)) for c in columns}, ensure_ascii=False) + "\n"
        parts.append(line)
        size += len(line)
        if size >= CHUNK:
            yield "".join(parts)
            parts, size = [], 0
    yield "".join(parts)


def _json(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    first = True
    yield "["
    for chunk in _jsonl(rows, columns):
        for line in chunk.splitlines():
            yield ("" if first else ",\n") + line
            first = False
    yield "]\n"


def encode(fmt: str, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[bytes]:
    """``rows`` as ``fmt`` (csv, jsonl or json), in UTF-8 chunks."""
    writer = {"csv": _csv, "jsonl": _jsonl, "json": _json}[fmt]
    for text in writer(rows, columns):
        if text:
            yield text.encode()


def gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Compress a stream of chunks into one gzip member, as it flows."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()
