"""HTML building blocks of the report: escaped text, formatted cells and sortable tables.

Names, tags and ARNs come from AWS and are untrusted text. Every string that reaches the page
goes through :func:`text`: HTML-escaped (``& < > " '``), and control, format and line-separator
characters shown as escapes (``\\u202e``), so a name can neither become markup nor reorder or
hide what is around it. Numbers and dates are formatted here too, once, so that the page and
the sort keys agree.
"""
from __future__ import annotations

import html
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from crawler.listing import visible

MISSING = "\u2014"
#: Kinds of cells: free text (names, messages), short keys (ids, types, outcomes), numbers, shares, dates, ARNs.
TEXT, KEY, COUNT, SHARE, DATE, ARN = "text", "key", "count", "share", "date", "arn"
NUMERIC = (COUNT, SHARE)


@dataclass(frozen=True)
class Column:
    """A table column: its header, the DataFrame column it shows and how (one of the kinds above)."""

    label: str
    field: str
    kind: str = TEXT


def text(value: object) -> str:
    """``value`` as HTML text: invisible characters shown as escapes, then HTML-escaped (quotes included)."""
    return html.escape("".join(_shown(character) for character in str(value)), quote=True)


def _shown(character: str) -> str:
    category = unicodedata.category(character)
    if category.startswith("C") or category in ("Zl", "Zp"):
        return visible(character)
    return character


def is_missing(value: Any) -> bool:
    """True for None, NaN, NaT and pandas' NA."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def display(value: Any, kind: str) -> str:
    """The cell text of ``value`` (not escaped yet): ``1,234``, ``93.2%``, ``2026-11-30`` or the text."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if kind == COUNT:
        return f"{int(value):,}" if float(value).is_integer() else f"{float(value):,.1f}"
    if kind == SHARE:
        return f"{float(value):.1%}"
    if kind == DATE and isinstance(value, date | datetime):
        return value.strftime("%Y-%m-%d")
    return str(value)


def sort_key(value: Any, kind: str) -> str | None:
    """What the table's script sorts by: the exact number, an ISO timestamp, or None (the shown text)."""
    if is_missing(value):
        return ""
    if kind in NUMERIC:
        return repr(int(value)) if float(value).is_integer() else repr(float(value))
    if kind == DATE and isinstance(value, date | datetime):
        return value.isoformat()
    return None


def cell(value: Any, kind: str) -> str:
    """One ``<td>``: the shown text and, for numbers and dates, the exact value in ``data-sort``."""
    key = sort_key(value, kind)
    attributes = f' data-sort="{text(key)}"' if key is not None else ""
    attributes += f' class="{"number" if kind in NUMERIC else kind}"'
    shown = text(display(value, kind))
    if kind == ARN:  # let a long ARN wrap after its separators
        shown = shown.replace("/", "/<wbr>").replace(":", ":<wbr>")
    return f"<td{attributes}>{shown}</td>"


def sortable_table(table_id: str, columns: Sequence[Column], frame: pd.DataFrame, limit: int | None = None) -> str:
    """A table whose headers sort it when clicked; at most ``limit`` rows, with a note when cut."""
    shown = frame if limit is None else frame.head(limit)
    header = "".join(f'<th scope="col" data-type="{"number" if column.kind in NUMERIC else "text"}">'
                     f'<button type="button">{text(column.label)}</button></th>' for column in columns)
    values = [shown[column.field].tolist() for column in columns]
    rows = ["<tr>" + "".join(cell(value, column.kind) for value, column in zip(row, columns, strict=True)) + "</tr>"
            for row in zip(*values, strict=True)]
    body = "".join(rows) or f'<tr><td colspan="{len(columns)}">none</td></tr>'
    table = (f'<div class="scroll"><table class="sortable" id="{text(table_id)}"><thead><tr>{header}</tr></thead>'
             f"<tbody>{body}</tbody></table></div>")
    if len(shown) < len(frame):
        table += (f'<p class="note">The first {len(shown):,} of {len(frame):,} rows; '
                  "<code>--format xlsx</code> or <code>--format csv</code> lists every row.</p>")
    return table


def definition_list(list_id: str, items: Sequence[tuple[str, Any, str]]) -> str:
    """Label/value pairs (``<dl>``), each value with its exact number in ``data-value``."""
    parts = []
    for label, value, kind in items:
        key = sort_key(value, kind)
        exact = f' data-value="{text(key)}"' if key is not None else ""
        parts.append(f"<div><dt>{text(label)}</dt><dd{exact}>{text(display(value, kind))}</dd></div>")
    return f'<dl class="summary" id="{text(list_id)}">{"".join(parts)}</dl>'
