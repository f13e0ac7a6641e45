"""A city's metro network (line -> ordered stations) with the station-name matching the official evaluation uses.

Built from ReasonMap's station JSON. Names are compared after ``normalize_station``; every query accepts raw
names as a model or a dataset writes them. Minimum-transfer routes come from networkx over the bipartite
station-line graph, where a path's line nodes are its rides.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

# Markers ReasonMap appends to station names; stripped before any use.
STATION_MARKERS = (" (Transfer Station)", " (Branch-starting Station)", "（换乘站）", "（支线起始站）")

_PARENTHESISED = re.compile(r"[\(\（][^\)\）]*[\)\）]")  # reference semantics; see drop_parenthesised
_SPACES_AND_HYPHENS = re.compile(r"[\s\-]+")


def strip_markers(name: str) -> str:
    """Remove ReasonMap's transfer/branch markers from a station name."""
    for marker in STATION_MARKERS:
        name = name.replace(marker, "")
    return name


def drop_parenthesised(s: str) -> str:
    """Remove every ``(...)`` span (either bracket width, mixed allowed), leftmost first, in linear time.

    Same result as ``_PARENTHESISED.sub("", s)`` (the official rule), whose backtracking is quadratic when many
    opening brackets have no closing one after them (20,000 such characters take seconds; model output can hold
    megabytes). Past the last closing bracket nothing can match, so the regex only sees the text up to it, where
    every opening bracket finds its closing one without backtracking.
    """
    last_close = max(s.rfind(")"), s.rfind("）"))
    if last_close < 0:
        return s
    return _PARENTHESISED.sub("", s[: last_close + 1]) + s[last_close + 1 :]


def replace_station_words(name: str) -> str:
    """The official word replacements of station cleaning, in the official order (quirks included: "Univ" also
    rewrites "University"); both normalisers start with them."""
    s = (
        name.replace("Metro", "")
        .replace("metro", "")
        .replace(",", "")
        .replace("*", "")
        .replace("\n", "")
        .replace("'", "")
        .replace("Univ.", "University")
        .replace("Univ", "University")
        .replace("Tech.", "Technology")
        .replace("Tech", "Technology")
        .replace("road", "lu")
        .replace("Road", "lu")
    )
    return s.replace("Station", "").replace("station", "").replace("Asian Games Village", "yayuncun")


def squeeze(s: str) -> str:
    """Drop whitespace and hyphens, lower-case (the last step of the official cleaning)."""
    return _SPACES_AND_HYPHENS.sub("", s).lower()


def cached_normaliser(normalise: Callable[[str], str]) -> Callable[[str], str]:
    """``normalise`` behind an LRU cache for station-sized names; longer text (model output can be megabytes) is
    normalised uncached, so the cache never grows with it."""
    cached = functools.lru_cache(maxsize=65536)(normalise)

    @functools.wraps(normalise)
    def normaliser(name: str) -> str:
        return normalise(name) if len(name) > 512 else cached(name)

    normaliser.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return normaliser


@cached_normaliser
def normalize_station(name: str) -> str:
    """Normalise a station name for comparison: the training normaliser of the ``fixed`` reward and the metrics.

    The official cleaning (``replace_station_words``, parenthesised text dropped, whitespace and hyphens dropped,
    lower-case) with its trailing "站" dropped LAST. The released code drops the "站" first, so "土桥站 Station"
    (a model writing the prompt's "xx Station"), "土桥站 (换乘)" and Beijing Line 16's own "东管头南站 " keep it
    there and never match "土桥" / "东管头南"; ``reward_fns.reward_released.normalize_station_released`` keeps that
    order for the released mode. The replacements are applied to both sides of every comparison, so only their
    agreement matters.

    >>> normalize_station("Dongzhimen Station (Transfer Station)")
    'dongzhimen'
    >>> normalize_station("西单站")
    '西单'
    >>> normalize_station("土桥站 Station"), normalize_station("东管头南站 ")
    ('土桥', '东管头南')
    """
    s = squeeze(drop_parenthesised(replace_station_words(name)))
    return s[:-1] if s.endswith("站") else s


@dataclass(frozen=True)
class Ride:
    """One block of a route: ride ``line`` from ``departure`` to ``arrival`` (canonical names)."""

    line: str
    departure: str
    arrival: str


class MetroNetwork:
    """Lines of one city, each an ordered station list, with normalised look-ups.

    >>> net = MetroNetwork({"Line 1": ["A", "B", "C"], "Line 2": ["C", "D"]})
    >>> net.lines_through("c")
    ['Line 1', 'Line 2']
    >>> [r.line for r in net.min_transfer_route("A", "D")]
    ['Line 1', 'Line 2']
    """

    def __init__(self, lines: dict[str, list[str]], *, name: str = "") -> None:
        if not isinstance(lines, dict) or not lines:
            raise ValueError(f"network {name!r}: must be a non-empty mapping of line name -> station list")
        self.name = name
        self.lines: dict[str, tuple[str, ...]] = {}
        self._line_norms: dict[str, tuple[str, ...]] = {}
        self._canonical: dict[str, str] = {}  # normalised station -> first display name seen
        self._lines_of: dict[str, list[str]] = {}  # normalised station -> lines through it, in line order
        for line, stations in lines.items():
            if not isinstance(line, str) or not isinstance(stations, (list, tuple)) or not stations:
                raise ValueError(f"network {name!r}: line {line!r} must map to a non-empty station list")
            clean = tuple(strip_markers(str(s)) for s in stations)
            norms = tuple(normalize_station(s) for s in clean)
            self.lines[line] = clean
            self._line_norms[line] = norms
            for display, norm in zip(clean, norms, strict=True):
                self._canonical.setdefault(norm, display)
                through = self._lines_of.setdefault(norm, [])
                if line not in through:
                    through.append(line)
        self._graph: nx.Graph | None = None

    # construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, source: str | Path | dict[str, Any], *, name: str = "") -> MetroNetwork:
        """Build from ReasonMap's station JSON: a dict, a JSON string, or a file path."""
        if isinstance(source, dict):
            return cls(source, name=name)
        text = str(source)
        if isinstance(source, Path) or not text.lstrip().startswith("{"):
            path = Path(source)
            return cls(json.loads(path.read_text(encoding="utf-8")), name=name or path.stem)
        return cls(json.loads(text), name=name)

    def to_dict(self) -> dict[str, list[str]]:
        """Line -> station list (markers stripped), the form embedded in ground truth."""
        return {line: list(stations) for line, stations in self.lines.items()}

    # look-ups ---------------------------------------------------------------------------------------------
    @property
    def stations(self) -> list[str]:
        """Every distinct station (canonical display names), in first-seen order."""
        return list(self._canonical.values())

    def has_station(self, name: str) -> bool:
        return normalize_station(name) in self._canonical

    def canonical(self, name: str) -> str | None:
        """The network's own spelling of ``name``, or None when no station matches."""
        return self._canonical.get(normalize_station(name))

    def has_line(self, line: str) -> bool:
        return line in self.lines

    def lines_through(self, station: str) -> list[str]:
        """Names of the lines serving ``station`` (empty when unknown)."""
        return list(self._lines_of.get(normalize_station(station), ()))

    def line_has(self, line: str, station: str) -> bool:
        """Whether ``line`` (exact name) serves ``station`` (any spelling)."""
        return normalize_station(station) in self._line_norms.get(line, ())

    def is_transfer(self, station: str) -> bool:
        return len(self.lines_through(station)) > 1

    def stops_between(self, line: str, a: str, b: str) -> list[str]:
        """Stations strictly between ``a`` and ``b`` along ``line`` (by list position, as the benchmark counts), in
        travel order: the order a rider from ``a`` to ``b`` passes them.

        >>> MetroNetwork({"L": ["A", "B", "C", "D"]}).stops_between("L", "D", "A")
        ['C', 'B']
        """
        norms = self._line_norms.get(line)
        if norms is None:
            raise KeyError(f"line {line!r} not in network {self.name!r}")
        na, nb = normalize_station(a), normalize_station(b)
        if na not in norms or nb not in norms:
            raise KeyError(f"{a!r} or {b!r} not on line {line!r}")
        i, j = norms.index(na), norms.index(nb)
        return list(self.lines[line][i + 1 : j]) if i <= j else list(self.lines[line][j + 1 : i])[::-1]

    # routes -----------------------------------------------------------------------------------------------
    @property
    def graph(self) -> nx.Graph:
        """Bipartite graph: station nodes ("s", norm) linked to the line nodes ("l", name) serving them."""
        if self._graph is None:
            g = nx.Graph()
            for line, norms in self._line_norms.items():
                for norm in norms:
                    g.add_edge(("l", line), ("s", norm))
            self._graph = g
        return self._graph

    def min_transfer_route(self, origin: str, destination: str) -> list[Ride]:
        """A route with the fewest rides from ``origin`` to ``destination`` (deterministic); [] if unreachable.

        Raises KeyError when either station is not in the network, or when they are the same station.
        """
        a, b = normalize_station(origin), normalize_station(destination)
        for raw, norm in ((origin, a), (destination, b)):
            if norm not in self._canonical:
                raise KeyError(f"station {raw!r} not in network {self.name!r}")
        if a == b:
            raise KeyError(f"origin and destination are the same station {origin!r}")
        try:
            path = nx.shortest_path(self.graph, ("s", a), ("s", b))
        except nx.NetworkXNoPath:
            return []
        rides = []
        for k in range(1, len(path) - 1, 2):
            departure, arrival = self._canonical[path[k - 1][1]], self._canonical[path[k + 1][1]]
            rides.append(Ride(line=path[k][1], departure=departure, arrival=arrival))
        return rides

    def min_transfers(self, origin: str, destination: str) -> int | None:
        """Fewest transfers between two stations (rides - 1), or None when unreachable."""
        route = self.min_transfer_route(origin, destination)
        return len(route) - 1 if route else None

    def __repr__(self) -> str:
        return f"MetroNetwork({self.name!r}, {len(self.lines)} lines, {len(self._canonical)} stations)"
