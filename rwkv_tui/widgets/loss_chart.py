"""A loss chart drawn with Unicode braille: raw loss dim, smoothed loss bright, the held-out
(val) loss as a third curve, against the step (an x axis under the plot).

Self-drawn (no plotting dependency) and a pure function of the points, so snapshots of
the dashboard are deterministic. Each terminal cell holds a 2×4 grid of braille dots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

_BRAILLE_BASE = 0x2800
# Dot bit for (column 0..1, row 0..3) inside one braille cell.
_DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
_AXIS_WIDTH = 8

# A series is a list of y values (x = their index) or of (x, y) points.
Series = Sequence[float] | Sequence[tuple[float, float]]


def _points(series: Series) -> list[tuple[float, float]]:
    return [(float(p[0]), float(p[1])) if isinstance(p, tuple) else (float(i), float(p))
            for i, p in enumerate(series)]


def _x_range(all_points: list[list[tuple[float, float]]]) -> tuple[float, float]:
    xs = [x for points in all_points for x, y in points if math.isfinite(y)]
    return (min(xs), max(xs)) if xs else (0.0, 1.0)


def plot_braille(series: list[Series], width: int, height: int) -> tuple[list[list[int]], float, float]:
    """Rasterise several series on one x range into `height` rows of `width` cells.

    Returns per cell the packed glyph and the index+1 of the last series that set a dot there
    (0 = empty), and the y range used. Non-finite values are skipped.
    """
    all_points = [_points(s) for s in series]
    values = [y for points in all_points for _, y in points if math.isfinite(y)]
    owner = [[0] * width for _ in range(height)]
    if not values or width <= 0 or height <= 0:
        return owner, 0.0, 1.0
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    x_low, x_high = _x_range(all_points)
    dots_x, dots_y = width * 2, height * 4
    bits = [[0] * width for _ in range(height)]

    def dot(x: int, y: int, series_index: int) -> None:
        row, col = y // 4, x // 2
        bits[row][col] |= _DOT_BITS[x % 2][y % 4]
        owner[row][col] = series_index

    for series_index, points in enumerate(all_points, start=1):
        previous = None
        for px, value in points:
            if not math.isfinite(value):
                previous = None
                continue
            x = 0 if x_high == x_low else round((px - x_low) * (dots_x - 1) / (x_high - x_low))
            y = round((high - value) * (dots_y - 1) / (high - low))
            if previous is None:
                dot(x, y, series_index)
            else:  # join consecutive points so sparse curves read as lines
                x0, y0 = previous
                steps = max(abs(x - x0), abs(y - y0), 1)
                for k in range(1, steps + 1):
                    dot(round(x0 + (x - x0) * k / steps), round(y0 + (y - y0) * k / steps), series_index)
            previous = (x, y)
    encoded = [[(bits[r][c] and _BRAILLE_BASE + bits[r][c]) for c in range(width)] for r in range(height)]
    # Pack: high bits = glyph, low byte = owner series.
    return [[(encoded[r][c] << 8) | owner[r][c] for c in range(width)] for r in range(height)], low, high


def step_axis(x_low: float, x_high: float, width: int) -> str:
    """The x axis line under the plot: the first, middle and last step, placed where they fall."""
    line = [" "] * width
    labels = [(0, f"{x_low:g}"), (width - 1, f"{x_high:g}")]
    if width >= 24 and x_high - x_low >= 2:
        labels.insert(1, (width // 2, f"{round((x_low + x_high) / 2):g}"))
    for position, label in labels:
        start = min(max(position - len(label) // 2, 0), width - len(label))
        if all(c == " " for c in line[max(start - 1, 0):start + len(label) + 1]):
            line[start:start + len(label)] = label
    return "".join(line)


def render_chart(series: list[Series], styles: list[str], width: int, height: int, x_label: str = "step") -> Text:
    """The chart with a y axis (max, min) and, given 3+ rows, a step axis, as Rich text."""
    plot_width = max(width - _AXIS_WIDTH, 1)
    with_axis = height >= 3
    plot_height = height - 1 if with_axis else height
    cells, low, high = plot_braille(series, plot_width, plot_height)
    text = Text()
    for r, row in enumerate(cells):
        if r == 0:
            label = f"{high:>7.3f} "
        elif r == plot_height - 1:
            label = f"{low:>7.3f} "
        else:
            label = " " * (_AXIS_WIDTH - 1) + "│"
        text.append(label[:_AXIS_WIDTH].ljust(_AXIS_WIDTH), style="dim")
        for packed in row:
            glyph, owner = packed >> 8, packed & 0xFF
            text.append(chr(glyph) if glyph else " ", style=styles[owner - 1] if owner else "")
        if r < plot_height - 1:
            text.append("\n")
    if with_axis:
        x_low, x_high = _x_range([_points(s) for s in series])
        text.append("\n" + f"{x_label:>{_AXIS_WIDTH - 1}} ", style="dim")
        text.append(step_axis(x_low, x_high, plot_width), style="dim")
    return text


# Curve styles, and the legend that names them (the chart's border title).
RAW_STYLE, SMOOTHED_STYLE, VAL_STYLE = "grey50", "bold green", "bold magenta"


def legend(with_val: bool) -> str:
    """Console markup naming each curve in its colour."""
    parts = ["[grey50]raw[/]", "[bold green]smoothed[/]"] + (["[bold magenta]val[/]"] if with_val else [])
    return "loss: " + " · ".join(parts)


class LossChart(Widget):
    """Raw and smoothed training loss, and the val loss when the run has one, against the step."""

    DEFAULT_CSS = """
    LossChart { height: 1fr; min-height: 5; }
    """

    steps: reactive[tuple[int, ...]] = reactive(tuple, layout=False)
    raw: reactive[tuple[float, ...]] = reactive(tuple, layout=False)
    smoothed: reactive[tuple[float, ...]] = reactive(tuple, layout=False)
    val: reactive[tuple[tuple[int, float], ...]] = reactive(tuple, layout=False)
    placeholder: reactive[str] = reactive("waiting for the first step…", layout=False)

    def set_points(self, raw: list[float], smoothed: list[float], steps: list[int] | None = None,
                   val: list[tuple[int, float]] = ()) -> None:
        """Steps default to 1, 2, …; `val` is (step, loss) pairs drawn on the same axes."""
        self.steps = tuple(steps) if steps is not None else tuple(range(1, len(raw) + 1))
        self.raw = tuple(raw)
        self.smoothed = tuple(smoothed)
        self.val = tuple(val)

    def render(self) -> Text:
        if not self.raw and not self.val:
            return Text(self.placeholder, style="dim")
        series: list[Series] = [list(zip(self.steps, self.raw)), list(zip(self.steps, self.smoothed))]
        styles = [RAW_STYLE, SMOOTHED_STYLE]
        if self.val:
            series.append([(float(s), v) for s, v in self.val])
            styles.append(VAL_STYLE)
        return render_chart(series, styles, self.size.width, max(self.size.height, 1))
