"""The export writers convert a column at a time when it holds one type, and a cell at a time when
it mixes types: both ways must write every cell as the rules say, whatever batch a row falls in."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from bgjobs.exports import encode

COLUMNS = ("id", "name", "amount", "at")
AWARE = datetime(2025, 6, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))
NAIVE = datetime(2025, 6, 1, 9, 30)  # noqa: DTZ001 (naive on purpose: written as UTC)


def rows() -> list[dict[str, Any]]:
    """2,500 rows, so three batches of the writers' 1,000: one type per column in the first, a
    formula, a None and naive datetimes in the second, types mixed within columns in the third."""
    out: list[dict[str, Any]] = []
    for i in range(2_500):
        row: dict[str, Any] = {"id": i, "name": f"name {i}", "amount": Decimal(i).scaleb(-2), "at": AWARE}
        if 1_000 <= i < 2_000:
            row["name"] = "=HYPERLINK(1)" if i == 1_500 else ("-12.50" if i == 1_501 else row["name"])
            row["amount"] = None if i % 3 == 0 else Decimal("1E-9")
            row["at"] = NAIVE
        elif i >= 2_000:
            row["id"] = [str(i), True, None, 1.5][i % 4]
            row["name"] = [None, "@x", 7, "plain"][i % 4]
            row["amount"] = [Decimal("0.10"), 3, None, "+1"][i % 4]
            row["at"] = [AWARE, NAIVE, None, AWARE.date()][i % 4]
        out.append(row)
    return out


def csv_cell(value: Any) -> str:
    """The rules, a cell at a time: None empty, booleans as true/false, decimals positional,
    datetimes ISO 8601 with their offset (naive ones are UTC), text that could run as a formula
    behind a quote (numbers never)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    if isinstance(value, str) and text.startswith(("=", "+", "-", "@")):
        try:
            Decimal(text)
        except ArithmeticError:
            return "'" + text
    return text


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value.isoformat() if hasattr(value, "isoformat") else value


def test_every_csv_cell_follows_the_rules_in_every_batch() -> None:
    source = rows()
    text = b"".join(encode("csv", source, COLUMNS)).decode()
    read = list(csv.reader(io.StringIO(text, newline="")))
    assert read[0] == list(COLUMNS)
    assert read[1:] == [[csv_cell(r[c]) for c in COLUMNS] for r in source]
    assert read[1501][1] == "'=HYPERLINK(1)" and read[1502][1] == "-12.50"  # a number is never quoted


def test_every_json_line_follows_the_rules_in_every_batch() -> None:
    source = rows()
    lines = b"".join(encode("jsonl", source, COLUMNS)).decode().splitlines()
    assert [json.loads(line) for line in lines] == [{c: json_value(r[c]) for c in COLUMNS} for r in source]
    assert json.loads(lines[1001])["amount"] == "0.000000001"  # positional, not 1E-9
