"""Questions of all six types about any metro network, with exact answers computed from the graph.

Works on synthetic and real networks alike (``MetroNetwork``). Each question carries the ``GroundTruth`` the
reward needs, filled per the table in ``reward_fns.ground_truth``:

- TorF1 / TorF2: yes and no alternate (balanced within a city; a "no" needs two stations without a common
  line, or a station off the line, and is skipped when the network has none).
- Counting1: a pair on one non-loop line that no other line serves with a different count in between (so the
  answer is unambiguous on the map); options are the answer and three plausible distractors (two near, one
  far, as in the official example), answer = option index 0-3.
- Counting2: stations drawn half from transfer stations, so answers are not almost always 1.
- Counting3: one per city (the whole map has one answer).
- Planning: station pairs stratified by fewest transfers 0 / 1 / 2+ in ReasonMap's 20:15:5 proportion
  (fewer when a network cannot supply a bucket), templates short / long1 / long2 in turn; the gold
  minimum-transfer route is the reference route (``routes``: plan id -> rides with via stops in travel order,
  ``reward_fns.gold.reference_ride``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from data_prep import prompts
from reward_fns.gold import reference_ride
from reward_fns.ground_truth import PLANNING_TEMPLATES, VQA_TYPES, GroundTruth
from reward_fns.network import MetroNetwork, normalize_station

GENERATION_ORDER = (*VQA_TYPES, "planning")  # the order types draw from a city's random stream
TRANSFER_BUCKET_SHARES = (20, 15, 5)  # ReasonMap's per-map question quota: 0, 1, 2+ transfers
MAX_TRIES = 400


@dataclass(frozen=True)
class Question:
    """One question: its text (without the image tag), ground truth, and a key unique within its city."""

    text: str
    ground_truth: GroundTruth
    key: str

    @property
    def question_type(self) -> str:
        return self.ground_truth.question_type


@dataclass(frozen=True)
class CityMeta:
    """What the ground truth records about the map besides its network."""

    city: str
    country: str
    map_difficulty: str


def default_counts(total: int) -> dict[str, int]:
    """Split ``total`` questions of a city across the types: one Counting3, the rest evenly (planning last)."""
    if total < 1:
        raise ValueError("questions per city must be >= 1")
    counts = dict.fromkeys(GENERATION_ORDER, 0)
    counts["Counting3"] = 1
    rest = total - 1
    others = tuple(t for t in GENERATION_ORDER if t != "Counting3")
    for i, t in enumerate(others):
        counts[t] = rest // len(others) + (1 if i < rest % len(others) else 0)
    return counts


def generate_questions(
    network: MetroNetwork,
    meta: CityMeta,
    rng: random.Random,
    counts: dict[str, int],
    *,
    planning_templates: Sequence[str] = PLANNING_TEMPLATES,
) -> list[Question]:
    """Up to ``counts[type]`` distinct questions of each type (fewer where the network cannot supply them).

    Planning questions take ``planning_templates`` in turn (all three by default; the "released" reward mode
    can only credit "short", see ``reward_fns.reward_released.parse_route_blocks_strict``).
    """
    unknown = [t for t in planning_templates if t not in PLANNING_TEMPLATES]
    if unknown or not planning_templates:
        raise ValueError(
            f"planning templates {list(planning_templates)} must be a non-empty subset of {PLANNING_TEMPLATES}"
        )
    maker = _Maker(network, meta, rng, tuple(planning_templates))
    out: list[Question] = []
    makers: dict[str, Callable[[int], list[Question]]] = {
        "TorF1": maker.torf1,
        "TorF2": maker.torf2,
        "Counting1": maker.counting1,
        "Counting2": maker.counting2,
        "Counting3": maker.counting3,
        "planning": maker.planning,
    }
    for qtype in GENERATION_ORDER:
        n = counts.get(qtype, 0)
        if n > 0:
            out.extend(makers[qtype](n))
    return out


def is_loop(network: MetroNetwork, line: str) -> bool:
    """Whether a line's list closes on itself (first station repeated, or any station listed twice)."""
    norms = [normalize_station(s) for s in network.lines[line]]
    return len(set(norms)) != len(norms)


class _Maker:
    """Question generators sharing one network, its metadata and one random stream."""

    def __init__(self, network: MetroNetwork, meta: CityMeta, rng: random.Random, templates: tuple[str, ...]) -> None:
        self.templates = templates
        self.net = network
        self.meta = meta
        self.rng = rng
        self.stations = network.stations
        self.line_names = list(network.lines)
        self.line_sets = {line: {normalize_station(s) for s in st} for line, st in network.lines.items()}

    def _gt(self, qtype: str, **fields) -> GroundTruth:
        return GroundTruth(
            question_type=qtype,
            city=self.meta.city,
            country=self.meta.country,
            map_difficulty=self.meta.map_difficulty,
            network=self.net.to_dict(),
            **fields,
        )

    def _name(self, raw: str) -> str:
        """The network's canonical spelling of a station (a line may list another spelling)."""
        return self.net.canonical(raw) or raw

    def _two_on_line(self, line: str) -> tuple[str, str]:
        names = sorted({self._name(s) for s in self.net.lines[line]}, key=self.stations.index)
        a, b = self.rng.sample(names, 2)
        return a, b

    def _share_line(self, a: str, b: str) -> bool:
        return bool(set(self.net.lines_through(a)) & set(self.net.lines_through(b)))

    # VQA --------------------------------------------------------------------------------------------------
    def torf1(self, n: int) -> list[Question]:
        out, seen = [], set()
        first_yes = self.rng.random() < 0.5
        for i in range(n):
            want_yes = (i % 2 == 0) == first_yes
            for _ in range(MAX_TRIES):
                if want_yes:
                    line = self.rng.choice([ln for ln in self.line_names if len(self.line_sets[ln]) >= 2])
                    a, b = self._two_on_line(line)
                else:
                    a, b = self.rng.sample(self.stations, 2)
                    if self._share_line(a, b):
                        continue
                key = ("TorF1", *sorted((normalize_station(a), normalize_station(b))))
                if key not in seen:
                    seen.add(key)
                    answer = int(self._share_line(a, b))
                    gt = self._gt("TorF1", station_1=a, station_2=b, answer=answer)
                    out.append(Question(prompts.torf1(a, b), gt, f"TorF1:{len(out)}"))
                    break
        return out

    def torf2(self, n: int) -> list[Question]:
        out, seen = [], set()
        first_yes = self.rng.random() < 0.5
        for i in range(n):
            want_yes = (i % 2 == 0) == first_yes
            for _ in range(MAX_TRIES):
                line = self.rng.choice(self.line_names)
                if want_yes:
                    a = self._name(self.rng.choice(self.net.lines[line]))
                else:
                    off = [s for s in self.stations if not self.net.line_has(line, s)]
                    if not off:
                        continue
                    a = self.rng.choice(off)
                key = ("TorF2", line, normalize_station(a))
                if key not in seen:
                    seen.add(key)
                    answer = int(self.net.line_has(line, a))
                    gt = self._gt("TorF2", station_1=a, line=line, answer=answer)
                    out.append(Question(prompts.torf2(a, line), gt, f"TorF2:{len(out)}"))
                    break
        return out

    def counting1(self, n: int) -> list[Question]:
        out, seen = [], set()
        lines = [ln for ln in self.line_names if not is_loop(self.net, ln) and len(self.net.lines[ln]) >= 3]
        if not lines:
            return out
        for _ in range(n):
            for _ in range(MAX_TRIES):
                line = self.rng.choice(lines)
                stations = self.net.lines[line]
                i, j = sorted(self.rng.sample(range(len(stations)), 2))
                if j - i < 2 and self.rng.random() < 0.8:  # mostly at least one stop in between
                    continue
                a, b = self._name(stations[i]), self._name(stations[j])
                count = j - i - 1
                if not self._unambiguous_count(a, b, count):
                    continue
                key = ("Counting1", *sorted((normalize_station(a), normalize_station(b))))
                if key in seen:
                    continue
                seen.add(key)
                options, answer = self._options(count)
                gt = self._gt("Counting1", station_1=a, station_2=b, answer=answer, options=options)
                out.append(Question(prompts.counting1(a, b, options), gt, f"Counting1:{len(out)}"))
                break
        return out

    def _unambiguous_count(self, a: str, b: str, count: int) -> bool:
        """Every line serving both stations has the same number of stops between them."""
        na, nb = normalize_station(a), normalize_station(b)
        for line, members in self.line_sets.items():
            if na in members and nb in members:
                if is_loop(self.net, line) or len(self.net.stops_between(line, a, b)) != count:
                    return False
        return True

    def _options(self, count: int) -> tuple[list[str], int]:
        """The answer and three distinct non-negative distractors (two near it, one far), shuffled."""
        near = [c for c in (count - 2, count - 1, count + 1, count + 2, count + 3) if c >= 0]
        picks = self.rng.sample(near, 2)
        far_pool = [c for c in range(count + 4, count + 16) if c not in picks]
        far_pool += [c for c in range(max(0, count // 3)) if c not in picks and c != count]
        picks.append(self.rng.choice(far_pool))
        values = [count, *picks]
        self.rng.shuffle(values)
        return [str(v) for v in values], values.index(count)

    def counting2(self, n: int) -> list[Question]:
        out, seen = [], set()
        transfers = [s for s in self.stations if self.net.is_transfer(s)]
        for _ in range(n):
            for _ in range(MAX_TRIES):
                pool = transfers if transfers and self.rng.random() < 0.5 else self.stations
                a = self.rng.choice(pool)
                key = ("Counting2", normalize_station(a))
                if key in seen:
                    continue
                seen.add(key)
                gt = self._gt("Counting2", station_1=a, answer=len(self.net.lines_through(a)))
                out.append(Question(prompts.counting2(a), gt, f"Counting2:{len(out)}"))
                break
        return out

    def counting3(self, n: int) -> list[Question]:
        gt = self._gt("Counting3", answer=len(self.net.lines))
        return [Question(prompts.counting3(), gt, "Counting3:0")]

    # planning ---------------------------------------------------------------------------------------------
    def planning(self, n: int) -> list[Question]:
        transfers = self._transfer_counter()
        total = sum(TRANSFER_BUCKET_SHARES)
        quota = [round(n * share / total) for share in TRANSFER_BUCKET_SHARES]
        quota[0] += n - sum(quota)
        buckets: list[list[tuple[str, str]]] = [[], [], []]
        seen: set[tuple[str, str]] = set()
        for _ in range(MAX_TRIES * 4):
            if all(len(b) >= q for b, q in zip(buckets, quota, strict=True)):
                break
            a, b = self.rng.sample(self.stations, 2)
            t = transfers(a, b)
            key = (normalize_station(a), normalize_station(b))
            if t is None or key in seen:
                continue
            bucket = min(t, 2)
            if len(buckets[bucket]) < quota[bucket]:
                seen.add(key)
                buckets[bucket].append((a, b))
        pairs = [p for b in buckets for p in b]
        # a network without enough 1- or 2-transfer pairs: fill with any reachable pair
        for _ in range(MAX_TRIES):
            if len(pairs) >= n:
                break
            a, b = self.rng.sample(self.stations, 2)
            key = (normalize_station(a), normalize_station(b))
            if key not in seen and transfers(a, b) is not None:
                seen.add(key)
                pairs.append((a, b))
        templates = self.templates
        offset = self.rng.randrange(len(templates))
        out = []
        for k, (a, b) in enumerate(pairs):
            template = templates[(k + offset) % len(templates)]
            rides = self.net.min_transfer_route(a, b)
            route = [reference_ride(self.net, ride) for ride in rides]
            gt = self._gt(
                "planning",
                station_1=a,
                station_2=b,
                template=template,
                question_transfer_count=len(rides) - 1,
                routes={"0": route},
            )
            out.append(Question(prompts.planning(template, a, b), gt, f"planning:{k}"))
        return out

    def _transfer_counter(self) -> Callable[[str, str], int | None]:
        """Fewest transfers between two stations from line-to-line BFS distances (fast for all pairs)."""
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(self.line_names)
        for i, x in enumerate(self.line_names):
            for y in self.line_names[i + 1 :]:
                if self.line_sets[x] & self.line_sets[y]:
                    g.add_edge(x, y)
        dist = dict(nx.all_pairs_shortest_path_length(g))

        def transfers(a: str, b: str) -> int | None:
            best = None
            for la in self.net.lines_through(a):
                for lb in self.net.lines_through(b):
                    d = dist[la].get(lb)
                    if d is not None and (best is None or d < best):
                        best = d
            return best

        return transfers
