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
from itertools import islice, repeat
from json.encoder import encode_basestring
from operator import attrgetter, methodcaller
from typing import Any
from uuid import UUID

__all__ = ["FORMATS", "batched", "encode", "encode_batches", "gzipped"]

FORMATS = ("csv", "jsonl", "json")
CHUNK = 1 << 16
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_START = methodcaller("startswith", _FORMULA)
_TZINFO = attrgetter("tzinfo")


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


def _SAME(row: Any) -> Any:
    """The picker of a row whose values are the columns in order (the writers read it as it is)."""
    return row


def _picker(row: Any, columns: Sequence[str]) -> Callable[[Any], Sequence[Any]]:
    """How to read a row's values in column order, decided on the first row: a database row by
    position (its names read once), a mapping by name (a missing column is empty)."""
    names = getattr(row, "_fields", None)
    if names is not None and tuple(names) == tuple(columns):
        return _SAME
    if names is not None and set(columns) <= set(names):
        at = [list(names).index(c) for c in columns]
        return lambda r: [r[i] for i in at]
    if names is not None:
        return lambda r: [r._mapping.get(c) for c in columns]
    return lambda r: [r.get(c) for c in columns]


def _columns(batch: Sequence[Any], pick: Callable[[Any], Sequence[Any]]) -> list[Sequence[Any]]:
    """A batch's values column by column (the writers convert a column at a time)."""
    return list(zip(*(batch if pick is _SAME else map(pick, batch)), strict=True))


def _csv_column(values: Sequence[Any]) -> Sequence[Any]:
    """A column's CSV cells. A column of one type is converted by C-level maps, with no Python
    call per cell; a column that mixes types (or holds a text that could run as a formula) is
    converted a cell at a time."""
    types = set(map(type, values))
    if types <= _AS_IS or (types == {str} and not any(map(_FORMULA_START, values))):
        return values
    if len(types) == 1:
        kind = next(iter(types))
        if kind is Decimal:
            return list(map(format, values, repeat("f", len(values))))
        if kind is datetime and None not in set(map(_TZINFO, values)):
            return list(map(datetime.isoformat, values))
    cells = _CELLS.get
    return [v if ((t := type(v)) is str and not v.startswith(_FORMULA)) or t in _AS_IS
            else (cells(t) or _cell)(v) for v in values]  # fmt: skip


def _json_column(values: Sequence[Any]) -> Sequence[str]:
    """A column's JSON texts, by C-level maps when the column is of one type (as :func:`_csv_column`)."""
    types = set(map(type, values))
    if len(types) == 1:
        kind = next(iter(types))
        if kind is str:
            return list(map(encode_basestring, values))
        if kind is int:
            return list(map(int.__repr__, values))
        if kind is Decimal:
            return list(map(encode_basestring, map(format, values, repeat("f", len(values)))))
    texts = _JSON.get
    return [(texts(type(v)) or _json_text)(v) for v in values]


def _csv(batches: Iterable[Sequence[Any]], columns: Sequence[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    pick = None
    for batch in batches:
        if pick is None:
            pick = _picker(batch[0], columns)
        writer.writerows(zip(*map(_csv_column, _columns(batch, pick)), strict=True))
        if buffer.tell() >= CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _jsonl(batches: Iterable[Sequence[Any]], columns: Sequence[str]) -> Iterator[str]:
    parts: list[str] = []
    size, pick = 0, None
    # One object per line, its keys written once: '{"id": %s, "name": %s}' filled with each
    # value's JSON text (what json.dumps(..., ensure_ascii=False) writes, a fifth faster)
    line_of = "{" + ", ".join(encode_basestring(c).replace("%", "%%") + ": %s" for c in columns) + "}\n"
    for batch in batches:
        if pick is None:
            pick = _picker(batch[0], columns)
        text = "".join(map(line_of.__mod__, zip(*map(_json_column, _columns(batch, pick)), strict=True)))
        parts.append(text)
        size += len(text)
        if size >= CHUNK:
            yield "".join(parts)
            parts, size = [], 0
    yield "".join(parts)


def _json(batches: Iterable[Sequence[Any]], columns: Sequence[str]) -> Iterator[str]:
    first = True
    yield "["
    for chunk in _jsonl(batches, columns):
        for line in chunk.splitlines():
            yield ("" if first else ",\n") + line
            first = False
    yield "]\n"


def encode(fmt: str, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[bytes]:
    """``rows`` (mappings, or database rows naming the columns) as ``fmt`` (csv, jsonl or json), in
    UTF-8 chunks."""
    return encode_batches(fmt, batched(rows), columns)


def encode_batches(fmt: str, batches: Iterable[Sequence[Any]], columns: Sequence[str]) -> Iterator[bytes]:
    """:func:`encode` for rows in batches (lists, none empty): the writers convert a batch a column
    at a time (docs/performance.md), and a database's rows are fetched a batch at a time anyway."""
    writer = {"csv": _csv, "jsonl": _jsonl, "json": _json}[fmt]
    for text in writer(batches, columns):
        if text:
            yield text.encode()


def batched(rows: Iterable[Any], size: int = 1000) -> Iterator[list[Any]]:
    """``rows`` in lists of ``size`` (the last one shorter; none empty)."""
    found = iter(rows)
    while batch := list(islice(found, size)):
        yield batch


def gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Compress a stream of chunks into one gzip member, as it flows."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()
