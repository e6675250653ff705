"""Small server-side SVG charts for the admin dashboard: no JavaScript, no CDN, no chart library.

Every chart is an `<svg class="chart ...">` with a `<title>` for screen readers; bars are
`<rect class="bar">` and line points `<circle class="point">`, each with a `<title>` tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from django.utils.safestring import SafeString, mark_safe

PALETTE = (
    "#0d6efd",
    "#dc3545",
    "#198754",
    "#fd7e14",
    "#6f42c1",
    "#20c997",
    "#d63384",
    "#6c757d",
    "#ffc107",
    "#0dcaf0",
    "#795548",
    "#343a40",
)
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 12, 28, 44
MAX_X_LABELS = 12


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    colour: str = ""


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ceiling(value: float) -> float:
    """Round an axis maximum up to 1, 2, 2.5 or 5 × 10^k, so the gridlines read well."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value != int(value) else str(int(value))


def _frame(kind: str, title: str, width: int, height: int, body: list[str], points: int) -> SafeString:
    return mark_safe(
        f'<svg class="chart {kind}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label={quoteattr(title)} data-points="{points}">'
        f"<title>{escape(title)}</title>"
        f'<text x="{MARGIN_LEFT}" y="16" class="chart-title" font-size="13" font-weight="bold">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def _axes(top: float, unit: str, width: int, height: int) -> list[str]:
    """Horizontal gridlines with labels at 0, 1/4, ... of the axis maximum."""
    parts = []
    plot_height = height - MARGIN_TOP - MARGIN_BOTTOM
    for quarter in range(5):
        value = top * quarter / 4
        y = MARGIN_TOP + plot_height * (1 - quarter / 4)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dee2e6"/>'
            f'<text x="{MARGIN_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#555">'
            f"{escape(number(value))}{escape(unit)}</text>"
        )
    return parts


def _x_labels(labels: Sequence[str], centres: Sequence[float], height: int) -> list[str]:
    step = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    return [
        f'<text x="{x:.1f}" y="{height - MARGIN_BOTTOM + 14}" text-anchor="middle" font-size="10" fill="#555">'
        f"{escape(label)}</text>"
        for index, (label, x) in enumerate(zip(labels, centres, strict=True))
        if index % step == 0
    ]


def _legend(series: Sequence[Series], height: int) -> list[str]:
    if len(series) < 2:
        return []
    parts, x = [], MARGIN_LEFT
    for index, item in enumerate(series):
        fill = item.colour or colour(index)
        parts.append(
            f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{fill}"/>'
            f'<text x="{x + 14}" y="{height - 5}" font-size="10">{escape(item.name)}</text>'
        )
        x += 24 + 6 * len(item.name)
    return parts


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    stacked: bool = False,
    width: int = 640,
    height: int = 240,
) -> SafeString:
    """Vertical bars: one group per label, one bar per series (or one stacked bar per label)."""
    plot_width = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = height - MARGIN_TOP - MARGIN_BOTTOM
    if stacked:
        peak = max((sum(s.values[i] or 0 for s in series) for i in range(len(labels))), default=0)
    else:
        peak = max((v or 0 for s in series for v in s.values), default=0)
    top = nice_ceiling(peak)
    group_width = plot_width / max(len(labels), 1)
    bars_per_group = 1 if stacked else max(len(series), 1)
    bar_width = max(group_width * 0.8 / bars_per_group, 1.0)
    body = _axes(top, unit, width, height)
    count = 0
    for index, label in enumerate(labels):
        group_left = MARGIN_LEFT + index * group_width + group_width * 0.1
        base = 0.0
        for position, item in enumerate(series):
            value = item.values[index] if index < len(item.values) else None
            if value is None:
                continue
            bar_height = plot_height * value / top
            x = group_left + (0 if stacked else position * bar_width)
            y = MARGIN_TOP + plot_height - bar_height - (plot_height * base / top)
            tip = f"{label} · {item.name}: {number(value)}{unit}" if item.name else f"{label}: {number(value)}{unit}"
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" height="{bar_height:.1f}" '
                f'fill="{item.colour or colour(position)}"><title>{escape(tip)}</title></rect>'
            )
            count += 1
            if stacked:
                base += value
    centres = [MARGIN_LEFT + (i + 0.5) * group_width for i in range(len(labels))]
    body += _x_labels(labels, centres, height) + _legend(series, height)
    return _frame("bar-chart", title, width, height, body, count)


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 240,
) -> SafeString:
    """One polyline per series over the labels; gaps (None) break nothing, they are skipped."""
    plot_width = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = height - MARGIN_TOP - MARGIN_BOTTOM
    top = nice_ceiling(max((v or 0 for s in series for v in s.values), default=0))
    step = plot_width / max(len(labels) - 1, 1)
    body = _axes(top, unit, width, height)
    count = 0
    for position, item in enumerate(series):
        fill = item.colour or colour(position)
        points = [
            (MARGIN_LEFT + index * step, MARGIN_TOP + plot_height * (1 - value / top), labels[index], value)
            for index, value in enumerate(item.values)
            if value is not None and index < len(labels)
        ]
        if not points:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
        body.append(f'<polyline class="line" fill="none" stroke="{fill}" stroke-width="2" points="{path}"/>')
        for x, y, label, value in points:
            tip = f"{label} · {item.name}: {number(value)}{unit}" if item.name else f"{label}: {number(value)}{unit}"
            body.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{fill}">'
                f"<title>{escape(tip)}</title></circle>"
            )
            count += 1
    centres = [MARGIN_LEFT + index * step for index in range(len(labels))]
    body += _x_labels(labels, centres, height) + _legend(series, height)
    return _frame("line-chart", title, width, height, body, count)


def hbar_chart(
    labels: Sequence[str], values: Sequence[float], *, title: str, unit: str = "", width: int = 640
) -> SafeString:
    """Horizontal bars, for long labels such as node class names."""
    row, label_width = 22, 190
    height = MARGIN_TOP + row * max(len(labels), 1) + 8
    top = nice_ceiling(max(values, default=0))
    plot_width = width - label_width - MARGIN_RIGHT - 60
    body = []
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = MARGIN_TOP + index * row
        bar = plot_width * value / top
        body.append(
            f'<text x="{label_width - 6}" y="{y + 14}" text-anchor="end" font-size="11">{escape(label)}</text>'
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{bar:.1f}" height="{row - 6}" fill="{colour(0)}">'
            f"<title>{escape(label)}: {escape(number(value))}{escape(unit)}</title></rect>"
            f'<text x="{label_width + bar + 4:.1f}" y="{y + 14}" font-size="10" fill="#555">'
            f"{escape(number(value))}{escape(unit)}</text>"
        )
    return _frame("hbar-chart", title, width, height, body, len(labels))


def sparkline(
    values: Sequence[float | None],
    *,
    title: str,
    width: int = 240,
    height: int = 40,
    top: float | None = None,
    stroke: str = PALETTE[0],
) -> SafeString:
    """A tiny line without axes: a trend at a glance (queue length, VRAM in use)."""
    known = [v for v in values if v is not None]
    top = top or nice_ceiling(max(known, default=0))
    step = width / max(len(values) - 1, 1)
    points = [
        (index * step, height - 2 - (height - 4) * value / top)
        for index, value in enumerate(values)
        if value is not None
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    body = (
        f'<polyline class="line" fill="none" stroke="{stroke}" stroke-width="1.5" points="{path}"/>' if points else ""
    )
    # A value with no neighbour (all probes in one slot, or a gap on both sides) draws no line:
    # mark it with a dot, or a chart with data looks empty.
    for index, value in enumerate(values):
        alone = all(not 0 <= i < len(values) or values[i] is None for i in (index - 1, index + 1))
        if value is not None and alone:
            x, y = index * step, height - 2 - (height - 4) * value / top
            body += f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{stroke}"/>'

    return mark_safe(
        f'<svg class="chart sparkline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label={quoteattr(title)} data-points="{len(points)}">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def state_strip(
    states: Sequence[bool | None], *, title: str, labels: Sequence[str] = (), width: int = 240, height: int = 14
) -> SafeString:
    """A timeline of up (green), down (red) and unknown (grey) slots, oldest on the left."""
    slot = width / max(len(states), 1)
    fills = {True: "#198754", False: "#dc3545", None: "#dee2e6"}
    body = []
    for index, state in enumerate(states):
        tip = labels[index] if index < len(labels) else ""
        word = {True: "reachable", False: "unreachable", None: "no probe"}[state]
        body.append(
            f'<rect class="slot" x="{index * slot:.1f}" y="0" width="{slot + 0.2:.1f}" height="{height}" '
            f'fill="{fills[state]}"><title>{escape(f"{tip} {word}".strip())}</title></rect>'
        )
    return mark_safe(
        f'<svg class="chart state-strip" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label={quoteattr(title)} data-points="{len(states)}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )
