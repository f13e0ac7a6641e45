"""Where to draw a REAL network's stations (ReasonMap station JSON has no coordinates), and its line colours.

``auto_layout`` places stations by stress majorization of track distances, so a schematic map of a real network
can be drawn by ``data_prep.synth_render.render_schematic`` for synthetic questions on real networks.
"""

from __future__ import annotations

from data_prep.synth_network import PALETTE, MapLayout
from reward_fns.network import MetroNetwork, normalize_station


def auto_layout(network: MetroNetwork, *, title: str | None = None, seed: int = 0) -> MapLayout:
    """A drawable layout for any network: stress majorization of graph distances, a typical segment one unit.

    Stress majorization (SMACOF, started from classical MDS) places stations so that map distances follow
    distances along the tracks, which keeps segments of even length and lines straight-ish, the way schematic
    maps look. Pure numpy, O(n^2) memory: fine for ReasonMap's largest network (403 stations). ``seed`` only
    breaks ties in the start position; the result is deterministic for a network.
    """
    import networkx as nx
    import numpy as np

    canonical = {normalize_station(n): n for n in network.stations}
    keys = sorted(canonical)
    index = {k: i for i, k in enumerate(keys)}
    graph = nx.Graph()
    graph.add_nodes_from(keys)
    for stations in network.lines.values():
        norms = [normalize_station(n) for n in stations]
        graph.add_edges_from((a, b) for a, b in zip(norms, norms[1:], strict=False) if a != b)
    n = len(keys)
    dist = np.zeros((n, n))
    for src, lengths in nx.all_pairs_shortest_path_length(graph):
        for dst, d in lengths.items():
            dist[index[src], index[dst]] = d
    unreachable = dist == 0
    np.fill_diagonal(unreachable, False)
    if unreachable.any():  # separate components: keep them apart, lightly
        dist[unreachable] = dist.max() + 2
    pts = _stress_layout(dist, seed)
    lengths = [float(np.linalg.norm(pts[index[a]] - pts[index[b]])) for a, b in graph.edges()]
    pts = _declutter((pts - pts.min(axis=0)) / (float(np.median(lengths)) if lengths else 1.0))
    pts = pts - pts.min(axis=0)
    positions = {canonical[k]: (round(float(pts[i, 0]), 3), round(float(pts[i, 1]), 3)) for i, k in enumerate(keys)}
    lines = {line: [canonical[normalize_station(s)] for s in stations] for line, stations in network.lines.items()}
    return MapLayout(
        title=title or network.name or "Metro", positions=positions, colors=line_colours(list(lines)), lines=lines
    )


# Colour words in real line names (English, and the Portuguese names Lisbon uses), so "Orange Line" is orange.
_NAMED_COLOURS = {
    "red": "#E32017", "vermelha": "#E32017", "orange": "#F28C00", "yellow": "#F2C500", "amarela": "#F2C500",
    "green": "#00963F", "verde": "#00963F", "blue": "#0065BD", "azul": "#0065BD", "purple": "#84368F",
    "silver": "#A0A5AA", "grey": "#7A7F85", "gray": "#7A7F85", "brown": "#8B5A2B", "pink": "#E86FA8",
    "gold": "#C9A200", "teal": "#00A39B", "navy": "#1B2F6E", "lime": "#84B817", "violet": "#B07CD8",
}  # fmt: skip


def line_colours(lines: list[str]) -> dict[str, str]:
    """A distinct colour per line: the colour a line's name says when it says one, else the next free one."""
    colours: dict[str, str] = {}
    for line in lines:
        words = line.lower().replace("-", " ").split()
        named = next((_NAMED_COLOURS[w] for w in words if w in _NAMED_COLOURS), None)
        if named is not None and named not in colours.values():
            colours[line] = named
    free = [hexcode for _, hexcode in PALETTE if hexcode not in colours.values()]
    for i, line in enumerate(line for line in lines if line not in colours):
        colours[line] = free[i % len(free)] if free else PALETTE[i % len(PALETTE)][1]
    return {line: colours[line] for line in lines}


def _declutter(pts, min_gap: float = 0.85, iterations: int = 60):
    """Push apart stations closer than ``min_gap`` units (dense centres), a little at a time."""
    import numpy as np

    x = pts.copy()
    n = len(x)
    for _ in range(iterations):
        diff = x[:, None, :] - x[None, :, :]
        d = np.sqrt((diff**2).sum(axis=2)) + np.eye(n)
        close = (d < min_gap) & ~np.eye(n, dtype=bool)
        if not close.any():
            break
        push = np.where(close, (min_gap - d) / d, 0.0)[:, :, None] * diff
        x = x + 0.5 * push.sum(axis=1)
    return x


def _stress_layout(dist, seed: int, iterations: int = 300):
    """SMACOF with weights 1/d^2 from a classical-MDS start; returns an (n, 2) array."""
    import numpy as np

    n = dist.shape[0]
    if n == 1:
        return np.zeros((1, 2))
    sq = dist**2
    centering = np.eye(n) - np.ones((n, n)) / n
    vals, vecs = np.linalg.eigh(-0.5 * centering @ sq @ centering)
    top = np.argsort(vals)[::-1][:2]
    x = vecs[:, top] * np.sqrt(np.maximum(vals[top], 1e-9))
    rng = np.random.default_rng(seed)
    x = x + 1e-3 * rng.standard_normal(x.shape)
    with np.errstate(divide="ignore"):
        w = np.where(dist > 0, 1.0 / sq, 0.0)
    v = -w
    np.fill_diagonal(v, w.sum(axis=1))
    v_pinv = np.linalg.pinv(v)
    for _ in range(iterations):
        diff = x[:, None, :] - x[None, :, :]
        cur = np.sqrt((diff**2).sum(axis=2))
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(cur > 1e-12, -w * dist / cur, 0.0)
        np.fill_diagonal(b, 0.0)
        np.fill_diagonal(b, -b.sum(axis=1))
        new = v_pinv @ (b @ x)
        if np.abs(new - x).max() < 1e-5:
            x = new
            break
        x = new
    return x
