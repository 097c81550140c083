"""Render a list of accounts as an aligned table (for people), CSV or JSON (for programs).

Account names, OU names and tags come from AWS and are untrusted text. The table and the CSV
escape control, format and line-separator characters visibly (``\\n``, ``\\x1b``, ``\\u202e``, and a
backslash as ``\\\\``) so that a name can neither break a line nor drive the terminal it is printed
on; the table also shortens very long cells. JSON keeps the exact text (``json`` escapes it).
"""
from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from crawler.aws.timestamps import utc
from crawler.errors import UsageError
from crawler.sources.organizations import Account

FORMATS = ("table", "csv", "json")
TABLE_COLUMNS = ("id", "name", "ou_path", "state", "tags")
FIELDS = ("id", "name", "email", "arn", "state", "ou_path", "ou_path_ids", "joined_at", "tags")
#: The widest a table cell gets (in terminal columns) before it is shortened with an ellipsis.
MAX_CELL_WIDTH = 60
ELLIPSIS = "\u2026"
COLUMN_GAP = "  "
MISSING = "-"
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def format_accounts(accounts: Sequence[Account], fmt: str) -> str:
    """The accounts as ``table``, ``csv`` or ``json`` text (ending with a newline)."""
    renderers: dict[str, Callable[[Sequence[Account]], str]] = {
        "table": format_table, "csv": format_csv, "json": format_json}
    if fmt not in renderers:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return renderers[fmt](accounts)


# -- table -------------------------------------------------------------------------------
def format_table(accounts: Sequence[Account]) -> str:
    """Aligned columns id, name, ou_path, state, tags; untrusted text escaped and shortened."""
    rows = [list(TABLE_COLUMNS)] + [_table_cells(account) for account in accounts]
    widths = [max(display_width(row[column]) for row in rows) for column in range(len(TABLE_COLUMNS))]
    rows.insert(1, ["-" * width for width in widths])
    return "".join(_table_line(row, widths) + "\n" for row in rows)


def _table_cells(account: Account) -> list[str]:
    tags = ", ".join(f"{key}={value}" for key, value in account.tags)
    return [visible(account.id), _cell(account.name), _cell(account.ou_path), _cell(account.state), _cell(tags)]


def _cell(text: str | None) -> str:
    if text is None or text == "":
        return MISSING
    return shorten(visible(text), MAX_CELL_WIDTH)


def _table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [cell + " " * (width - display_width(cell)) for cell, width in zip(cells, widths, strict=True)]
    return COLUMN_GAP.join(padded).rstrip(" ")


def visible(text: str) -> str:
    """``text`` with backslashes, control, format, unassigned and line-separator characters escaped
    the way ``repr`` does (``\\n``, ``\\x07``, ``\\u202e``): one line, nothing a terminal acts on."""
    return "".join(_escape(character) for character in text)


def _escape(character: str) -> str:
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    category = unicodedata.category(character)
    if not (category.startswith("C") or category in ("Zl", "Zp")):
        return character
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide and fullwidth characters 2, combining marks 0."""
    return sum(_character_width(character) for character in text)


def _character_width(character: str) -> int:
    if unicodedata.combining(character):
        return 0
    return 2 if unicodedata.east_asian_width(character) in ("W", "F") else 1


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending with an ellipsis when cut."""
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for character in text:
        used += _character_width(character)
        if used > width - 1:
            break
        kept.append(character)
    return "".join(kept) + ELLIPSIS


# -- csv and json ------------------------------------------------------------------------------
def format_csv(accounts: Sequence[Account]) -> str:
    """RFC 4180 CSV: a header and one line per account; text escaped as in the table (:func:`visible`),
    quoted by the ``csv`` module, tags as a JSON object of escaped keys and values, missing values empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
    writer.writerow(FIELDS)
    for account in accounts:
        record = {name: visible(value) if isinstance(value, str) else value
                  for name, value in account_record(account).items()}
        record["tags"] = json.dumps({visible(key): visible(value) for key, value in account.tags},
                                    ensure_ascii=False, sort_keys=True)
        writer.writerow(["" if record[name] is None else record[name] for name in FIELDS])
    return buffer.getvalue()


def format_json(accounts: Sequence[Account]) -> str:
    """A JSON list of objects with every field; non-ASCII text is \\u-escaped so the output is
    always valid UTF-8, and ``json.loads`` gives back the exact text."""
    return json.dumps([account_record(account) for account in accounts], indent=2) + "\n"


def account_record(account: Account) -> dict[str, Any]:
    """The account as a plain dict: ids as strings, ``joined_at`` ISO 8601 UTC, tags an object."""
    return {"id": account.id, "name": account.name, "email": account.email, "arn": account.arn,
            "state": account.state, "ou_path": account.ou_path, "ou_path_ids": account.ou_path_ids,
            "joined_at": iso_utc(account.joined_at), "tags": dict(account.tags)}


def iso_utc(value: datetime | None) -> str | None:
    """``2024-05-26T10:33:34Z`` (a naive datetime is taken as UTC)."""
    moment = utc(value)
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None
