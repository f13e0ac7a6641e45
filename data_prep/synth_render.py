"""Draw a metro map (PIL): coloured lines, station and transfer markers, non-overlapping labels, a legend.

Why PIL: it measures every label's exact pixel box (``ImageFont.getbbox``), draws fast, and writes PNG bytes
with no timestamp or version metadata, so one layout always gives the same bytes. Text uses matplotlib's
bundled DejaVu Sans with PIL's basic layout engine (not raqm), so the bytes do not depend on the machine's
fonts or text-shaping libraries (they do depend on the Pillow/FreeType build). The map is drawn at 2x and
downsampled with Lanczos, which anti-aliases lines and markers.

Label placement is greedy: stations in order of constraint (transfers, then crowded ones) take the cheapest of 16
candidate positions (8 directions, 2 distances), the cost adding overlap area with placed labels and with station
markers (heavy), the length of track crossing the label (light: labels carry a white halo), leaving the map area
(forbidden), and a small preference order. ``RenderedMap.label_boxes`` returns the boxes for tests.

``render_schematic`` draws a REAL network (ReasonMap station JSON) with ``data_prep.network_layout.auto_layout``,
for synthetic questions on real networks; it needs a CJK font for Chinese names (set
``REWARDMAP_CJK_FONT`` or install Noto Sans CJK), else those labels draw as boxes and a warning is issued.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from data_prep.network_layout import auto_layout
from data_prep.synth_network import MapLayout
from reward_fns.network import MetroNetwork

Box = tuple[float, float, float, float]  # left, top, right, bottom (output pixels)
CROWDED_OVERLAP_PX2 = 16.0  # a label whose halo box overlaps others by more than this counts as crowded

_CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
)


@dataclass(frozen=True)
class RenderStyle:
    """Sizes in output pixels; ``scale`` is the supersampling factor."""

    unit: int = 64  # grid unit: distance between neighbouring stations
    margin: int = 80
    title_height: int = 56
    legend_width: int = 230
    font_size: int = 13
    title_size: int = 26
    line_width: float = 7.0
    scale: int = 2
    pad_to: int = 28  # canvas sides rounded up to this multiple (Qwen2.5-VL's resize factor: no resampling later)
    background: str = "#FBFBF8"
    text: str = "#1A1A1A"


@dataclass(frozen=True)
class RenderedMap:
    """PNG bytes, size, and where each station label landed (for legibility checks)."""

    png: bytes
    width: int
    height: int
    label_boxes: list[tuple[str, Box]]
    marker_boxes: list[tuple[str, Box]]
    crowded_labels: int = 0  # labels that found no position free of other labels and markers

    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.png))


# fonts ------------------------------------------------------------------------------------------------------


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=32)
def map_font(size: int, bold: bool = False, cjk: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (matplotlib's copy) at ``size`` px with PIL's basic layout, or a CJK font when asked and found."""
    path: str | Path = _font_dir() / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    if cjk:
        cjk_path = _cjk_font_path()
        if cjk_path is not None:
            path = cjk_path
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=1)
def _cjk_font_path() -> str | None:
    for candidate in (os.environ.get("REWARDMAP_CJK_FONT", ""), *_CJK_FONT_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _needs_cjk(texts: list[str]) -> bool:
    return any(ord(ch) >= 0x2E80 for t in texts for ch in t)


def station_label(name: str) -> str:
    """What a map prints for a station: the name without a trailing " Station" / "站" (real maps omit it)."""
    for suffix in (" Station", "站"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


# geometry helpers -------------------------------------------------------------------------------------------


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _clip_length(p: tuple[float, float], q: tuple[float, float], box: Box) -> float:
    """Length of segment p-q inside ``box`` (Liang-Barsky)."""
    x0, y0 = p
    dx, dy = q[0] - x0, q[1] - y0
    t0, t1 = 0.0, 1.0
    for pk, qk in ((-dx, x0 - box[0]), (dx, box[2] - x0), (-dy, y0 - box[1]), (dy, box[3] - y0)):
        if pk == 0:
            if qk < 0:
                return 0.0
            continue
        t = qk / pk
        if pk < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return 0.0
    return (t1 - t0) * math.hypot(dx, dy)


class _Buckets:
    """Uniform-grid spatial index of boxes (with a payload), so placement tests only nearby items."""

    def __init__(self, size: float) -> None:
        self.size = size
        self.cells: dict[tuple[int, int], list[tuple[Box, object]]] = {}

    def _keys(self, box: Box):
        s = self.size
        for i in range(int(box[0] // s), int(box[2] // s) + 1):
            for j in range(int(box[1] // s), int(box[3] // s) + 1):
                yield (i, j)

    def add(self, box: Box, payload: object) -> None:
        for k in self._keys(box):
            self.cells.setdefault(k, []).append((box, payload))

    def near(self, box: Box) -> list[tuple[Box, object]]:
        seen: set[int] = set()
        out = []
        for k in self._keys(box):
            for item in self.cells.get(k, ()):
                if id(item) not in seen:
                    seen.add(id(item))
                    out.append(item)
        return out


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple if multiple > 1 else value


# drawing ----------------------------------------------------------------------------------------------------

# (anchor, unit direction) candidates; PIL anchors: horizontal l/m/r, vertical a(scender)/m/d(escender)
_CANDIDATES = (
    ("lm", (1.0, 0.0)),
    ("rm", (-1.0, 0.0)),
    ("md", (0.0, -1.0)),
    ("ma", (0.0, 1.0)),
    ("ld", (0.72, -0.72)),
    ("la", (0.72, 0.72)),
    ("rd", (-0.72, -0.72)),
    ("ra", (-0.72, 0.72)),
)


def render_map(layout: MapLayout, style: RenderStyle | None = None) -> RenderedMap:
    """Draw ``layout`` as a schematic metro map; deterministic PNG bytes for a given layout and style."""
    st = style or RenderStyle()
    s = st.scale
    xs = [p[0] for p in layout.positions.values()]
    ys = [p[1] for p in layout.positions.values()]
    min_x, min_y = min(xs), min(ys)
    map_w = (max(xs) - min_x) * st.unit + 2 * st.margin
    map_h = (max(ys) - min_y) * st.unit + 2 * st.margin
    legend_h = _legend_height(len(layout.lines))
    longest = max((map_font(st.font_size).getlength(line) for line in layout.lines), default=0.0)
    legend_w = max(st.legend_width, int(longest) + 100)
    width = _round_up(int(math.ceil(map_w + legend_w)), st.pad_to)
    height = _round_up(int(math.ceil(st.title_height + max(map_h, legend_h + 2 * 16))), st.pad_to)

    def px(station: str) -> tuple[float, float]:
        x, y = layout.positions[station]
        return ((st.margin + (x - min_x) * st.unit) * s, (st.title_height + st.margin + (y - min_y) * st.unit) * s)

    names = list(layout.positions)
    cjk = _needs_cjk(names + list(layout.lines) + [layout.title])
    if cjk and _cjk_font_path() is None:
        warnings.warn("no CJK font found (set REWARDMAP_CJK_FONT): CJK labels will not be legible", stacklevel=2)
    img = Image.new("RGB", (width * s, height * s), st.background)
    draw = ImageDraw.Draw(img)
    lw = st.line_width * s

    # track: parallel offsets where lines share a segment ------------------------------------------------------
    edge_users: dict[tuple[str, str], list[str]] = {}
    for line, stations in layout.lines.items():
        for a, b in zip(stations, stations[1:], strict=False):
            key = (a, b) if px(a) <= px(b) else (b, a)
            users = edge_users.setdefault(key, [])
            if line not in users:
                users.append(line)
    segments: list[tuple[tuple[float, float], tuple[float, float]]] = []
    parallel_at: dict[str, int] = {n: 1 for n in names}
    for (a, b), users in edge_users.items():
        pa, pb = px(a), px(b)
        length = math.dist(pa, pb) or 1.0
        nx_, ny_ = -(pb[1] - pa[1]) / length, (pb[0] - pa[0]) / length
        k = len(users)
        parallel_at[a] = max(parallel_at[a], k)
        parallel_at[b] = max(parallel_at[b], k)
        for i, line in enumerate(users):
            off = (i - (k - 1) / 2) * lw
            p = (pa[0] + nx_ * off, pa[1] + ny_ * off)
            q = (pb[0] + nx_ * off, pb[1] + ny_ * off)
            colour = layout.colors[line]
            draw.line([p, q], fill=colour, width=int(round(lw)))
            for c in (p, q):
                draw.ellipse([c[0] - lw / 2, c[1] - lw / 2, c[0] + lw / 2, c[1] + lw / 2], fill=colour)
        segments.append((pa, pb))

    # stations ------------------------------------------------------------------------------------------------
    lines_at: dict[str, list[str]] = {n: [] for n in names}
    for line, stations in layout.lines.items():
        for n in stations:
            if line not in lines_at[n]:
                lines_at[n].append(line)
    marker_boxes: list[tuple[str, Box]] = []
    radius: dict[str, float] = {}
    for n in names:
        x, y = px(n)
        transfer = len(lines_at[n]) > 1
        r = (0.95 + 0.5 * (parallel_at[n] - 1)) * lw if transfer else 0.62 * lw
        radius[n] = r
        if transfer:
            draw.ellipse([x - r, y - r, x + r, y + r], fill="#FFFFFF", outline="#222222", width=int(round(0.32 * lw)))
        else:
            colour = layout.colors[lines_at[n][0]] if lines_at[n] else "#222222"
            draw.ellipse([x - r, y - r, x + r, y + r], fill="#FFFFFF", outline=colour, width=max(1, int(0.28 * lw)))
        marker_boxes.append((n, (x - r, y - r, x + r, y + r)))

    # labels ---------------------------------------------------------------------------------------------------
    label_boxes, crowded = _place_labels(
        draw, st, names, lines_at, radius, px, segments, marker_boxes, (0, st.title_height * s, map_w * s, height * s)
    )

    # title and legend -----------------------------------------------------------------------------------------
    title_font = map_font(st.title_size * s, bold=True, cjk=cjk)
    draw.text(
        (st.margin * 0.4 * s, st.title_height * 0.5 * s), layout.title, font=title_font, fill=st.text, anchor="lm"
    )
    sub_font = map_font(st.font_size * s, cjk=False)
    title_w = draw.textlength(layout.title, font=title_font)
    draw.text(
        (st.margin * 0.4 * s + title_w + 14 * s, st.title_height * 0.5 * s),
        "Metro map",
        font=sub_font,
        fill="#666666",
        anchor="lm",
    )
    _draw_legend(draw, st, layout, map_w, legend_w, cjk)

    out = img.resize((width, height), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False, compress_level=6)
    return RenderedMap(
        png=buf.getvalue(),
        width=width,
        height=height,
        label_boxes=[(n, tuple(v / s for v in box)) for n, box in label_boxes],
        marker_boxes=[(n, tuple(v / s for v in box)) for n, box in marker_boxes],
        crowded_labels=crowded,
    )


def _place_labels(draw, st, names, lines_at, radius, px, segments, marker_boxes, area: Box):
    """Greedy label placement (see module docstring); draws the labels and returns their boxes (2x pixels)."""
    s = st.scale
    cjk = _needs_cjk(names)
    bucket = _Buckets(96 * s)
    for n, box in marker_boxes:
        bucket.add(box, ("marker", n))
    for p, q in segments:
        bucket.add((min(p[0], q[0]), min(p[1], q[1]), max(p[0], q[0]), max(p[1], q[1])), ("segment", (p, q)))

    def crowd(n: str) -> int:
        x, y = px(n)
        r = st.unit * s * 1.6
        return sum(1 for _, payload in bucket.near((x - r, y - r, x + r, y + r)) if payload[0] == "marker")

    order = sorted(names, key=lambda n: (-(len(lines_at[n]) > 1), -crowd(n), n))
    placed: list[tuple[str, Box]] = []
    crowded = 0
    gap = 3.5 * s
    for n in order:
        text = station_label(n)
        font = map_font(st.font_size * s, bold=len(lines_at[n]) > 1, cjk=cjk)
        x, y = px(n)
        best: tuple[float, str, tuple[float, float], Box, float] | None = None
        for ring, extra in enumerate((0.0, 0.45 * st.unit * s)):
            for pref, (anchor, (ux, uy)) in enumerate(_CANDIDATES):
                d = radius[n] + gap + extra
                ax, ay = x + ux * d, y + uy * d
                box = draw.textbbox((ax, ay), text, font=font, anchor=anchor, stroke_width=int(1.5 * s))
                cost = 0.05 * pref + 4.0 * ring
                if box[0] < area[0] or box[1] < area[1] or box[2] > area[2] or box[3] > area[3]:
                    cost += 1e6
                hard = 0.0  # overlap with labels and markers, output px^2
                for other, payload in bucket.near(box):
                    if payload[0] == "segment":
                        p, q = payload[1]
                        cost += 3.0 * _clip_length(p, q, box) / s
                    else:
                        hard += _overlap(box, other) / (s * s)
                cost += 10.0 * hard
                if best is None or cost < best[0]:
                    best = (cost, anchor, (ax, ay), box, hard)
            if best is not None and best[0] < 4.0:
                break
        assert best is not None
        if best[0] >= 1e6 or best[4] > CROWDED_OVERLAP_PX2:
            crowded += 1
        _, anchor, (ax, ay), box, _ = best
        font = map_font(st.font_size * s, bold=len(lines_at[n]) > 1, cjk=cjk)
        draw.text(
            (ax, ay), text, font=font, fill=st.text, anchor=anchor, stroke_width=int(1.5 * s), stroke_fill=st.background
        )
        tight = draw.textbbox((ax, ay), text, font=font, anchor=anchor)
        placed.append((n, tight))
        bucket.add(box, ("label", n))
    return placed, crowded


def _legend_height(n_lines: int) -> int:
    return 22 + 26 * (n_lines + 2) + 24


def _draw_legend(draw, st: RenderStyle, layout: MapLayout, map_w: float, legend_w: int, cjk: bool) -> None:
    s = st.scale
    x0 = (map_w + 8) * s
    y = (st.title_height + 16) * s
    font = map_font(st.font_size * s, cjk=cjk)
    bold = map_font((st.font_size + 1) * s, bold=True)
    row = 26 * s
    height = _legend_height(len(layout.lines)) * s
    draw.rounded_rectangle(
        [x0, y, x0 + (legend_w - 20) * s, y + height], radius=8 * s, fill="#FFFFFF", outline="#BBBBBB",
        width=s,
    )  # fmt: skip
    draw.text((x0 + 14 * s, y + 22 * s), "Lines", font=bold, fill=st.text, anchor="lm")
    cy = y + 22 * s + row
    lw = st.line_width * s
    for line, colour in layout.colors.items():
        draw.line([(x0 + 14 * s, cy), (x0 + 54 * s, cy)], fill=colour, width=int(round(lw)))
        draw.text((x0 + 64 * s, cy), line, font=font, fill=st.text, anchor="lm")
        cy += row
    cy += 6 * s
    r = 0.95 * lw
    cx = x0 + 34 * s
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill="#FFFFFF", outline="#222222", width=int(round(0.32 * lw)))
    draw.text((x0 + 64 * s, cy), "Transfer station", font=font, fill=st.text, anchor="lm")
    cy += row
    r = 0.62 * lw
    draw.line([(x0 + 14 * s, cy), (x0 + 54 * s, cy)], fill="#7A7F85", width=int(round(lw)))
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill="#FFFFFF", outline="#7A7F85", width=max(1, int(0.28 * lw)))
    draw.text((x0 + 64 * s, cy), "Station", font=font, fill=st.text, anchor="lm")


def render_schematic(
    network: MetroNetwork, *, title: str | None = None, seed: int = 0, style: RenderStyle | None = None
) -> RenderedMap:
    """Draw a schematic map of a real network (ReasonMap station JSON) with ``auto_layout``.

    Dense networks get a larger grid unit (up to 1.7x) until every label finds a free position (New York needs it).
    """
    layout = auto_layout(network, title=title, seed=seed)
    base = style or RenderStyle()
    rendered = render_map(layout, base)
    for factor in (1.3, 1.7):
        if rendered.crowded_labels == 0:
            break
        rendered = render_map(layout, dataclasses.replace(base, unit=int(base.unit * factor)))
    return rendered
