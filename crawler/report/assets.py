"""The report page's inline style sheet and script: constants, so the page's Content-Security-Policy can
name them by hash and nothing else may run or style the page."""
from __future__ import annotations

import base64
import hashlib

STYLE = """
:root { --ink: #1d2733; --muted: #5b6877; --line: #d5dbe3; --unused: #c2452d; --never: #7a2a1b;
        --used: #2e7d5b; --band: #f4f6f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color: var(--ink); }
header, main { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 24px; }
h2 { margin: 32px 0 8px; font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { margin: 20px 0 6px; font-size: 15px; }
p.lead, p.note, .meta { color: var(--muted); }
nav a { margin-right: 14px; color: var(--ink); }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
dl.summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px; margin: 0; }
dl.summary div { background: var(--band); border-radius: 6px; padding: 10px 12px; }
dl.summary dt { color: var(--muted); font-size: 12.5px; }
dl.summary dd { margin: 2px 0 0; font-size: 20px; font-weight: 600; }
.headline { font-size: 16px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 4px; }
.scroll { overflow-x: auto; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.text { overflow-wrap: anywhere; min-width: 9em; }
td.arn { overflow-wrap: anywhere; min-width: 18em; }
td.key, td.date { white-space: nowrap; }
td.number, th[data-type="number"] { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th button { all: unset; cursor: pointer; font-weight: 600; }
th button:focus-visible { outline: 2px solid var(--ink); }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: var(--band); }
svg.chart { max-width: 100%; height: auto; display: block; margin: 6px 0 14px; }
svg .bar { fill: var(--unused); }
svg .bar.never { fill: var(--never); }
svg .line { fill: none; stroke: var(--unused); stroke-width: 2; }
svg .point { fill: var(--unused); }
svg .axis, svg .grid { stroke: var(--line); }
svg text { font-size: 12px; fill: var(--ink); }
svg text.note { fill: var(--muted); }
ul.limits li { margin-bottom: 6px; }
footer { max-width: 1180px; margin: 32px auto; padding: 0 24px; color: var(--muted); font-size: 12.5px; }
@media print { nav { display: none; } th button::after { content: none; } }
"""

SCRIPT = """
(function () {
  "use strict";
  function sortKey(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    if (!numeric) { return raw; }
    return raw === "" ? NaN : parseFloat(raw);
  }
  function compare(a, b, numeric, ascending) {
    if (numeric && (isNaN(a) || isNaN(b))) { return isNaN(a) - isNaN(b); }
    var order = numeric ? a - b : a.localeCompare(b, undefined, {numeric: true, sensitivity: "base"});
    return ascending ? order : -order;
  }
  function sortBy(header) {
    var row = header.parentNode, table = row.closest("table"), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(row.children, header);
    var numeric = header.getAttribute("data-type") === "number";
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows).filter(function (r) { return r.cells.length > index; });
    rows.sort(function (x, y) {
      return compare(sortKey(x.cells[index], numeric), sortKey(y.cells[index], numeric), numeric, ascending);
    });
    Array.prototype.forEach.call(row.children, function (h) { h.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable th").forEach(function (header) {
    header.addEventListener("click", function () { sortBy(header); });
  });
})();
"""


def csp_hash(source: str) -> str:
    """The Content-Security-Policy source expression allowing exactly this inline style or script."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy() -> str:
    """Nothing may load from anywhere; only the page's own style sheet and script may apply and run."""
    return (f"default-src 'none'; style-src {csp_hash(STYLE)}; script-src {csp_hash(SCRIPT)}; "
            "img-src 'none'; base-uri 'none'; form-action 'none'")
