"""What the released benchmark code computes, exactly: the ``released`` rule set of ``reward_fns.benchmark``.

The published ReasonMap numbers were made by that code, so ours compare with them only when computed the same way:
every quirk is reproduced on purpose. ``reward_fns.benchmark_fixed`` corrects the eight slips listed below and
reuses everything else from here. Sources (read, not copied): fscdc/ReasonMap ``main.py`` / ``tools.py``
(planning: accuracy and map score, short questions and long templates 1 and 2), ``main_plus.py`` (ReasonMap-Plus,
commit 7ac3bcb), ``cal_metrics.py`` (aggregation), and open-compass/VLMEvalKit
``vlmeval/dataset/reasonmap_plus.py`` (a second ReasonMap-Plus reading).

Planning, per response (``released_planning_score``):

1. ``clean_string`` (``tools.clean_string``): drop ``Metro``, ``metro``, ``,``, ``*``, newlines; drop bracketed
   spans (either width); drop whitespace and ``-``; lower-case. It keeps "Station" and "站" and is not idempotent
   ("METRO Center" -> "metrocenter" -> "center"); model stops are cleaned when parsed and again when compared.
2. ``parse_sections``: split on every ``--``; keep non-blank sections holding ``Route Name:``, ``Departure Stop:``
   and ``Arrival Stop:`` (case-sensitive); a field is the rest of the line after its label and one space, and the
   line must end with a newline (else "Wrong"); the short arrival is everything after the last ``Arrival Stop:``;
   long template 1 reads the text after the last ``Number of Via Stops: `` and template 2 after the last
   ``Via Stops: ``, the whole section when the label is missing.
3. Accuracy: first departure = origin and last arrival = destination (after ``clean_string``); every route name,
   after the renames "八通" -> Line 1 and "大兴" -> Line 4 (every city, accuracy only), is a line of the network
   exactly; both stops of each block lie on it; each arrival is the next departure. Nothing else.
4. Map score, per reference plan, best kept (ties: the last): nothing unless the endpoints match (+1); per block
   and reference ride in order: route name +2, departure +1, arrival +1 (the reference line name from the
   per-city rules, stops with "站" / " Station" appended when missing); template 1 adds 4 per exact via count,
   else max(0, 4 - 4 x |error| / reference) (0 when the reference is 0), capped at 10; template 2 adds
   (10 x IoU + min(10, matched)) / 2. Capped at 10 (short) or 20 (long); +10 / +20 when correct.

Reference line names: in China ``"Line " + int(first digits)``, else the name without ``(...)`` and ``地铁``;
elsewhere the per-city rules (``LINE_RULES``, ``CITY_LINE_ALIASES``), but see slip 1. The eight slips:

1. Outside China the per-city rules run on the MODEL's route name, never the reference's. The rule
   ``([A-Z0-9]{1,2})`` matches nearly every name, so the later city rules never fire and a route name earns +2
   only when it has no ASCII letter or digit (an empty name does).
2. The reference arrival's suffix is tested on the departure, and the arrival becomes the departure when that
   already ends with it: in every template outside China (" Station"), in short questions in China ("站").
3. Template 2 is scored against a via list that only the China branch sets, which the released script leaks from
   the last Chinese ride it evaluated (or raises NameError before any): here every sample starts with it empty,
   as an exact re-implementation of one sample must, so outside China template-2 via points are always 0.
4. No weighted accuracy anywhere: ``cal_metrics.py`` prints plain means (the weight is the constant 1).
5. Stations compare after ``clean_string``, which keeps "Station" and "站".
6. A template-1 block without the count label reads the first digits of the whole block.
7. The model's template-2 list is split on "," only, pieces unstripped, and emptied unless it holds "站".
8. A Chinese reference line number is the first digits anywhere, inside the parenthesised terminals too.

Where the released script crashes or leaks, this module returns a value instead, documented at each place:
a reference ride missing a field or with an unreadable count (KeyError / ValueError there) earns nothing for
that field; a question whose ``routes`` is empty has no map score here (the script keeps the previous sample's
breakdown); a via count of more than 4300 digits (ValueError there) is read as its value.

ReasonMap-Plus per response: ``main_plus.py``'s extraction and exact match are the released training reward's
(``reward_fns.reward_released.extract_vqa_answer_released`` and ``vqa_correct_released``, one implementation for
both); VLMEvalKit's reading is ``plus_answer_vlmevalkit`` / ``plus_correct_vlmevalkit``. Aggregation:
``cal_metrics.py`` prints plain means over the 11 test cities for ReasonMap and, for ReasonMap-Plus, plain and
map-weighted (1.0 / 1.5 / 2.0) accuracy overall, for Counting and for TorF.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from reward_fns.ground_truth import GroundTruth
from reward_fns.line_names import BEIJING_RENAMES
from reward_fns.network import drop_parenthesised
from reward_fns.reward_released import INT_MAX_STR_DIGITS, line_after, python_int_of_text

# ----------------------------------------------------------------------------------------------------------------
# The point table (main.py), shared unchanged by the fixed rules
# ----------------------------------------------------------------------------------------------------------------

ENDPOINTS_POINTS = 1  # the gate: first departure and last arrival right
ROUTE_NAME_POINTS = 2  # per block whose route name matches the reference ride's line
STOP_POINTS = 1  # per matching departure, per matching arrival
VIA_COUNT_POINTS = 4  # per block, template 1, exact via-stop count
VIA_CAP = 10  # cap of the template-1 count points and of the template-2 matched stops
IOU_POINTS = 10  # template 2: 10 x IoU, averaged with the matched stops
MAP_SCORE_CAP = MappingProxyType({"short": 10, "long1": 20, "long2": 20})  # before the bonus; +cap when correct

# cal_metrics.py keeps only these cities (the ReasonMap test split) when it averages.
REASONMAP_TEST_CITIES = (
    "los_angeles",
    "miami",
    "toronto",
    "singapore",
    "auckland",
    "rome",
    "lisboa",
    "beijing",
    "hangzhou",
    "budapest",
    "geneva",
)

WRONG = "Wrong"  # main.py's placeholder for a field its regex cannot read
CHINA = "china"

# ----------------------------------------------------------------------------------------------------------------
# tools.clean_string
# ----------------------------------------------------------------------------------------------------------------

_CLEAN_DROPS = ("Metro", "metro", ",", "*", "\n")
_WHITESPACE_AND_HYPHENS = re.compile(r"[\s\-]+")


@functools.lru_cache(maxsize=65536)
def _clean_cached(s: str) -> str:
    for old in _CLEAN_DROPS:
        s = s.replace(old, "")
    return _WHITESPACE_AND_HYPHENS.sub("", drop_parenthesised(s)).lower()


def clean_string(s: str) -> str:
    """``tools.clean_string`` exactly (linear time): the benchmark's station and route-name normaliser.

    >>> clean_string("Dongzhimen Station (Transfer Station)")
    'dongzhimenstation'
    >>> clean_string(clean_string("METRO Center"))
    'center'
    """
    if len(s) > 512:  # model output: never grow the cache with it
        return _clean_cached.__wrapped__(s)
    return _clean_cached(s)


# ----------------------------------------------------------------------------------------------------------------
# Parsing (main.py), shared by both rule sets
# ----------------------------------------------------------------------------------------------------------------

_LABELS = ("Route Name:", "Departure Stop:", "Arrival Stop:")
NUM_VIA_LABEL = "Number of Via Stops: "
VIA_LABEL = "Via Stops: "


@dataclass(frozen=True, slots=True)
class AnswerSection:
    """One kept section of a planning answer, raw (not normalised), as ``main.py`` reads it.

    ``None`` marks a field whose regex fails (main.py then writes "Wrong"). ``arrival`` of a short answer is the
    stripped text after the section's last ``Arrival Stop:`` (never None). ``num_via_stops`` / ``via_stops`` hold
    the stripped text after the last ``Number of Via Stops: `` / ``Via Stops: `` of the section, None when the
    label is absent (main.py then takes ``section.strip()``, kept in ``text``).
    """

    route_name: str | None
    departure: str | None
    arrival: str | None
    num_via_stops: str | None
    via_stops: str | None
    text: str  # the section, stripped


def parse_sections(text: str, template: str) -> list[AnswerSection]:
    """The sections main.py keeps from a planning answer (module docstring, point 2); never raises."""
    if not isinstance(text, str) or not text:
        return []
    out: list[AnswerSection] = []
    for section in text.split("--"):
        stripped = section.strip()
        if not stripped or not all(label in section for label in _LABELS):
            continue
        name = line_after(section, "Route Name: ")
        if template == "short":
            arrival: str | None = section.rpartition("Arrival Stop:")[2].strip()
        else:
            arrival = line_after(section, "Arrival Stop: ")
        num_via = via = None
        if template == "long1" and NUM_VIA_LABEL in section:
            num_via = section.rpartition(NUM_VIA_LABEL)[2].strip()
        if template == "long2" and VIA_LABEL in section:
            via = section.rpartition(VIA_LABEL)[2].strip()
        out.append(
            AnswerSection(
                route_name=None if name is None else name.strip(),
                departure=line_after(section, "Departure Stop: "),
                arrival=arrival,
                num_via_stops=num_via,
                via_stops=via,
                text=stripped,
            )
        )
    return out


def apply_renames(name: str) -> str:
    """The two hard-coded Beijing renames, in order ("八通" wins when both occur)."""
    for marker, target in BEIJING_RENAMES:
        if marker in name:
            name = target
    return name


_DIGITS = re.compile(r"\d+")  # Unicode digits, as main.py's patterns


def read_int(digits: str) -> int:
    """``int()`` of a run of Unicode decimal digits, also past CPython's 4300-digit limit (where main.py raises)."""
    if len(digits) <= INT_MAX_STR_DIGITS:
        return int(digits)
    significant = "".join(str(unicodedata.decimal(ch)) for ch in digits).lstrip("0")
    return int(significant or "0") if len(significant) <= INT_MAX_STR_DIGITS else 10**INT_MAX_STR_DIGITS


def first_count(text: str) -> int:
    """main.py's via-stop count: the first run of (Unicode, full-width included) digits of ``text``, else 0."""
    match = _DIGITS.search(text)
    return 0 if match is None else read_int(match.group())


def python_int(value: Any) -> int | None:
    """``int(value)`` as main.py applies it to a reference count, or None where that raises."""
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        return python_int_of_text(value)
    return None


def via_count_points(answer_count: int, reference: int) -> float:
    """Template-1 points of one block: 4 if exact, else max(0, 4 - 4 x |error| / reference), 0 if reference is 0."""
    error = abs(answer_count - reference)
    if error == 0:
        return float(VIA_COUNT_POINTS)
    if reference == 0 or error >= reference:  # error >= reference gives <= 0 (and never a float overflow)
        return 0.0
    return VIA_COUNT_POINTS - (error / reference) * VIA_COUNT_POINTS


def china_reference_line(name: str) -> str:
    """main.py's China rule: "Line " + the first digits anywhere (slip 8), else the name without (...) and 地铁."""
    match = _DIGITS.search(name)
    if match:
        return "Line " + str(read_int(match.group()))
    return china_line_fallback(name)


def china_line_fallback(name: str) -> str:
    """main.py's China rule for a name without digits: drop ASCII ``(...)`` spans (lazy) and "地铁"."""
    return re.sub(r"\(.*?\)", "", name).replace("地铁", "")


# Per-city names the rules spell out, in main.py's order of appearance (exact equality with a name).
CITY_LINE_ALIASES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "auckland": MappingProxyType({"West": "Western Line", "Sth": "Southern Line", "East": "Eastern Line"}),
        "dubai": MappingProxyType({"MRed2": "Red Line", "MGrn": "Green Line", "MRed1": "Red Line"}),
        "kl": MappingProxyType(
            {
                "MRT Putrajaya Line": "Line 12",
                "Ampang Line": "Line 3",
                "LRT Kelana Jaya Line": "Line 5",
                "KTM Tanjung Malim - Pelabuhan Klang": "Line 2",
                "LRT Sri Petaling Line": "Line 4",
                "MRT Kajang Line": "Line 9",
                "KTM Batu Caves - Pulau Sebang/Tampin": "Line 1",
            }
        ),
    }
)
# main.py's line-name regexes match1 to match7, in its order, each yielding "Line " + group 1.
LINE_RULES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"Metro\s+([A-Z0-9]{1,2})[-\s]?Line",  # match1, los angeles: Metro A Line / Metro B-Line
        r"Metro\s+([A-Z0-9]{1,2})",  # match2, rome: Metro B
        r"Linea\s+([A-Z0-9]{1,2})",  # match3, rome: Linea C
        r"([A-Z0-9]{1,2})",  # match4, anything alphanumeric (rome: B1 -> B)
        r"M(\d+)",  # match5, budapest: M1-es Metróvonal
        r"([A-Z0-9]{1,2})\s+Line",  # match6, new york: K Line
        r"([A-Z0-9]{1,2})\s+Train",  # match7, new york: 5 Train
    )
)
CATCH_ALL_RULE = 3  # index of match4 in LINE_RULES: where the Rome "B1" -> "B" step applies


def rule_identifier(rule: int, group: str, city: str) -> str:
    """The identifier a line rule yields from its group (the Rome "B1" -> "B" step of match4)."""
    return "B" if rule == CATCH_ALL_RULE and group == "B1" and city == "rome" else group


def released_line_rewrite(name: str, city: str) -> str:
    """main.py's non-Chinese line rules applied, as released, to the MODEL's route name (slip 1)."""
    for index, rule in enumerate(LINE_RULES[: CATCH_ALL_RULE + 1]):
        match = rule.search(name)
        if match:
            return "Line " + rule_identifier(index, match.group(1), city)
    # Unreachable for any name with an ASCII letter or digit (match4 took it); kept in main.py's order.
    auckland = CITY_LINE_ALIASES["auckland"]
    if city == "auckland" and name in auckland:
        return auckland[name]
    match = LINE_RULES[4].search(name)
    if match:
        return "Line " + match.group(1)
    for alias_city in ("dubai", "kl"):
        if city == alias_city and name in CITY_LINE_ALIASES[alias_city]:
            return CITY_LINE_ALIASES[alias_city][name]
    for rule in LINE_RULES[5:]:
        match = rule.search(name)
        if match:
            return "Line " + match.group(1)
    return name


def ride_field(ride: Mapping[str, Any], key: str) -> str:
    """A reference ride's text field ('' when missing or not text: main.py would raise KeyError / TypeError)."""
    value = ride.get(key) if isinstance(ride, Mapping) else None
    return value if isinstance(value, str) else ""


def ride_via_stops(ride: Mapping[str, Any]) -> list[str]:
    """A reference ride's via stops as text ([] when missing: main.py would raise)."""
    value = ride.get("via_stops") if isinstance(ride, Mapping) else None
    return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []


# ----------------------------------------------------------------------------------------------------------------
# Planning: accuracy and map score
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanningScore:
    """One planning answer under one rule set: accuracy, best map score and the best plan's breakdown.

    ``map_score`` is None when the question has no reference routes. The breakdown fields are main.py's ``save_*``
    values: endpoints (0/1), route-name points, stop points (uncapped), and for long answers the capped
    template-1 count points and the template-2 via points.
    """

    acc: int
    map_score: float | None
    endpoints_points: int = 0
    route_name_points: int = 0
    stop_points: int = 0
    via_count_points: float = 0.0
    via_stops_points: float = 0.0


@dataclass(frozen=True, slots=True)
class _Block:
    """A section with main.py's values: stops already cleaned once, "Wrong" for unreadable fields."""

    route_name: str
    departure: str
    arrival: str
    count: int  # template 1: the via count read (0 when no digit)
    via: tuple[str, ...]  # template 2: raw pieces, emptied unless the text holds 站


def _released_blocks(sections: Sequence[AnswerSection], template: str) -> list[_Block]:
    blocks = []
    for s in sections:
        count, via = 0, ()
        if template == "long1":
            count = first_count(s.num_via_stops if s.num_via_stops is not None else s.text)
        elif template == "long2":
            raw = s.via_stops if s.via_stops is not None else s.text
            via = tuple(raw.split(",")) if "站" in raw else ()
        blocks.append(
            _Block(
                route_name=WRONG if s.route_name is None else s.route_name,
                departure=WRONG if s.departure is None else clean_string(s.departure),
                arrival=WRONG if s.arrival is None else clean_string(s.arrival),
                count=count,
                via=via,
            )
        )
    return blocks


@functools.lru_cache(maxsize=256)
def _cleaned_lines(content: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, frozenset[str]]:
    return {line: frozenset(clean_string(s) for s in stations) for line, stations in content}


def cleaned_network(network: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """Line -> its stations after ``clean_string`` (cached per network content)."""
    return _cleaned_lines(tuple((line, tuple(stations)) for line, stations in network.items()))


def route_accuracy(
    blocks: Sequence[Any], gt: GroundTruth, lines: Mapping[str, frozenset[str]], normalize: Callable[[str], str]
) -> int:
    """main.py's accuracy (module docstring, point 3) with stations compared after ``normalize`` (``clean_string``
    as released; the fixed rules pass the training normaliser, F5). ``lines``: line -> its normalised stations."""
    if not blocks or not endpoints_gate(blocks, gt, normalize):
        return 0
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        stations = lines.get(apply_renames(block.route_name))
        if stations is None:
            return 0
        departure, arrival = normalize(block.departure), normalize(block.arrival)
        if departure not in stations or arrival not in stations:
            return 0
        if i < last and arrival != normalize(blocks[i + 1].departure):
            return 0
    return 1


def endpoints_gate(blocks: Sequence[Any], gt: GroundTruth, normalize: Callable[[str], str]) -> bool:
    """The first departure is the origin and the last arrival the destination, after ``normalize``."""
    first, last = normalize(blocks[0].departure), normalize(blocks[-1].arrival)
    return first == normalize(gt.station_1) and last == normalize(gt.station_2)


def _plan_score(blocks: Sequence[_Block], plan: Sequence[Any], gt: GroundTruth) -> tuple[float, PlanningScore]:
    """(points before cap and bonus, breakdown) of a gated answer against one reference plan."""
    template, china = gt.template, gt.country == CHINA
    points = float(ENDPOINTS_POINTS)
    names = stops = 0
    count_points = 0.0
    matched = 0
    union: set[str] = set()
    inter: set[str] = set()
    for block, ride in zip(blocks, plan, strict=False):
        departure, arrival = ride_field(ride, "departure_stop"), ride_field(ride, "arrival_stop")
        ref_via: list[str] = []  # outside China main.py never sets it: empty at the start of every sample
        if china:
            ref_line = china_reference_line(ride_field(ride, "route_name"))
            ref_departure = departure if departure.endswith("站") else departure + "站"
            if template == "short":  # slip 2: the departure's suffix decides, and may replace the arrival
                ref_arrival = arrival + "站" if not departure.endswith("站") else departure
            else:
                ref_arrival = arrival if arrival.endswith("站") else arrival + "站"
            if template == "long2":
                ref_via = [v if v.endswith("站") else v + "站" for v in ride_via_stops(ride)]
        else:
            ref_line = released_line_rewrite(block.route_name, gt.city)  # slip 1: the model's own name
            ref_departure = departure if departure.endswith("Station") else departure + " Station"
            ref_arrival = arrival + " Station" if not departure.endswith("Station") else departure
        same_line = clean_string(ref_line) == clean_string(block.route_name)
        if same_line:
            points += ROUTE_NAME_POINTS
            names += ROUTE_NAME_POINTS
        if clean_string(ref_departure) == clean_string(block.departure):
            points += STOP_POINTS
            stops += STOP_POINTS
        if clean_string(ref_arrival) == clean_string(block.arrival):
            points += STOP_POINTS
            stops += STOP_POINTS
        if template == "long1":
            reference = python_int(ride.get("num_via_stops") if isinstance(ride, Mapping) else None)
            if reference is not None:
                count_points += via_count_points(block.count, reference)
        elif template == "long2":
            matched += sum(1 for piece in block.via if piece in ref_via)
            if same_line:
                union.update(ref_via)
                union.update(block.via)
                inter.update(set(ref_via) & set(block.via))
    return plan_points(template, points, names, stops, count_points, matched, union, inter)


def plan_points(
    template: str,
    points: float,
    names: int,
    stops: int,
    count_points: float,
    matched: int,
    union: set[str],
    inter: set[str],
) -> tuple[float, PlanningScore]:
    """A plan's points before cap and bonus, and their breakdown, from the per-ride sums: long templates add the
    via-count points (capped) or half of (10 x IoU + matched stops, capped); the same table under both rule sets."""
    via_points = 0.0
    if template != "short":
        count_points = min(float(VIA_CAP), count_points)
        iou = len(inter) / len(union) if union else 0
        via_points = (iou * IOU_POINTS + min(VIA_CAP, matched)) / 2
        points += via_points + count_points
    return points, PlanningScore(0, None, ENDPOINTS_POINTS, names, stops, count_points, via_points)


def best_map_score(
    acc: int,
    gated: bool,
    routes: Mapping[str, Any] | None,
    template: str,
    plan_score: Any,
) -> PlanningScore:
    """main.py's best-plan loop: cap, +cap when correct, best kept with ``>=`` (ties: the last plan's breakdown).

    ``plan_score(plan) -> (points, breakdown)`` scores a gated answer against one plan. With no reference routes
    the map score is None (main.py: 0, with the previous sample's breakdown leaking into the record).
    """
    if not routes:
        return PlanningScore(acc, None)
    cap = MAP_SCORE_CAP[template]
    best = PlanningScore(acc, 0.0)
    best_points = 0.0
    for plan in routes.values():
        points, breakdown = plan_score(plan if isinstance(plan, list | tuple) else []) if gated else (0.0, None)
        points = min(cap, points) + (cap if acc == 1 else 0)
        if points >= best_points:
            best_points = points
            best = PlanningScore(
                acc,
                float(points),
                *(
                    (0, 0, 0, 0.0, 0.0)
                    if breakdown is None
                    else (
                        breakdown.endpoints_points,
                        breakdown.route_name_points,
                        breakdown.stop_points,
                        breakdown.via_count_points,
                        breakdown.via_stops_points,
                    )
                ),
            )
    return best


def released_planning_score(
    gt: GroundTruth, text: str, sections: Sequence[AnswerSection] | None = None
) -> PlanningScore:
    """Accuracy and map score of one planning answer exactly as ``main.py`` computes them (module docstring).

    ``sections``: ``parse_sections(text, gt.template)`` when the caller has it already (both rule sets parse the
    same way). Outside China the reference stops get " Station" and the model's own line name is rewritten
    (slips 1, 2), so this correct answer keeps only its endpoints point, plus the bonus:

    >>> gt = GroundTruth(question_type="planning", city="demo", map_difficulty="easy", network={"Line 1": ["A", "B"]},
    ...                  station_1="A", station_2="B", routes={"0": [{"route_name": "Line 1", "departure_stop": "A",
    ...                  "arrival_stop": "B"}]})
    >>> score = released_planning_score(gt, "Route Name: Line 1\\nDeparture Stop: A\\nArrival Stop: B\\n")
    >>> score.acc, score.map_score, score.endpoints_points, score.route_name_points, score.stop_points
    (1, 11.0, 1, 0, 0)
    """
    if sections is None:
        sections = parse_sections(text, gt.template)
    blocks = _released_blocks(sections, gt.template)
    if not blocks:
        return PlanningScore(0, 0.0 if gt.routes else None)
    acc = route_accuracy(blocks, gt, cleaned_network(gt.network), clean_string)
    gate = endpoints_gate(blocks, gt, clean_string)
    return best_map_score(acc, gate, gt.routes, gt.template, lambda plan: _plan_score(blocks, plan, gt))


# ----------------------------------------------------------------------------------------------------------------
# ReasonMap-Plus: main_plus.py and VLMEvalKit
# ----------------------------------------------------------------------------------------------------------------


_VLM_BOX = re.compile(r"(?:\\boxed|boxed)\{", re.IGNORECASE)
_VLM_PHRASES = (
    "the final answer is",
    "final answer is",
    "the answer is",
    "answer is",
    "the correct answer is",  # never chosen: "answer is" comes first
    "correct answer is",
    "final answer:",
    "final:",
    "answer:",
    "ans:",
)
_VLM_CUT = re.compile(r"(?:\n|\. |\.$)")
_VLM_LETTER = re.compile(r"\b([ABCD])\b", re.IGNORECASE)
_VLM_INT = re.compile(r"[-+]?\d+")
_VLM_YES = frozenset({"yes", "y", "true", "t", "1"})
_VLM_NO = frozenset({"no", "n", "false", "f", "0"})
_VLM_LETTER_INDEX = MappingProxyType({"A": 0, "B": 1, "C": 2, "D": 3})


def _vlm_last_box(s: str) -> str | None:
    """Last match of ``(?:\\\\boxed|boxed)\\{([^}]*)\\}`` (non-overlapping, left to right), stripped; linear time."""
    last, pos = None, 0
    while True:
        match = _VLM_BOX.search(s, pos)
        if match is None:
            return last
        close = s.find("}", match.end())
        if close < 0:  # no later occurrence can close either
            return last
        last = s[match.end() : close].strip()  # ``\\text{...}`` can never match inside: the content has no "}"
        pos = close + 1


def _vlm_after_phrases(s: str) -> str:
    lowered = s.lower()
    for phrase in _VLM_PHRASES:
        if phrase in lowered:
            part = s[lowered.rfind(phrase) + len(phrase) :].strip()  # indices of the lower-cased text, as released
            return _VLM_CUT.split(part, maxsplit=1)[0].strip()
    return s.strip()


def _vlm_yesno(s: str) -> str | None:
    t = s.strip().lower()
    return "yes" if t in _VLM_YES else "no" if t in _VLM_NO else None


def _vlm_letter(s: str) -> str | None:
    match = _VLM_LETTER.search(s)
    return match.group(1).upper() if match else None


def _vlm_int(s: str) -> str | None:
    """``str(int(first [-+]?\\d+))``, or the digits themselves past CPython's digit limit (where VLMEvalKit raises)."""
    match = _VLM_INT.search(s)
    if match is None:
        return None
    try:
        return str(int(match.group()))
    except ValueError:
        return match.group()


def plus_answer_vlmevalkit(text: str, question_type: str) -> str:
    """VLMEvalKit's ``normalize_prediction``: last box, else an answer phrase, then the type's reading."""
    s = text.strip() if isinstance(text, str) else ""
    if not s:
        return ""
    boxed = _vlm_last_box(s)
    candidate = boxed if boxed else _vlm_after_phrases(s)
    kind = question_type.lower()
    if "torf" in kind:
        return _vlm_yesno(candidate) or _vlm_yesno(s) or candidate
    if "counting1" in kind:
        return _vlm_letter(candidate) or _vlm_letter(s) or candidate
    if kind.startswith("counting"):
        number = _vlm_int(candidate)
        if number is None:
            number = _vlm_int(s)
        return number if number is not None else candidate
    return candidate


def plus_correct_vlmevalkit(answer: str, gt: GroundTruth) -> bool:
    """VLMEvalKit's verdict on an answer from ``plus_answer_vlmevalkit`` (any exception there counts as wrong)."""
    kind = gt.question_type.lower()
    expected = int(gt.answer or 0)
    if "torf" in kind:
        return _vlm_yesno(answer) == ("yes" if expected == 1 else "no")
    if "counting1" in kind:
        letter = _vlm_letter(answer)
        return letter is not None and _VLM_LETTER_INDEX[letter] == expected
    if kind.startswith("counting"):
        value = python_int(answer)
        return value is not None and value == expected
    return answer.strip().lower() == str(expected)


# ----------------------------------------------------------------------------------------------------------------
# Aggregation (cal_metrics.py)
# ----------------------------------------------------------------------------------------------------------------


def plus_groups(question_type: str) -> tuple[str, ...]:
    """``analyze_results_v2_weighted``'s groups a ReasonMap-Plus type counts in: counting, or torf and torf1/2."""
    lowered = question_type.lower()
    if question_type in ("Counting1", "Counting2", "Counting3") or lowered.startswith("count"):
        return ("counting",)
    if lowered in ("torf1", "torf2"):
        return ("torf", lowered)
    if lowered.startswith("torf"):
        return ("torf",)
    return ()
