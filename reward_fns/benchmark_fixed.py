"""The ``fixed`` rule set: the released benchmark rules with their eight slips corrected, nothing else.

A benchmark number should measure the model, not the scorer's slips; the corrections are few and listed, so a
``fixed`` number differs from the ``released`` one only where a slip decided. Everything not listed here is
``reward_fns.benchmark_released`` unchanged: the section parse, labels, gate, point table, caps, bonus, best-plan
rule, the Beijing renames in accuracy, and route names compared after the official ``clean_string``. The
corrections, FN correcting slip N of ``reward_fns.benchmark_released``'s module docstring:

F1  Outside China the REFERENCE line name is mapped onto the network line it denotes, and the model's name is
    compared with that line: the reference itself when a network line has the same ``clean_string``; else the
    released city aliases (exact name); else the released regexes in released order (``LINE_RULES``: match1 to
    match7, match4 with Rome's B1 -> B), each giving the candidates "Line X" then "X", accepted only when a network
    line has the same ``clean_string``; else the reference unchanged.
F2  The reference arrival gets its suffix ("站" in China, " Station" elsewhere) by testing its own ending.
F3  Template 2 is scored in every city; the model's list is not emptied when it lacks "站"; nothing leaks.
F4  Difficulty-weighted accuracy uses 1 + 0.5 x (question level + map level) (``reward_fns.weights``); the
    released code's weight is the constant 1.
F5  Stations (gate, network membership, transfers, reference stops, via stops) compare after the training
    normaliser ``reward_fns.network.normalize_station`` (drops "Station" / a trailing "站", expands
    abbreviations), keeping the released call structure: a model stop is normalised when parsed and again at
    each comparison, every other name once per comparison (the double pass is not a no-op: "西单站 " -> "西单").
    It is the training normaliser of the reward's fixed mode, which drops the trailing "站" after whitespace and
    brackets too ("土桥站 Station"); on the 30 real networks that changes one station, Beijing's "东管头南站 "
    (``reward_fns.reward_released.normalize_station_released`` keeps the released order for the released reward).
F6  A template-1 block without ``Number of Via Stops: `` earns no count points (a present field with no digit
    still reads 0, as released).
F7  A template-2 list is split on , ， 、 ; ；, pieces stripped, each normalised (F5) and compared with the
    normalised reference stops; duplicates still count in the matched stops. A piece that names no station is
    dropped: empty after normalising ("", "-"), or saying the ride has none ("None", "无", "N/A", "No via stops",
    ``reward_fns.route_parsing.says_no_via_stops``, the training reward's reading), so a gold answer writing
    "Via Stops: None" scores as one with the field empty. A block whose field is empty without the label's space
    ("Via Stops:" ending its line) or absent has no list either (released: the whole section is its list, so
    those words joined the IoU's union and lowered the map score of a right answer).
F8  A Chinese reference line number is searched after removing the parenthesised terminals (both widths).

One more correction, beyond the eight slips: the Beijing renames (八通 -> Line 1, 大兴 -> Line 4, the
network folds those branches into Lines 1 and 4) also apply to the map score's route-name comparison, to the
model's name and to the reference line, so a reference "地铁八通线(...)" denotes Line 1 and a model writing
"八通线" for a Line 1 ride earns its +2 (released: accuracy only; there a digit-less 八通/大兴 reference matches
no answer at all).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reward_fns.benchmark_released import (
    CHINA,
    CITY_LINE_ALIASES,
    ENDPOINTS_POINTS,
    LINE_RULES,
    ROUTE_NAME_POINTS,
    STOP_POINTS,
    VIA_LABEL,
    WRONG,
    AnswerSection,
    PlanningScore,
    apply_renames,
    best_map_score,
    china_line_fallback,
    clean_string,
    endpoints_gate,
    first_count,
    parse_sections,
    plan_points,
    python_int,
    read_int,
    ride_field,
    ride_via_stops,
    route_accuracy,
    rule_identifier,
    via_count_points,
)
from reward_fns.ground_truth import GroundTruth
from reward_fns.network import drop_parenthesised, normalize_station
from reward_fns.route_parsing import says_no_via_stops

VIA_SEPARATORS = re.compile(r"[,，、;；]")  # F7
VIA_LABEL_BARE = VIA_LABEL.rstrip()  # F7: "Via Stops:" without the space main.py's pattern needs
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class _Block:
    """A section with the fixed rules' values: stops normalised once (F5), None count when the field is absent."""

    route_name: str
    departure: str
    arrival: str
    count: int | None  # template 1 (F6)
    via: tuple[str, ...]  # template 2 (F7), normalised


def _fixed_blocks(sections: Sequence[AnswerSection], template: str) -> list[_Block]:
    blocks = []
    for s in sections:
        count: int | None = None
        via: tuple[str, ...] = ()
        if template == "long1" and s.num_via_stops is not None:
            count = first_count(s.num_via_stops)
        elif template == "long2":
            via = _via_list(s)
        blocks.append(
            _Block(
                route_name=WRONG if s.route_name is None else s.route_name,
                departure=WRONG if s.departure is None else normalize_station(s.departure),
                arrival=WRONG if s.arrival is None else normalize_station(s.arrival),
                count=count,
                via=via,
            )
        )
    return blocks


def _via_list(section: AnswerSection) -> tuple[str, ...]:
    """F7: the normalised via stops a template-2 section names (none for "None", an empty or absent field)."""
    raw = section.via_stops
    if raw is None:  # no "Via Stops: " (with its space): "Via Stops:" ending its line, or no label at all
        raw = section.text.rpartition(VIA_LABEL_BARE)[2] if VIA_LABEL_BARE in section.text else ""
    pieces = (p.strip() for p in VIA_SEPARATORS.split(raw))
    normalised = (normalize_station(p) for p in pieces if not says_no_via_stops(p))
    return tuple(n for n in normalised if n)


@dataclass(frozen=True)
class _NetworkView:
    """A network as the fixed rules look it up: normalised stations per line, lines by ``clean_string``."""

    stations: dict[str, frozenset[str]]
    line_by_clean: dict[str, str]  # clean_string(line) -> the first such line


@functools.lru_cache(maxsize=256)
def _view(content: tuple[tuple[str, tuple[str, ...]], ...]) -> _NetworkView:
    line_by_clean: dict[str, str] = {}
    for line, _ in content:
        line_by_clean.setdefault(clean_string(line), line)
    return _NetworkView(
        {line: frozenset(normalize_station(s) for s in stations) for line, stations in content}, line_by_clean
    )


def network_view(network: Mapping[str, Sequence[str]]) -> _NetworkView:
    """The cached view of a network (one per distinct content)."""
    return _view(tuple((line, tuple(stations)) for line, stations in network.items()))


def suffixed(stop: str, country: str) -> str:
    """A reference stop with its suffix ("站" in China, " Station" elsewhere) unless it already ends with it (F2)."""
    if country == CHINA:
        return stop if stop.endswith("站") else stop + "站"
    return stop if stop.endswith("Station") else stop + " Station"


def china_line(name: str) -> str:
    """F8: "Line " + the first digits after removing the parenthesised terminals, else the released fallback."""
    match = _DIGITS.search(drop_parenthesised(name))
    if match:
        return "Line " + str(read_int(match.group()))
    return china_line_fallback(name)


def reference_line(name: str, city: str, view: _NetworkView) -> str:
    """F1: the network line a non-Chinese reference line name denotes (module docstring), else the name."""
    hit = view.line_by_clean.get(clean_string(name.strip()))
    if hit is not None:
        return hit
    alias = CITY_LINE_ALIASES.get(city, {}).get(name)
    if alias is not None:
        return alias
    for index, rule in enumerate(LINE_RULES):
        match = rule.search(name)
        if match is None:
            continue
        identifier = rule_identifier(index, match.group(1), city)
        for candidate in ("Line " + identifier, identifier):
            hit = view.line_by_clean.get(clean_string(candidate))
            if hit is not None:
                return hit
    return name


def same_line(answer_name: str, ref_line: str) -> bool:
    """The route-name comparison: ``clean_string`` of both sides after the Beijing renames."""
    return clean_string(apply_renames(answer_name)) == clean_string(apply_renames(ref_line))


def _plan_score(
    blocks: Sequence[_Block], plan: Sequence[Any], gt: GroundTruth, view: _NetworkView
) -> tuple[float, PlanningScore]:
    template, country = gt.template, gt.country
    points = float(ENDPOINTS_POINTS)
    names = stops = 0
    count_points = 0.0
    matched = 0
    union: set[str] = set()
    inter: set[str] = set()
    for block, ride in zip(blocks, plan, strict=False):
        raw_line = ride_field(ride, "route_name")
        ref_line = china_line(raw_line) if country == CHINA else reference_line(raw_line, gt.city, view)
        on_line = same_line(block.route_name, ref_line)
        if on_line:
            points += ROUTE_NAME_POINTS
            names += ROUTE_NAME_POINTS
        if normalize_station(suffixed(ride_field(ride, "departure_stop"), country)) == normalize_station(
            block.departure
        ):
            points += STOP_POINTS
            stops += STOP_POINTS
        if normalize_station(suffixed(ride_field(ride, "arrival_stop"), country)) == normalize_station(block.arrival):
            points += STOP_POINTS
            stops += STOP_POINTS
        if template == "long1" and block.count is not None:
            reference = python_int(ride.get("num_via_stops") if isinstance(ride, Mapping) else None)
            if reference is not None:
                count_points += via_count_points(block.count, reference)
        elif template == "long2":
            ref_via = [normalize_station(suffixed(v, country)) for v in ride_via_stops(ride)]
            matched += sum(1 for piece in block.via if piece in ref_via)
            if on_line:
                union.update(ref_via)
                union.update(block.via)
                inter.update(set(ref_via) & set(block.via))
    return plan_points(template, points, names, stops, count_points, matched, union, inter)


def fixed_planning_score(gt: GroundTruth, text: str, sections: Sequence[AnswerSection] | None = None) -> PlanningScore:
    """Accuracy and map score of one planning answer under the fixed rules (module docstring)."""
    if sections is None:
        sections = parse_sections(text, gt.template)
    blocks = _fixed_blocks(sections, gt.template)
    if not blocks:
        return PlanningScore(0, 0.0 if gt.routes else None)
    view = network_view(gt.network)
    acc = route_accuracy(blocks, gt, view.stations, normalize_station)  # F5: the training normaliser
    return best_map_score(
        acc,
        endpoints_gate(blocks, gt, normalize_station),
        gt.routes,
        gt.template,
        lambda plan: _plan_score(blocks, plan, gt, view),
    )
