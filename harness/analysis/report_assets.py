"""Inline SVG charts for ``retain report``: heatmap, lines, grouped bars, scatter with Pareto.

Why hand-written SVG: the report must open from ``file://`` with no network and no script
(its Content-Security-Policy forbids both), and a plotting library would either fetch JS or add
a heavy dependency. Each function returns one ``<svg>`` string. Every piece of text passes
through ``esc``; hover tooltips are SVG ``<title>`` elements, which need no JavaScript.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

# Okabe–Ito (colour-blind safe), then Tableau extras for long strategy lists.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31",
           "#000000", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD"]
# viridis anchors, dark (worst) to bright (best)
VIRIDIS = ["#440154", "#414487", "#2a788e", "#22a884", "#7ad151", "#fde725"]
FONT = 'font-family="system-ui, sans-serif" font-size="12"'
MARGIN = {"left": 64, "right": 16, "top": 34, "bottom": 48}
LEGEND = 230  # px to the right of the plot for the legend


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def plural(n: int, noun: str) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.2g}"
    return f"{x:.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = [math.floor(lo / step) * step]
    while ticks[-1] < hi - step * 1e-9:  # the last tick is at or above the highest value
        ticks.append(ticks[-1] + step)
    return [round(t, 12) for t in ticks]


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade covering [lo, hi] (only decades when the range is wide)."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = (1,) if last - first > 3 else (1, 2, 5)
    ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in steps]
    inside = [t for t in ticks if lo <= t <= hi]
    below = [t for t in ticks if t < lo][-1:]
    above = [t for t in ticks if t > hi][:1]
    return below + inside + above


class Frame:
    """A plot area with linear x and y scales and its axes drawn as SVG. ``y_min``: the
    lowest value the quantity can take (0 for a score or a cost), below which the axis never
    goes, whatever an error bar says."""

    def __init__(self, width: int, height: int, xs: Sequence[float], ys: Sequence[float],
                 y_zero: bool = False, log_y: bool = False, y_min: float | None = None,
                 y_max: float | None = None):
        self.w, self.h = width, height
        finite_y = [y for y in ys if y is not None and math.isfinite(y)] or [0.0, 1.0]
        if y_min is not None:
            finite_y = [max(y, y_min) for y in finite_y]
        if y_max is not None:  # a share (accuracy): no tick above 1 for an error bar's sake
            finite_y = [min(y, y_max) for y in finite_y]
        lo, hi = min(finite_y), max(finite_y)
        positive = [y for y in finite_y if y > 0]
        # log only pays off for ratio metrics (perplexity) spanning more than a decade
        self.log_y = bool(log_y and positive and max(positive) / min(positive) > 10)
        if self.log_y:
            self.yticks = log_ticks(min(positive), max(positive))
            self.y0, self.y1 = math.log10(self.yticks[0]), math.log10(self.yticks[-1])
        else:
            if y_zero:
                lo, hi = min(lo, 0.0), max(hi, 0.0)
            self.yticks = nice_ticks(lo, hi)
            self.y0, self.y1 = self.yticks[0], self.yticks[-1]
        finite_x = [x for x in xs if x is not None and math.isfinite(x)] or [0.0, 1.0]
        self.x0, self.x1 = min(finite_x), max(finite_x)
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1

    def px(self, x: float) -> float:
        span = self.w - MARGIN["left"] - MARGIN["right"]
        return MARGIN["left"] + (x - self.x0) / (self.x1 - self.x0) * span

    def py(self, y: float) -> float:
        span = self.h - MARGIN["top"] - MARGIN["bottom"]
        if self.log_y:  # values <= 0 (an error bar's low end) sit on the bottom axis
            y = math.log10(y) if y > 0 else self.y0
        return self.h - MARGIN["bottom"] - (y - self.y0) / (self.y1 - self.y0) * span

    def axes(self, title: str, xlabel: str, ylabel: str, xticks: list[tuple[float, str]]) -> str:
        left, bottom = MARGIN["left"], self.h - MARGIN["bottom"]
        parts = [title_text(title, self.w + LEGEND)]
        for t in self.yticks:
            y = self.py(t)
            parts.append(f'<line x1="{left}" x2="{self.w - MARGIN["right"]}" y1="{y:.1f}" '
                         f'y2="{y:.1f}" class="grid"/>')
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                         f'{esc(fmt(t))}</text>')
        for x, label in xticks:
            parts.append(f'<text x="{self.px(x):.1f}" y="{bottom + 16}" text-anchor="middle">'
                         f'{esc(label)}</text>')
        parts.append(f'<line x1="{left}" x2="{self.w - MARGIN["right"]}" y1="{bottom}" '
                     f'y2="{bottom}" class="axis"/>')
        parts.append(f'<text x="{(left + self.w - MARGIN["right"]) / 2:.0f}" y="{self.h - 8}" '
                     f'text-anchor="middle">{esc(xlabel)}</text>')
        parts.append(f'<text transform="translate(14 {(MARGIN["top"] + bottom) / 2:.0f}) '
                     f'rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
        return "".join(parts)


def title_text(title: str, width: float) -> str:
    """Chart title, shortened to fit (the full text stays in a hover tooltip)."""
    fits = max(int(width / 7.2) - 2, 10)
    return (f'<text x="8" y="17" class="title">{esc(_short(title, fits))}'
            f'<title>{esc(title)}</title></text>')


def svg(width: int, height: int, body: str, label: str, cls: str = "chart") -> str:
    return (f'<svg class="{cls}" role="img" aria-label="{esc(label)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" {FONT}>'
            f'<title>{esc(label)}</title>{body}</svg>')


def legend(items: list[tuple[str, str]], x: float, y: float, dashed: Sequence[bool] = ()) -> str:
    parts = []
    for i, (label, col) in enumerate(items):
        yy = y + 16 * i
        dash = ' stroke-dasharray="4 3"' if i < len(dashed) and dashed[i] else ""
        parts.append(f'<line x1="{x}" x2="{x + 18}" y1="{yy}" y2="{yy}" stroke="{col}" '
                     f'stroke-width="2.5"{dash}/><text x="{x + 24}" y="{yy + 4}">'
                     f'{esc(_short(label, 28))}<title>{esc(label)}</title></text>')
    return f'<g class="legend">{"".join(parts)}</g>'


def heat_color(t: float) -> str:
    """t in [0, 1] (1 = best) -> interpolated viridis hex colour."""
    t = min(max(t, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(t), len(VIRIDIS) - 2)
    a, b = VIRIDIS[i], VIRIDIS[i + 1]
    mix = [round(int(a[k:k + 2], 16) * (1 - (t - i)) + int(b[k:k + 2], 16) * (t - i))
           for k in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in mix)


def heatmap(matrix: list[list[float | None]], rows: list[str], cols: list[str], title: str,
            higher_is_better: bool = True, vrange: tuple[float, float] | None = None) -> str:
    """Score matrix: row i = after training task i, column j = evaluated on task j. Bright is
    better whichever way the metric points; a log scale is used for ratio-like metrics."""
    cell, left, top = 52, 96, 40
    width, height = left + cell * len(cols) + 10, top + cell * len(rows) + 44
    values = [v for r in matrix for v in r if v is not None and math.isfinite(v)]
    lo, hi = vrange or ((min(values), max(values)) if values else (0.0, 1.0))
    use_log = not higher_is_better and lo > 0 and hi / lo > 10
    scale = (lambda v: math.log(v)) if use_log else (lambda v: v)
    span = (scale(hi) - scale(lo)) or 1.0
    parts = [title_text(title, width)]
    for j, (name, short) in enumerate(zip(cols, strip_common_prefix(cols))):
        parts.append(f'<text x="{left + cell * j + cell / 2}" y="{top - 6}" '
                     f'text-anchor="middle" class="small">{esc(_short(short, 8))}'
                     f'<title>{esc(name)}</title></text>')
    for i, name in enumerate(rows):
        y = top + cell * i
        parts.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end" '
                     f'class="small">{esc(_short(name, 14))}<title>{esc(name)}</title></text>')
        for j, v in enumerate(matrix[i]):
            x = left + cell * j
            if v is None or not math.isfinite(v):
                fill, text, ink = "#e5e5e5", "–", "#555"
            else:
                t = (scale(v) - scale(lo)) / span
                t = t if higher_is_better else 1 - t
                fill, text = heat_color(t), fmt(v)
                ink = "#000" if t > 0.55 else "#fff"
            parts.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                         f'fill="{fill}"><title>{esc(rows[i])} → {esc(cols[j])}: {esc(text)}'
                         f'</title></rect><text x="{x + cell / 2 - 1}" y="{y + cell / 2 + 4}" '
                         f'text-anchor="middle" fill="{ink}" class="small">{esc(text)}</text>')
    parts.append(f'<text x="{left + cell * len(cols) / 2:.0f}" y="{height - 22}" '
                 f'text-anchor="middle" class="small">evaluated on task →</text>')
    parts.append(f'<text x="{width / 2:.0f}" y="{height - 8}" text-anchor="middle" '
                 f'class="small">row: after training on · bright = better'
                 f'{" (log)" if use_log else ""}</text>')
    return svg(width, height, "".join(parts), title, cls="heatmap")


def extent(series: list[dict]) -> list[float]:
    """Every value ± its error bar, so the axis range shows whole error bars."""
    out = []
    for s in series:
        for y, e in zip(s["ys"], s.get("err") or [None] * len(s["ys"])):
            if y is not None:
                out += [y - (e or 0), y + (e or 0)]
    return out


def line_chart(series: list[dict], xlabels: list[str], title: str, ylabel: str,
               xlabel: str = "after training on task", width: int = 600,
               height: int = 300, log_y: bool = False, y_min: float | None = 0.0,
               y_max: float | None = None) -> str:
    """``series``: {"label", "ys" (one per x, None allowed), "color", optional "err",
    "dashed"}. Error bars are drawn when ``err`` is given; unlabelled series have no legend.
    ``log_y`` asks for a log axis, used when the values span more than a decade; ``y_min``
    is the lowest value the quantity can take (scores: 0)."""
    frame = Frame(width - LEGEND, height, range(len(xlabels)), extent(series), log_y=log_y,
                  y_min=y_min, y_max=y_max)
    low = (lambda v: v) if y_min is None else (lambda v: max(v, y_min))
    if frame.log_y:
        ylabel += " (log)"
    parts = [frame.axes(title, xlabel, ylabel, list(enumerate(xlabels)))]
    for s in series:
        pts = [(frame.px(i), frame.py(y), y) for i, y in enumerate(s["ys"]) if y is not None]
        dash = ' stroke-dasharray="5 4"' if s.get("dashed") else ""
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{s["color"]}" '
                         f'stroke-width="2"{dash}/>')
        for (x, y, v), e in zip(pts, _present(s.get("err"), s["ys"])):
            if e:
                parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.py(low(v - e)):.1f}" '
                             f'y2="{frame.py(v + e):.1f}" stroke="{s["color"]}"/>')
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s["color"]}">'
                         f'<title>{esc(s["label"])}: {esc(fmt(v))}</title></circle>')
    keyed = [s for s in series if s["label"]]
    parts.append(legend([(s["label"], s["color"]) for s in keyed], width - LEGEND + 10,
                        MARGIN["top"] + 6, [bool(s.get("dashed")) for s in keyed]))
    return svg(width, height, "".join(parts), title)


def step_chart(series: list[dict], boundaries: list[tuple[float, str]], title: str,
               ylabel: str, xlabel: str = "optimizer steps", width: int = 600,
               height: int = 300, y_min: float | None = 0.0, y_max: float | None = None) -> str:
    """Curves over a numeric x (``series``: {"label", "xs", "ys", "color"}) with vertical
    dashed lines at ``boundaries`` ((x, label of what starts there)): the scores of
    evaluation during training, task switches marked."""
    xs = [x for s in series for x in s["xs"]] + [b for b, _ in boundaries]
    frame = Frame(width - LEGEND, height, [0.0, *xs], [y for s in series for y in s["ys"]
                                                      if y is not None], y_min=y_min, y_max=y_max)
    ticks = nice_ticks(frame.x0, frame.x1)
    frame.x0, frame.x1 = ticks[0], ticks[-1]
    parts = [frame.axes(title, xlabel, ylabel, [(t, fmt(t)) for t in ticks])]
    top, bottom = MARGIN["top"], height - MARGIN["bottom"]
    for x, label in boundaries:
        px = frame.px(x)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{bottom}" '
                     f'stroke="#888" stroke-dasharray="3 3"><title>{esc(label)} starts at step '
                     f'{esc(fmt(x))}</title></line><text x="{px + 3:.1f}" y="{top + 10}" '
                     f'class="small">{esc(_short(label, 10))}</text>')
    for s in series:
        pts = [(frame.px(x), frame.py(y), x, y) for x, y in zip(s["xs"], s["ys"])
               if y is not None and math.isfinite(y)]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{s["color"]}" '
                         f'stroke-width="1.8"/>')
        for x, y, step, v in pts:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{s["color"]}"><title>'
                         f'{esc(s["label"])}, step {esc(fmt(step))}: {esc(fmt(v))}</title>'
                         '</circle>')
    parts.append(legend([(s["label"], s["color"]) for s in series], width - LEGEND + 10,
                        MARGIN["top"] + 6))
    return svg(width, height, "".join(parts), title)


def _present(err, ys) -> list:
    err = err or [None] * len(ys)
    return [e for e, y in zip(err, ys) if y is not None]


def bar_chart(categories: list[str], series: list[dict], title: str, ylabel: str,
              xlabel: str = "task", width: int = 600, height: int = 300) -> str:
    """Grouped bars: one group per category, one bar per series ({"label", "ys", "err",
    "color"}); the zero line is always in view."""
    frame = Frame(width - LEGEND, height, [-0.5, len(categories) - 0.5], extent(series),
                  y_zero=True)
    parts = [frame.axes(title, xlabel, ylabel, list(enumerate(categories)))]
    slot = (frame.px(1) - frame.px(0)) * 0.8
    bar = slot / max(len(series), 1)
    zero = frame.py(0)
    for k, ser in enumerate(series):
        for i, v in enumerate(ser["ys"]):
            if v is None:
                continue
            x = frame.px(i) - slot / 2 + k * bar
            y = frame.py(v)
            parts.append(f'<rect x="{x:.1f}" y="{min(y, zero):.1f}" width="{bar * 0.9:.1f}" '
                         f'height="{abs(zero - y):.1f}" fill="{ser["color"]}"><title>'
                         f'{esc(ser["label"])}, {esc(categories[i])}: {esc(fmt(v))}</title></rect>')
            e = (ser.get("err") or [None] * len(ser["ys"]))[i]
            if e:
                cx = x + bar * 0.45
                parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{frame.py(v - e):.1f}" '
                             f'y2="{frame.py(v + e):.1f}" stroke="#333"/>')
    parts.append(f'<line x1="{MARGIN["left"]}" x2="{frame.w - MARGIN["right"]}" y1="{zero:.1f}" '
                 f'y2="{zero:.1f}" class="axis"/>')
    parts.append(legend([(s["label"], s["color"]) for s in series], width - LEGEND + 10,
                        MARGIN["top"] + 6))
    return svg(width, height, "".join(parts), title)


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of points no other point beats on both cost (lower) and score."""
    def beats(a, b):
        better_score = a[1] >= b[1] if higher_is_better else a[1] <= b[1]
        strictly = a[0] < b[0] or (a[1] > b[1] if higher_is_better else a[1] < b[1])
        return a[0] <= b[0] and better_score and strictly

    return [i for i, p in enumerate(points) if not any(beats(q, p) for q in points)]


def scatter(points: list[dict], title: str, xlabel: str, ylabel: str,
            higher_is_better: bool = True, width: int = 600, height: int = 320,
            xfmt=fmt, y_max: float | None = None) -> str:
    """Score versus cost, one point per row ({"label", "x", "y", "xerr", "yerr", "color"}),
    with the Pareto front (cheapest for its score) joined by a dashed line. Costs and scores
    are never negative: neither axis (nor an error bar) goes below zero."""
    pts = [p for p in points if p["x"] is not None and p["y"] is not None]
    xs = [max(p["x"] + s * (p.get("xerr") or 0), 0.0) for p in pts for s in (-1, 1)]
    ys = [p["y"] + s * (p.get("yerr") or 0) for p in pts for s in (-1, 1)]
    frame = Frame(width - LEGEND, height, xs or [0, 1], ys, y_min=0.0, y_max=y_max)
    if xs and min(xs) == max(xs):  # one cost for all: show it from zero, not around it
        frame.x0, frame.x1 = min(0.0, xs[0]), max(2 * xs[0], 1.0)
    ticks = nice_ticks(frame.x0, frame.x1)
    labels = [xfmt(t) for t in ticks]
    if len(set(labels)) < len(labels):  # formatting merged ticks (e.g. bytes): whole ones only
        ticks = [t for t in ticks if t == round(t)]
    frame.x0, frame.x1 = ticks[0], ticks[-1]
    parts = [frame.axes(title, xlabel, ylabel, [(t, xfmt(t)) for t in ticks])]
    front = sorted(pareto_front([(p["x"], p["y"]) for p in pts], higher_is_better),
                   key=lambda i: pts[i]["x"])
    if len(front) > 1:
        path = " ".join(f"{frame.px(pts[i]['x']):.1f},{frame.py(pts[i]['y']):.1f}"
                        for i in front)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#999" '
                     f'stroke-dasharray="5 4" stroke-width="1.5"/>')
    for i, p in enumerate(pts):
        x, y = frame.px(p["x"]), frame.py(p["y"])
        for err, horizontal in ((p.get("yerr"), False), (p.get("xerr"), True)):
            if err:
                a, b = ((frame.px(max(p["x"] - err, 0.0)), frame.px(p["x"] + err))
                        if horizontal else (frame.py(max(p["y"] - err, 0.0)),
                                            frame.py(p["y"] + err)))
                coords = (f'x1="{a:.1f}" x2="{b:.1f}" y1="{y:.1f}" y2="{y:.1f}"' if horizontal
                          else f'x1="{x:.1f}" x2="{x:.1f}" y1="{a:.1f}" y2="{b:.1f}"')
                parts.append(f'<line {coords} stroke="{p["color"]}" opacity="0.7"/>')
        ring = ' stroke="#000" stroke-width="1.5"' if i in front else ""
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{p["color"]}"{ring}>'
                     f'<title>{esc(p["label"])}: {esc(fmt(p["y"]))} at {esc(xfmt(p["x"]))}'
                     f'</title></circle>')
    parts.append(legend([(p["label"], p["color"]) for p in pts], width - LEGEND + 10,
                        MARGIN["top"] + 6))
    return svg(width, height, "".join(parts), title)


def strip_common_prefix(names: list[str]) -> list[str]:
    """["digits 0+1", "digits 2+3"] -> ["0+1", "2+3"]: narrow columns keep what differs."""
    import os.path

    prefix = os.path.commonprefix([str(n) for n in names]) if len(names) > 1 else ""
    prefix = prefix[: prefix.rfind(" ") + 1]  # whole words only
    return [str(n)[len(prefix):] or str(n) for n in names]


def _short(text: str, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
