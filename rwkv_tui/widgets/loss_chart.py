"""A loss curve drawn with Unicode braille: raw loss dim, smoothed loss bright.

Self-drawn (no plotting dependency) and a pure function of the points, so snapshots of
the dashboard are deterministic. Each terminal cell holds a 2×4 grid of braille dots.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

_BRAILLE_BASE = 0x2800
# Dot bit for (column 0..1, row 0..3) inside one braille cell.
_DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
_AXIS_WIDTH = 8


def plot_braille(series: list[list[float]], width: int, height: int) -> tuple[list[list[int]], float, float]:
    """Rasterise several series (same x range) into `height` rows of `width` cells.

    Returns per-cell the index+1 of the last series that set a dot there (0 = empty) and
    the y range used. Non-finite values are skipped.
    """
    values = [v for s in series for v in s if math.isfinite(v)]
    owner = [[0] * width for _ in range(height)]
    if not values or width <= 0 or height <= 0:
        return owner, 0.0, 1.0
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    dots_x, dots_y = width * 2, height * 4
    bits = [[0] * width for _ in range(height)]
    def dot(x: int, y: int, series_index: int) -> None:
        row, col = y // 4, x // 2
        bits[row][col] |= _DOT_BITS[x % 2][y % 4]
        owner[row][col] = series_index

    for series_index, points in enumerate(series, start=1):
        n = len(points)
        previous = None
        for i, value in enumerate(points):
            if not math.isfinite(value):
                previous = None
                continue
            x = 0 if n == 1 else round(i * (dots_x - 1) / (n - 1))
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


def render_chart(series: list[list[float]], styles: list[str], width: int, height: int) -> Text:
    """The chart with a y axis (max, min) as Rich text."""
    plot_width = max(width - _AXIS_WIDTH, 1)
    cells, low, high = plot_braille(series, plot_width, height)
    text = Text()
    for r, row in enumerate(cells):
        if r == 0:
            label = f"{high:>7.3f} "
        elif r == height - 1:
            label = f"{low:>7.3f} "
        else:
            label = " " * (_AXIS_WIDTH - 1) + "│"
        text.append(label[:_AXIS_WIDTH].ljust(_AXIS_WIDTH), style="dim")
        for packed in row:
            glyph, owner = packed >> 8, packed & 0xFF
            text.append(chr(glyph) if glyph else " ", style=styles[owner - 1] if owner else "")
        if r < height - 1:
            text.append("\n")
    return text


class LossChart(Widget):
    """Raw and smoothed loss against the step."""

    DEFAULT_CSS = """
    LossChart { height: 1fr; min-height: 5; }
    """

    raw: reactive[tuple[float, ...]] = reactive(tuple, layout=False)
    smoothed: reactive[tuple[float, ...]] = reactive(tuple, layout=False)

    def set_points(self, raw: list[float], smoothed: list[float]) -> None:
        self.raw = tuple(raw)
        self.smoothed = tuple(smoothed)

    def render(self) -> Text:
        if not self.raw:
            return Text("waiting for the first step…", style="dim")
        return render_chart([list(self.raw), list(self.smoothed)], ["grey50", "bold green"],
                            self.size.width, max(self.size.height, 1))
