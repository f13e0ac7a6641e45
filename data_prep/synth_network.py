"""Seeded synthetic metro cities: lines on an octilinear grid, pronounceable station names, a drawable layout.

Why: the official data has 30 maps. Synthetic cities give unlimited maps whose every answer is exact (computed
from the graph), for curriculum warm-up, tests and ablations, drawn like a schematic metro map.

How a city is built (all randomness from one ``random.Random`` seeded by the caller, so a seed is a city):

- Stations sit on integer grid cells; a line is a walk of 0/45-degree turns between cells (one station per
  cell), first crossing the city through an existing station of an earlier line (so the network is connected),
  then heading for the far edge. A cell two lines share is a transfer station; lines never share a track
  segment, except a branch.
- Optional loop line (an octagon around the centre, station list closed by repeating its first station, as
  ReasonMap lists Shanghai's Line 4) and optional branch: a separate line that shares its parent's trunk up to
  the branch-starting station and then leaves it, the way ReasonMap's JSON models branches as lines.
- Line names follow one of the styles the real cities use ("Line 3", "Line B", "M2", "Red Line"); every line has
  its own colour; station names are syllable-built, unique after ``normalize_station``, and end in " Station"
  as in ReasonMap's English-language cities (the map label drops the suffix, as real maps do).

Map difficulty. ReasonMap labels its 30 maps easy/middle/hard, 10 each, "by the number of transit lines and
transfer stations"; the labels themselves are not in the station files, so the thresholds below were measured
on those files (../shared/reasonmap/stations, markers stripped; transfer station = station on two or more
lines). Lines per city, sorted: 1 2 2 2 2 3 3 3 3 3 | 4 4 4 5 5 5 6 6 6 6 6 6 6 | 7 11 12 14 18 21 22. Transfer
stations: 0-17 for cities with at most 3 lines (Miami 15, Auckland 7), 3-42 for 4-6 lines (Washington 34, Oslo
39, Geneva 42; all others <= 24), 29-170 for 7 or more. The rule

    hard   : lines >= 7 or transfer stations >= 30
    easy   : otherwise, lines <= 3
    middle : otherwise

splits the 30 real cities exactly 10 / 10 / 10 (easy: Sydney .. Auckland; middle: Budapest, Lisboa, Nanchang,
Nanning, Dalian, Kunming, Los Angeles, Hefei, Changsha, Singapore; hard: Oslo, Geneva, Washington, KL, Xi'an,
Hangzhou, Shenzhen, Shanghai, Beijing, New York). ``classify_difficulty`` applies it; generated cities are
labelled by it, so a synthetic "hard" city is hard by the same measure as a real one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from reward_fns.ground_truth import MAP_DIFFICULTIES
from reward_fns.network import MetroNetwork, normalize_station

HARD_MIN_LINES = 7
HARD_MIN_TRANSFERS = 30
EASY_MAX_LINES = 3

Cell = tuple[int, int]
# Octilinear unit steps, counter-clockwise from east; index arithmetic mod 8 gives 45-degree turns.
DIRECTIONS: tuple[Cell, ...] = ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))

# Distinct line colours (name used by the colour naming style, hex drawn on the map).
PALETTE: tuple[tuple[str, str], ...] = (
    ("Red", "#E32017"),
    ("Blue", "#0065BD"),
    ("Green", "#00963F"),
    ("Orange", "#F28C00"),
    ("Purple", "#84368F"),
    ("Brown", "#8B5A2B"),
    ("Pink", "#E86FA8"),
    ("Teal", "#00A39B"),
    ("Navy", "#1B2F6E"),
    ("Lime", "#84B817"),
    ("Gold", "#C9A200"),
    ("Grey", "#7A7F85"),
    ("Sky", "#3FB4E8"),
    ("Maroon", "#8C1D40"),
    ("Olive", "#6E7B1F"),
    ("Violet", "#B07CD8"),
)

_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "st", "t", "v", "w")
_ONSETS += ("z", "sh", "ch", "th", "kl", "pl", "fr")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "ou", "ia")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "nd", "rn", "lt", "sk", "x")
_SUFFIXES = ("Park", "Square", "Gate", "Market", "Bridge", "North", "South", "East", "West", "Hill", "Harbour")
_SUFFIXES += ("Cross", "Green", "Lane", "Fields")
# Substrings the official normaliser rewrites or drops: a generated name must survive normalisation unchanged.
_FORBIDDEN = ("metro", "station", "road", "univ", "tech", "line", "asian")


@dataclass(frozen=True)
class DifficultySpec:
    """Generation targets for one difficulty bucket (the label is still checked with ``classify_difficulty``)."""

    lines: tuple[int, int]
    stations_per_line: tuple[int, int]
    grid: tuple[int, int]
    loop_probability: float
    branch_probability: float


SPECS: dict[str, DifficultySpec] = {
    "easy": DifficultySpec(lines=(2, 3), stations_per_line=(7, 11), grid=(12, 9), loop_probability=0.0,
                           branch_probability=0.0),
    "middle": DifficultySpec(lines=(4, 6), stations_per_line=(8, 13), grid=(16, 12), loop_probability=0.25,
                             branch_probability=0.3),
    "hard": DifficultySpec(lines=(7, 8), stations_per_line=(10, 15), grid=(20, 15), loop_probability=0.5,
                           branch_probability=0.4),
}  # fmt: skip


@dataclass(frozen=True)
class MapLayout:
    """What a renderer needs: station positions (grid units), line colours and drawing order, a title."""

    title: str
    positions: dict[str, tuple[float, float]]  # canonical station name -> (x, y), y grows downwards
    colors: dict[str, str]  # line name -> "#RRGGBB"
    lines: dict[str, list[str]]  # line name -> ordered canonical station names (a loop repeats its first)


@dataclass(frozen=True)
class SynthCity:
    """A generated city: its network (what questions are asked about) and its layout (what is drawn)."""

    name: str
    country: str
    seed: str
    difficulty: str
    network: MetroNetwork
    layout: MapLayout
    loops: tuple[str, ...] = ()
    branches: dict[str, str] = field(default_factory=dict)  # branch line -> parent line

    @property
    def n_transfers(self) -> int:
        return count_transfers(self.network)


def count_transfers(network: MetroNetwork) -> int:
    """Stations served by two or more lines (ReasonMap's "transfer stations")."""
    return sum(1 for s in network.stations if network.is_transfer(s))


def classify_difficulty(n_lines: int, n_transfers: int) -> str:
    """Map difficulty by the thresholds measured on ReasonMap's 30 cities (see the module docstring)."""
    if n_lines >= HARD_MIN_LINES or n_transfers >= HARD_MIN_TRANSFERS:
        return "hard"
    if n_lines <= EASY_MAX_LINES:
        return "easy"
    return "middle"


def network_difficulty(network: MetroNetwork) -> str:
    """``classify_difficulty`` of a network (real or synthetic)."""
    return classify_difficulty(len(network.lines), count_transfers(network))


# names ------------------------------------------------------------------------------------------------------


class NameMaker:
    """Unique pronounceable names (unique after ``normalize_station``), from syllables."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.taken: set[str] = set()

    def word(self, syllables: int) -> str:
        parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
        parts[-1] += self.rng.choice(_CODAS)
        return "".join(parts).capitalize()

    def unique(self, make: Callable[[], str], suffix: str = "") -> str:
        """A fresh ``make()`` + ``suffix`` whose normalised form is new and untouched by the normaliser."""
        for _ in range(1000):
            base = make()
            norm = normalize_station(base + suffix)
            if norm in self.taken or any(bad in base.lower() for bad in _FORBIDDEN):
                continue
            self.taken.add(norm)
            return base + suffix
        raise RuntimeError("name space exhausted")

    def station(self) -> str:
        def make() -> str:
            base = self.word(self.rng.choice((2, 2, 2, 3)))
            if self.rng.random() < 0.22:
                base += " " + self.rng.choice(_SUFFIXES)
            return base

        return self.unique(make, " Station")

    def city(self) -> str:
        return self.unique(lambda: self.word(self.rng.choice((2, 3))))


def line_names(rng: random.Random, n: int, colours: list[str]) -> list[str]:
    """``n`` line names in one style of the real cities: numbered, lettered, M-numbered, or by colour."""
    style = rng.choice(("number", "number", "letter", "m", "colour"))
    if style == "number":
        return [f"Line {i + 1}" for i in range(n)]
    if style == "letter":
        return [f"Line {chr(ord('A') + i)}" for i in range(n)]
    if style == "m":
        return [f"M{i + 1}" for i in range(n)]
    return [f"{colour} Line" for colour in colours]


# grid walks -------------------------------------------------------------------------------------------------


class _Grid:
    """Occupancy of the city grid while lines are laid: which lines use each cell and each track segment."""

    MAX_LINES_PER_CELL = 3

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.cell_lines: dict[Cell, list[int]] = {}
        self.edges: dict[frozenset[Cell], list[int]] = {}

    def inside(self, c: Cell) -> bool:
        return 0 <= c[0] < self.width and 0 <= c[1] < self.height

    def add(self, line: int, path: list[Cell]) -> None:
        for c in path:
            users = self.cell_lines.setdefault(c, [])
            if line not in users:
                users.append(line)
        for a, b in zip(path, path[1:], strict=False):
            self.edges.setdefault(frozenset((a, b)), []).append(line)

    def crosses_diagonal(self, a: Cell, b: Cell, own: set[frozenset[Cell]]) -> bool:
        """Whether the diagonal step a->b would cross the other diagonal of its square on ``own`` track."""
        if a[0] == b[0] or a[1] == b[1]:
            return False
        return frozenset(((a[0], b[1]), (b[0], a[1]))) in own


def _octdist(a: Cell, b: Cell) -> int:
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]))


def _direction_towards(a: Cell, b: Cell) -> int:
    dx, dy = b[0] - a[0], b[1] - a[1]
    step = ((dx > 0) - (dx < 0), (dy > 0) - (dy < 0))
    return DIRECTIONS.index(step) if step != (0, 0) else 0


def _walk(
    rng: random.Random,
    grid: _Grid,
    line: int,
    waypoints: list[Cell],
    *,
    max_len: int,
    prefix: list[Cell] | None = None,
) -> list[Cell] | None:
    """Octilinear walk through ``waypoints`` (from the first) with 0/45-degree turns; None when it gets stuck.

    ``prefix`` is an already-laid trunk the walk continues from (a branch): its cells count as the line's own.
    """
    path = list(prefix) if prefix else [waypoints[0]]
    own_cells = set(path)
    own_edges = {frozenset((a, b)) for a, b in zip(path, path[1:], strict=False)}
    heading = _direction_towards(path[-2], path[-1]) if len(path) > 1 else _direction_towards(path[0], waypoints[1])
    for target in waypoints[1:]:
        budget = 3 * _octdist(path[-1], target) + 4
        while path[-1] != target:
            budget -= 1
            if budget < 0 or len(path) >= max_len:
                return None
            pos = path[-1]
            best: tuple[float, int, Cell] | None = None
            for turn in (0, 1, -1):
                d = (heading + turn) % 8
                nxt = (pos[0] + DIRECTIONS[d][0], pos[1] + DIRECTIONS[d][1])
                if not _step_ok(grid, line, path, own_cells, own_edges, pos, nxt, target):
                    continue
                crowd = sum(
                    1
                    for dx in (-1, 0, 1)
                    for dy in (-1, 0, 1)
                    if (nxt[0] + dx, nxt[1] + dy) in grid.cell_lines and (nxt[0] + dx, nxt[1] + dy) != target
                )
                cost = _octdist(nxt, target) + 0.7 * abs(turn) + 0.35 * crowd + 0.6 * rng.random()
                if best is None or cost < best[0]:
                    best = (cost, d, nxt)
            if best is None:
                return None
            _, heading, nxt = best
            own_edges.add(frozenset((pos, nxt)))
            own_cells.add(nxt)
            path.append(nxt)
    return path


def _step_ok(
    grid: _Grid,
    line: int,
    path: list[Cell],
    own_cells: set[Cell],
    own_edges: set[frozenset[Cell]],
    pos: Cell,
    nxt: Cell,
    target: Cell,
) -> bool:
    """Track rules: stay inside, never revisit or fold back, never share a segment, at most 3 lines per cell,
    and never touch one foreign line at two consecutive stations (that would draw as a zig-zag alongside it)."""
    if not grid.inside(nxt) or nxt in own_cells:
        return False
    if frozenset((pos, nxt)) in grid.edges:
        return False
    if grid.crosses_diagonal(pos, nxt, own_edges):
        return False
    # no fold-back: the new cell may only neighbour the current end of the own path
    for c in path[:-1]:
        if _octdist(c, nxt) <= 1:
            return False
    users = grid.cell_lines.get(nxt, [])
    if len(users) >= grid.MAX_LINES_PER_CELL:
        return False
    if users and set(users) & set(grid.cell_lines.get(pos, [])) - {line}:
        return False
    return True


def _edge_point(rng: random.Random, grid: _Grid, through: Cell, angle_dir: int, reach: int) -> Cell:
    """A cell about ``reach`` steps from ``through`` in direction ``angle_dir``, clamped inside the grid."""
    dx, dy = DIRECTIONS[angle_dir]
    x = min(max(through[0] + dx * reach + rng.randint(-1, 1), 0), grid.width - 1)
    y = min(max(through[1] + dy * reach + rng.randint(-1, 1), 0), grid.height - 1)
    return (x, y)


def _loop_path(grid: _Grid, rng: random.Random) -> list[Cell]:
    """An octagon of cells around the centre, closed (first cell repeated at the end)."""
    cx, cy = grid.width // 2 + rng.randint(-1, 1), grid.height // 2 + rng.randint(-1, 1)
    r = max(3, min(grid.width, grid.height) // 4)
    c = max(1, r // 2)  # corner cut
    corners = [
        (cx + r, cy - r + c),
        (cx + r - c, cy - r),
        (cx - r + c, cy - r),
        (cx - r, cy - r + c),
        (cx - r, cy + r - c),
        (cx - r + c, cy + r),
        (cx + r - c, cy + r),
        (cx + r, cy + r - c),
    ]
    path: list[Cell] = [corners[0]]
    for target in corners[1:] + corners[:1]:
        while path[-1] != target:
            x, y = path[-1]
            path.append((x + (target[0] > x) - (target[0] < x), y + (target[1] > y) - (target[1] < y)))
    return path  # ends on corners[0]: closed


def _lay_lines(rng: random.Random, spec: DifficultySpec, n_lines: int) -> tuple[_Grid, list[list[Cell]], dict]:
    """Lay ``n_lines`` paths on a fresh grid; returns the grid, paths, and {"loop": i|None, "branch": (i, parent)}."""
    grid = _Grid(*spec.grid)
    paths: list[list[Cell]] = []
    info: dict = {"loop": None, "branch": None}
    lo, hi = spec.stations_per_line
    want_loop = n_lines >= 3 and rng.random() < spec.loop_probability
    want_branch = n_lines >= 3 and rng.random() < spec.branch_probability
    branch_slot = n_lines - 1 if want_branch else -1
    for i in range(n_lines):
        if i == 0 and want_loop:
            path = _loop_path(grid, rng)
            grid.add(i, path)
            paths.append(path)
            info["loop"] = i
            continue
        if i == branch_slot:
            made = _branch(rng, grid, i, paths, info, (lo, hi))
            if made is not None:
                paths.append(made)
                grid.add(i, made)
                continue
        for _ in range(60):
            path = _radial(rng, grid, i, paths, (lo, hi))
            if path is not None:
                break
        else:
            raise _Retry
        grid.add(i, path)
        paths.append(path)
    return grid, paths, info


class _Retry(Exception):
    """A city that could not be laid out with this draw; the caller redraws."""


def _radial(rng: random.Random, grid: _Grid, line: int, paths: list[list[Cell]], length: tuple[int, int]):
    """A line across the city, through one station of an earlier line when there is one."""
    lo, hi = length
    n = rng.randint(lo, hi)
    if paths:
        candidates = [c for c, users in grid.cell_lines.items() if len(users) < 2]
        candidates.sort()
        through = rng.choice(candidates or sorted(grid.cell_lines))
    else:
        through = (grid.width // 2 + rng.randint(-2, 2), grid.height // 2 + rng.randint(-2, 2))
    d = rng.randrange(8)
    before = rng.randint(n // 3, n - n // 3)
    start = _edge_point(rng, grid, through, (d + 4) % 8, before)
    end = _edge_point(rng, grid, through, d, n - before)
    if start == through or end == through:
        return None
    path = _walk(rng, grid, line, [start, through, end], max_len=hi + 2)
    if path is None or len(path) < max(5, lo - 2):
        return None
    if paths and not any(c in grid.cell_lines for c in path):
        return None
    return path


def _branch(rng: random.Random, grid: _Grid, line: int, paths: list[list[Cell]], info: dict, length: tuple[int, int]):
    """A branch: the trunk of a non-loop parent up to a split station, then its own track away from the parent."""
    parents = [i for i, p in enumerate(paths) if i != info["loop"] and len(p) >= 8]
    if not parents:
        return None
    for _ in range(40):
        parent = rng.choice(parents)
        trunk_all = paths[parent] if rng.random() < 0.5 else paths[parent][::-1]
        k = rng.randint(3, len(trunk_all) - 4)
        trunk = trunk_all[: k + 1]
        if any(len(grid.cell_lines.get(c, [])) >= grid.MAX_LINES_PER_CELL for c in trunk):
            continue
        heading = _direction_towards(trunk[-2], trunk[-1])
        d = (heading + rng.choice((1, -1))) % 8
        tail_len = rng.randint(4, max(5, length[0] - 2))
        end = _edge_point(rng, grid, trunk[-1], d, tail_len)
        if end == trunk[-1]:
            continue
        first = (trunk[-1][0] + DIRECTIONS[d][0], trunk[-1][1] + DIRECTIONS[d][1])
        if first == end or not grid.inside(first):
            continue
        # the tail starts by turning 45 degrees off the trunk, then walks on to the edge
        if frozenset((trunk[-1], first)) in grid.edges or first in grid.cell_lines:
            continue
        path = _walk(rng, grid, line, [first, end], max_len=len(trunk) + length[1], prefix=trunk + [first])
        if path is not None and len(path) - len(trunk) >= 3:
            info["branch"] = (line, parent)
            return path
    return None


# the city ---------------------------------------------------------------------------------------------------


def generate_city(seed: int | str, difficulty: str = "middle", *, country: str = "synthetic") -> SynthCity:
    """Generate one city for ``seed`` whose measured difficulty equals ``difficulty`` (easy, middle or hard).

    Deterministic: the same seed and difficulty give the same city (names, lines, layout).
    """
    if difficulty not in SPECS:
        raise ValueError(f"difficulty {difficulty!r} is not one of {MAP_DIFFICULTIES}")
    spec = SPECS[difficulty]
    rng = random.Random(f"rewardmap-synth:{seed}:{difficulty}")
    for _ in range(200):
        n_lines = rng.randint(*spec.lines)
        try:
            grid, paths, info = _lay_lines(rng, spec, n_lines)
        except _Retry:
            continue
        city = _assemble(rng, seed, difficulty, country, paths, info)
        if city is not None:
            return city
    raise RuntimeError(f"could not generate a {difficulty} city for seed {seed!r}")


def _assemble(
    rng: random.Random, seed: int | str, difficulty: str, country: str, paths: list[list[Cell]], info: dict
) -> SynthCity | None:
    """Name cells, lines and the city; check connectivity and the measured difficulty."""
    names = NameMaker(rng)
    cell_name: dict[Cell, str] = {}
    for path in paths:
        for c in path:
            if c not in cell_name:
                cell_name[c] = names.station()
    palette = list(PALETTE)
    rng.shuffle(palette)
    palette = palette[: len(paths)]
    titles = line_names(rng, len(paths), [p[0] for p in palette])
    lines = {title: [cell_name[c] for c in path] for title, path in zip(titles, paths, strict=True)}
    network = MetroNetwork(lines, name="")
    if _components(network) != 1:
        return None
    if classify_difficulty(len(lines), count_transfers(network)) != difficulty:
        return None
    city_name = names.city()
    network.name = city_name
    layout = MapLayout(
        title=city_name,
        positions={cell_name[c]: (float(c[0]), float(c[1])) for c in sorted(cell_name)},
        colors={title: hexcode for title, (_, hexcode) in zip(titles, palette, strict=True)},
        lines={title: list(stations) for title, stations in lines.items()},
    )
    loops = (titles[info["loop"]],) if info["loop"] is not None else ()
    branches = {titles[info["branch"][0]]: titles[info["branch"][1]]} if info["branch"] else {}
    return SynthCity(
        name=city_name,
        country=country,
        seed=str(seed),
        difficulty=difficulty,
        network=network,
        layout=layout,
        loops=loops,
        branches=branches,
    )


def _components(network: MetroNetwork) -> int:
    import networkx as nx

    return nx.number_connected_components(network.graph)
