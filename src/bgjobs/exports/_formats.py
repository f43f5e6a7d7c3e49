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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from json.encoder import encode_basestring
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
    """The CSV text of a value of a type :data:`_CELLS` does not name (a subclass of int or str,
    a UUID, a dict): through its JSON value, neutralised if it could run as a formula."""
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


def _text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA) and not _numeric(value) else value


def _moment(value: datetime) -> str:
    # Naive datetimes are UTC: the text an aware one in UTC writes, without building it
    return value.isoformat() + ("" if value.tzinfo else "+00:00")


#: What csv.writer writes as bgjobs would (None as an empty cell, numbers with str()).
_AS_IS = frozenset({int, float, type(None)})
#: The CSV text of a cell by its exact type, for the types not :data:`_AS_IS`; others take
#: :func:`_cell`. A number is never neutralised ("-12.50" is one), a text that could run as a
#: formula is.
_CELLS: dict[type, Callable[[Any], str]] = {
    str: _text, Decimal: lambda v: format(v, "f"), datetime: _moment, date: date.isoformat,
    bool: lambda v: "true" if v else "false",
}  # fmt: skip
#: The JSON text of a value by its exact type; other types take json.dumps of :func:`_value`.
_JSON: dict[type, Callable[[Any], str]] = {
    str: encode_basestring, int: int.__repr__, type(None): lambda v: "null",
    bool: lambda v: "true" if v else "false", Decimal: lambda v: encode_basestring(format(v, "f")),
    datetime: lambda v: encode_basestring(_moment(v)), date: lambda v: encode_basestring(v.isoformat()),
}  # fmt: skip


def _json_text(value: Any) -> str:
    return json.dumps(_value(value), ensure_ascii=False)


def _picker(row: Any, columns: Sequence[str]) -> Callable[[Any], Sequence[Any]]:
    """How to read a row's values in column order, decided on the first row: a database row by
    position (its names read once), a mapping by name (a missing column is empty)."""
    names = getattr(row, "_fields", None)
    if names is not None and tuple(names) == tuple(columns):
        return lambda r: r
    if names is not None and set(columns) <= set(names):
        at = [list(names).index(c) for c in columns]
        return lambda r: [r[i] for i in at]
    if names is not None:
        return lambda r: [r._mapping.get(c) for c in columns]
    return lambda r: [r.get(c) for c in columns]


def _csv(rows: Iterable[Any], columns: Sequence[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    cells, pick = _CELLS.get, None
    for row in rows:
        if pick is None:
            pick = _picker(row, columns)
        # int, float, None and a text that cannot be a formula go to the writer as they are; only
        # the rest costs a call
        writer.writerow([v if ((t := type(v)) is str and not v.startswith(_FORMULA)) or t in _AS_IS
                         else (cells(t) or _cell)(v) for v in pick(row)])  # fmt: skip
        if buffer.tell() >= CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _jsonl(rows: Iterable[Any], columns: Sequence[str]) -> Iterator[str]:
    parts: list[str] = []
    size, pick, texts = 0, None, _JSON.get
    # One object per line, its keys written once: '{"id": %s, "name": %s}' filled with each
    # value's JSON text (what json.dumps(..., ensure_ascii=False) writes, a fifth faster)
    line_of = "{" + ", ".join(encode_basestring(c).replace("%", "%%") + ": %s" for c in columns) + "}\n"
    for row in rows:
        if pick is None:
            pick = _picker(row, columns)
        line = line_of % tuple([(texts(type(v)) or _json_text)(v) for v in pick(row)])
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
    """``rows`` (mappings, or database rows naming the columns) as ``fmt`` (csv, jsonl or json), in
    UTF-8 chunks."""
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
