"""Inline SVG charts drawn in Python: horizontal bars, a histogram and a trend line.

Every chart is one ``<svg>`` element with a fixed size and a ``viewBox``, an accessible title and
no reference to anything outside the page. Labels may be untrusted text (account names): they
pass through :func:`crawler.report.markup.text` like every other string of the report.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crawler.report.markup import text

WIDTH = 760
BAR_HEIGHT = 18
BAR_GAP = 6
LABEL_WIDTH = 260
VALUE_WIDTH = 70
LABEL_CHARACTERS = 38
COLUMN_LABEL_CHARACTERS = 18
#: Room left and right of the trend's first and last point for their labels.
TREND_PADDING = 40
PLOT_HEIGHT = 180
AXIS_MARGIN = 40
TOP_MARGIN = 16


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its value (None: no data, drawn as a note instead of a bar) and a tooltip."""

    label: str
    value: float | None
    tooltip: str = ""


def share(value: float) -> str:
    """A share as a percentage with one decimal (``93.2%``)."""
    return f"{value:.1%}"


def count(value: float) -> str:
    """A count with thousands separators."""
    return f"{int(value):,}"


def horizontal_bars(bars: Sequence[Bar], title: str, maximum: float = 1.0,
                    value_text: Callable[[float], str] = share) -> str:
    """One horizontal bar per item (labels on the left, values on the right), scaled to ``maximum``."""
    if not bars:
        return _empty(title)
    height = TOP_MARGIN + len(bars) * (BAR_HEIGHT + BAR_GAP)
    plot = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    rows = [_horizontal_bar(bar, index, plot, maximum, value_text) for index, bar in enumerate(bars)]
    return _svg(title, height, "".join(rows))


def _horizontal_bar(bar: Bar, index: int, plot: int, maximum: float, value_text: Callable[[float], str]) -> str:
    top = TOP_MARGIN + index * (BAR_HEIGHT + BAR_GAP)
    middle = top + BAR_HEIGHT // 2 + 4
    label = (f'<text class="label" x="{LABEL_WIDTH - 8}" y="{middle}" text-anchor="end">'
             f"<title>{text(bar.tooltip or bar.label)}</title>{text(_shortened(bar.label))}</text>")
    if bar.value is None:
        return label + f'<text class="note" x="{LABEL_WIDTH}" y="{middle}">no data</text>'
    length = _scaled(bar.value, maximum, plot)
    shown = value_text(bar.value)
    return (label + _rect("bar", (LABEL_WIDTH, top, length, BAR_HEIGHT), bar, shown)
            + f'<text class="value" x="{LABEL_WIDTH + length + 6:.1f}" y="{middle}">{text(shown)}</text>')


def _rect(kind: str, box: tuple[float, float, float, float], bar: Bar, shown: str) -> str:
    """A bar's rectangle (x, y, width, height) with its exact value in ``data-value`` and a tooltip."""
    x, y, width, height = box
    return (f'<rect class="{kind}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
            f'{_data(bar)}><title>{text(bar.tooltip or bar.label)}: {text(shown)}</title></rect>')


def columns(bars: Sequence[Bar], title: str, value_text: Callable[[float], str] = count,
            highlight_last: bool = False) -> str:
    """Vertical columns side by side (a histogram), scaled to the largest value; labels below."""
    if not bars:
        return _empty(title)
    maximum = max((bar.value or 0 for bar in bars), default=0) or 1
    step = (WIDTH - 2 * AXIS_MARGIN) / len(bars)
    parts = [_axis(WIDTH)]
    for index, bar in enumerate(bars):
        special = highlight_last and index == len(bars) - 1
        parts.append(_column(bar, AXIS_MARGIN + index * step, step, maximum, value_text, special))
    return _svg(title, TOP_MARGIN + PLOT_HEIGHT + AXIS_MARGIN, "".join(parts))


def _column(bar: Bar, left: float, step: float, maximum: float, value_text: Callable[[float], str],
            special: bool) -> str:
    value = bar.value or 0
    height = _scaled(value, maximum, PLOT_HEIGHT)
    top = TOP_MARGIN + PLOT_HEIGHT - height
    centre = left + step / 2
    kind = "bar never" if special else "bar"
    return (_rect(kind, (left + step * 0.1, top, step * 0.8, height), bar, value_text(value))
            + f'<text class="value" x="{centre:.1f}" y="{top - 4:.1f}" text-anchor="middle">{text(value_text(value))}'
            f"</text>{_column_label(bar.label, centre)}")


def _column_label(label: str, centre: float) -> str:
    """A label under a column, on two lines when long (split at the space nearest its middle)."""
    lines = [label]
    if len(label) > COLUMN_LABEL_CHARACTERS and " " in label:
        middle = min((index for index, character in enumerate(label) if character == " "),
                     key=lambda index: abs(index - len(label) / 2))
        lines = [label[:middle], label[middle + 1:]]
    spans = "".join(f'<tspan x="{centre:.1f}" dy="{0 if index == 0 else 14}">'
                    f"{text(_shortened(line, COLUMN_LABEL_CHARACTERS))}</tspan>" for index, line in enumerate(lines))
    return f'<text class="label" y="{TOP_MARGIN + PLOT_HEIGHT + 16}" text-anchor="middle">{spans}</text>'


def trend_line(points: Sequence[Bar], title: str, value_text: Callable[[float], str] = share) -> str:
    """A line through one point per snapshot (values 0..1, oldest first), labelled with the snapshot date."""
    known = [point for point in points if point.value is not None]
    if not known:
        return _empty(title)
    step = (WIDTH - 2 * AXIS_MARGIN - 2 * TREND_PADDING) / max(len(points) - 1, 1)
    left, bottom = AXIS_MARGIN + TREND_PADDING, TOP_MARGIN + PLOT_HEIGHT
    coordinates = [(left + index * step, bottom - _scaled(point.value or 0, 1.0, PLOT_HEIGHT))
                   for index, point in enumerate(points)]
    drawn = [(x, y) for (x, y), point in zip(coordinates, points, strict=True) if point.value is not None]
    parts = [_axis(WIDTH), _gridline(0.0), _gridline(0.5), _gridline(1.0)]
    parts.append('<polyline class="line" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in drawn) + '"/>')
    for (x, y), point in zip(coordinates, points, strict=True):
        parts.append(_point(x, y, point, value_text))
    return _svg(title, TOP_MARGIN + PLOT_HEIGHT + AXIS_MARGIN, "".join(parts))


def _point(x: float, y: float, point: Bar, value_text: Callable[[float], str]) -> str:
    label = (f'<text class="label" x="{x:.1f}" y="{TOP_MARGIN + PLOT_HEIGHT + 16}" text-anchor="middle">'
             f"{text(point.label)}</text>")
    if point.value is None:
        return label
    shown = text(value_text(point.value))
    return (label + f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" {_data(point)}><title>'
            f'{text(point.label)}: {shown}</title></circle>'
            f'<text class="value" x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle">{shown}</text>')


def _data(bar: Bar) -> str:
    """The bar's label and exact value as attributes, for readers and tests of the page."""
    return f'data-label="{text(bar.label)}" data-value="{text(repr(bar.value))}"'


def _gridline(value: float) -> str:
    y = TOP_MARGIN + PLOT_HEIGHT - _scaled(value, 1.0, PLOT_HEIGHT)
    return (f'<line class="grid" x1="{AXIS_MARGIN}" y1="{y:.1f}" x2="{WIDTH - AXIS_MARGIN}" y2="{y:.1f}"/>'
            f'<text class="note" x="{AXIS_MARGIN - 6}" y="{y + 4:.1f}" text-anchor="end">{share(value)}</text>')


def _axis(width: int) -> str:
    y = TOP_MARGIN + PLOT_HEIGHT
    return f'<line class="axis" x1="{AXIS_MARGIN}" y1="{y}" x2="{width - AXIS_MARGIN}" y2="{y}"/>'


def _scaled(value: float, maximum: float, length: float) -> float:
    if maximum <= 0:
        return 0.0
    return max(0.0, min(value / maximum, 1.0)) * length


def _shortened(label: str, characters: int = LABEL_CHARACTERS) -> str:
    return label if len(label) <= characters else label[:characters - 1] + "\u2026"


def _empty(title: str) -> str:
    return _svg(title, 40, f'<text class="note" x="{AXIS_MARGIN}" y="24">no data for this chart</text>')


def _svg(title: str, height: int, body: str) -> str:
    return (f'<svg class="chart" role="img" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">'
            f"<title>{text(title)}</title>{body}</svg>")
