"""The released RewardMap reward, bit for bit: what ``compute_score(..., mode="released")`` computes, in one module.

Reward: ``W x (10 x correct + 0.5 x detail)`` (``reward_fns.score`` applies W), no format term. Everything a
response goes through in that mode is here, quirks included, each documented where it is reproduced:

0. station names (``normalize_station_released``): the released cleaning, which drops a trailing "站" before
   whitespace and parenthesised text, so "土桥站 Station" does not match "土桥" (``released_context`` builds the
   question's view with it);
1. parsing (``parse_route_blocks_strict``): split on every ``--``; keep sections that hold the three labels; the
   arrival is the rest of its section, so a trailing explanation or a long template's via-stop line becomes
   part of it and never matches the destination;
2. line names (``released_line``): the two Beijing renames applied in every city, then an exact line name;
3. correctness (``released_reward_terms``): ``reward_fns.correctness.route_correct`` over the sections whose labels
   are written case-sensitively;
4. detail (``released_detail``): the table in ``reward_fns.detail``, with the off-by-one over-length penalty and
   no floor;
5. VQA (``extract_vqa_answer_released`` then ``vqa_correct_released``): the released answer extraction and its
   exact-match rule.

The released benchmark reuses ``line_after`` (``reward_fns.benchmark_released``) and the VQA reading (``main_plus.py``
reads ReasonMap-Plus answers the same way; ``reward_fns.benchmark``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reward_fns.correctness import endpoints_match, expected_vqa_answer, route_correct
from reward_fns.detail import (
    BLOCK_POINTS,
    DETAIL_MAX,
    DIRECT_BLOCK_POINTS,
    ENDPOINTS_POINTS,
    OVERLENGTH_PENALTY,
    TRANSFER_POINTS,
)
from reward_fns.ground_truth import COUNT_TYPES, OPTION_LETTERS, OPTION_TYPES, YES_NO_TYPES, GroundTruth
from reward_fns.line_names import BEIJING_RENAMES
from reward_fns.network import cached_normaliser, drop_parenthesised, normalize_station, replace_station_words, squeeze
from reward_fns.question_context import Leg, Normaliser, QuestionContext, question_context

RELEASED_ALPHA = 0.5
_LETTER_INDEX = {letter.lower(): index for index, letter in enumerate(OPTION_LETTERS)}  # {"a": 0, ..., "d": 3}
# CPython's default limit on the decimal digits int() converts (``sys.int_info.default_max_str_digits``): the
# official scripts ran under it, so an answer with more digits is wrong there (ValueError), whatever this process sets.
INT_MAX_STR_DIGITS = 4300
_DECIMAL_DIGIT = re.compile(r"\d")  # what int() counts: Unicode decimal digits (category Nd), as str.isdecimal

# ----------------------------------------------------------------------------------------------------------------
# Station names
# ----------------------------------------------------------------------------------------------------------------


@cached_normaliser
def normalize_station_released(name: str) -> str:
    """The released ``clean_string``: the official cleaning with the trailing "站" dropped BEFORE parenthesised text,
    whitespace and hyphens, so "土桥站 Station" stays "土桥站" (``reward_fns.network.normalize_station`` drops it
    last).

    >>> normalize_station_released("土桥站 Station"), normalize_station_released("土桥站")
    ('土桥站', '土桥')
    """
    s = replace_station_words(name)
    if s.endswith("站"):
        s = s[:-1]
    return squeeze(drop_parenthesised(s))


def released_context(ground_truth: str | GroundTruth | Mapping[str, Any]) -> QuestionContext:
    """The question's cached view with the released station normaliser (origin, destination, line stations)."""
    return question_context(ground_truth, normalize=normalize_station_released)


# ----------------------------------------------------------------------------------------------------------------
# Route blocks
# ----------------------------------------------------------------------------------------------------------------

WRONG = "Wrong"  # the released code's placeholder when a field's regex finds nothing
_STRICT_LABELS = ("Route Name:", "Departure Stop:", "Arrival Stop:")
_LOWER_LABELS = ("route name:", "departure stop:", "arrival stop:")


@dataclass(frozen=True, slots=True)
class StrictBlock:
    """A section as the released code records it.

    ``route_name`` is the stripped text after ``Route Name: `` up to the line end (``"Wrong"`` if absent);
    ``departure`` and ``arrival`` are already passed through the parse's normaliser once (the released code
    normalises at parse time and again when comparing). ``num_via_stops`` / ``via_stops`` hold the raw text after
    the last ``Number of Via Stops: `` / ``Via Stops: `` of the section when requested (evaluation only).
    """

    route_name: str
    departure: str
    arrival: str
    num_via_stops: str | None = None
    via_stops: str | None = None
    exact_labels: bool = True  # the section has the three labels case-sensitively (the correctness check's test)


def line_after(section: str, label: str) -> str | None:
    """Emulate ``re.search(label + r"(.*?)\\n", section).group(1)``: the rest of the line after the first label.

    The regex fails at an occurrence on the last, unterminated line, and every later occurrence is on that same
    line, so only the first occurrence matters.
    """
    start = section.find(label)
    if start < 0:
        return None
    start += len(label)
    end = section.find("\n", start)
    return None if end < 0 else section[start:end]


def parse_route_blocks_strict(
    text: str,
    *,
    lowercase_check: bool = False,
    arrival: Literal["tail", "line"] = "tail",
    via: Literal["number", "list"] | None = None,
    normalize: Normaliser = normalize_station,
) -> list[StrictBlock]:
    """Parse sections exactly as the released code does (linear time, never raises).

    Stops are normalised with ``normalize`` (the released reward passes ``normalize_station_released``). The
    benchmark reads its sections with its own ``reward_fns.benchmark_released.parse_sections``; no caller passes
    ``arrival="line"`` or ``via`` (only tests do).

    - The text is split on every ``--`` (anywhere, not only on separator lines); blank sections are skipped.
    - A section is kept only if it contains ``Route Name:``, ``Departure Stop:`` and ``Arrival Stop:``:
      case-sensitively in the correctness check (``lowercase_check=False``), case-insensitively in the released
      detail reward (``lowercase_check=True``; ``exact_labels`` then tells which sections the correctness check
      keeps, so one parse serves both).
    - Route name: first ``Route Name: `` (with the space) up to a newline, stripped; else ``"Wrong"``.
    - Departure: same with ``Departure Stop: ``, normalised; else ``"Wrong"``.
    - Arrival (``arrival="tail"``, training code and the benchmark's short questions): everything after the last
      ``Arrival Stop:`` of the section, stripped and normalised, so trailing lines (a via-stop count, an
      explanation) become part of it; without that label (possible under ``lowercase_check``) the whole section.
      ``arrival="line"``: like the departure.
    - ``via="number"`` / ``"list"``: raw text after the last ``Number of Via Stops: `` / ``Via Stops: ``,
      stripped; None when the label is missing.

    >>> [(b.route_name, b.departure, b.arrival) for b in parse_route_blocks_strict(
    ...     "Route Name: Line 1\\nDeparture Stop: Alder\\nArrival Stop: Elm\\nNumber of Via Stops: 3\\n")]
    [('Line 1', 'alder', 'elmnumberofviastops:3')]
    """
    if not isinstance(text, str) or not text:
        return []
    blocks: list[StrictBlock] = []
    for section in text.split("--"):
        if not section.strip():
            continue
        exact = all(label in section for label in _STRICT_LABELS)
        if not exact and not (lowercase_check and all(label in section.lower() for label in _LOWER_LABELS)):
            continue
        route = line_after(section, "Route Name: ")
        departure = line_after(section, "Departure Stop: ")
        if arrival == "tail":
            arrival_value = normalize(section.rpartition("Arrival Stop:")[2].strip())
        else:
            raw_arrival = line_after(section, "Arrival Stop: ")
            arrival_value = WRONG if raw_arrival is None else normalize(raw_arrival)
        num_via = via_list = None
        if via == "number" and "Number of Via Stops: " in section:
            num_via = section.rpartition("Number of Via Stops: ")[2].strip()
        elif via == "list" and "Via Stops: " in section:
            via_list = section.rpartition("Via Stops: ")[2].strip()
        blocks.append(
            StrictBlock(
                route_name=WRONG if route is None else route.strip(),
                departure=WRONG if departure is None else normalize(departure),
                arrival=arrival_value,
                num_via_stops=num_via,
                via_stops=via_list,
                exact_labels=exact,
            )
        )
    return blocks


def released_line(name: str, ctx: QuestionContext) -> str | None:
    """The released code's rule: apply the Beijing renames (in every city), then the name must be a line exactly."""
    for marker, target in BEIJING_RENAMES:
        if marker in name:
            name = target
    return name if ctx.index is not None and name in ctx.index.line_stations else None


def released_legs(blocks: Sequence[StrictBlock], ctx: QuestionContext) -> list[Leg]:
    """Legs of strictly parsed blocks, as the released code compares them.

    Stops were normalised at parse time and are normalised again here with the context's normaliser (the released
    code calls ``clean_string`` on already-cleaned stops), which differs from one pass only on odd input such as
    "站站" or "METRO".
    """
    return [Leg(released_line(b.route_name, ctx), ctx.normalize(b.departure), ctx.normalize(b.arrival)) for b in blocks]


def released_reward_terms(text: str, ctx: QuestionContext) -> tuple[bool, float]:
    """(correct, detail) of a planning answer as the released reward decides them; ``ctx`` from ``released_context``.

    One parse serves both: the detail reward reads sections case-insensitively, correctness only those whose
    labels are written exactly.
    """
    strict = parse_route_blocks_strict(text, lowercase_check=True, normalize=ctx.normalize)
    legs = released_legs(strict, ctx)
    exact = [leg for leg, block in zip(legs, strict, strict=True) if block.exact_labels]
    return route_correct(exact, ctx), released_detail(legs, ctx, ctx.gt.question_transfer_count)


def released_detail(legs: Sequence[Leg], ctx: QuestionContext, transfers: int) -> float:
    """The released detail reward over legs from the lower-case-checked strict parse (see the module table)."""
    if ctx.index is None or not endpoints_match(legs, ctx):
        return 0.0
    stations = ctx.index.line_stations
    score = ENDPOINTS_POINTS
    last = len(legs) - 1
    for i, leg in enumerate(legs):
        if i + 1 > transfers:
            score -= OVERLENGTH_PENALTY
        if leg.line is None:
            continue
        if transfers == 0:
            if leg.line in ctx.direct_lines:
                score += DIRECT_BLOCK_POINTS
        else:
            score += BLOCK_POINTS
        on_line = stations[leg.line]
        if leg.departure in on_line and leg.arrival in on_line and i < last:
            if leg.arrival == legs[i + 1].departure and not i + 1 > transfers:
                score += TRANSFER_POINTS
    return min(score, DETAIL_MAX)


# ----------------------------------------------------------------------------------------------------------------
# VQA answers
# ----------------------------------------------------------------------------------------------------------------

_RELEASED_ANSWER_FLAGS = ("the final answer is", "the answer is", "the correct answer is", "the answer should be")


def extract_vqa_answer_released(text: str) -> str:
    """The answer string exactly as the released code extracts it (never raises; linear time).

    Without ``oxed{`` in the response, each phrase of ``_RELEASED_ANSWER_FLAGS`` in turn, first lower-case then with a
    capital "The", cuts the text to what follows its last occurrence and, if it occurred, to that text's first
    line and first sentence. With several ``oxed{`` the text is cut to ``\\boxed{`` + what follows the last one.
    The result goes through ``find_math_answer``, then ``.rstrip('.').lstrip(':').strip()``.
    """
    if not isinstance(text, str):
        return ""
    s = text
    if "oxed{" not in s:
        for flag in _RELEASED_ANSWER_FLAGS:
            for variant in (flag, flag.replace("the", "The")):
                found = variant in s
                s = s.rpartition(variant)[2].strip()
                if found:
                    s = s.partition("\n")[0].partition(". ")[0]
    elif s.count("oxed{") > 1:
        s = "\\boxed{" + s.rpartition("oxed{")[2]
    return find_math_answer(s).rstrip(".").lstrip(":").strip()


_MATH_REPLACEMENTS = (
    (" ", ""),
    ("\\,", ""),
    ("∞", "\\infty"),
    ("+\\infty", "\\infty"),
    ("\\\\", "\\"),
    ("\n", ""),
    ("\\text", ""),
    ("\\mbox", ""),
    ("bmatrix", "pmatrix"),
    ("\\left", ""),
    ("\\right", ""),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("{m}^3", ""),
    ("m^3", ""),
    ("{units}", ""),
    ("units", ""),
    ("{km}", ""),
    ("km", ""),
)
_STRIP_REPLACEMENTS = (
    ("\n", ""),
    ("\\!", ""),
    ("\\\\", "\\"),
    ("tfrac", "frac"),
    ("dfrac", "frac"),
    ("\\left", ""),
    ("\\right", ""),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("\\$", ""),
    ("$", ""),
)


def find_math_answer(s: str) -> str:
    """The released ``find_math_answer`` (with its ``_strip_string``), re-implemented without regex backtracking.

    Lower-cases; drops ``{}``; takes from the first ``oxed{`` to the last ``}`` (the greedy ``oxed{(.*)}``), or
    the whole text; cuts at a ``}`` that precedes any ``{``; keeps what follows the last ``=`` and ``\\approx``;
    strips LaTeX spacing, units and markup. Steps that only rewrite expressions containing ``sqrt``, a fraction
    ``a/b`` or ``0.5`` into other LaTeX are omitted: their outputs are neither yes/no, a letter nor an integer,
    and neither are their inputs, so no VQA verdict can change.
    """
    s = s.lower()
    if "{}" in s:
        s = s.replace("{}", "")
    start, end = s.find("oxed{"), s.rfind("}")
    ans = s[start + 5 : end] if start >= 0 and end >= start + 5 else s
    close, open_ = ans.find("}"), ans.find("{")
    if close != -1 and (open_ == -1 or close < open_):
        ans = ans[:close]
    ans = ans.rpartition("=")[2]
    ans = ans.rpartition("\\approx")[2]
    for old, new in _MATH_REPLACEMENTS:
        ans = ans.replace(old, new)
    return _strip_string(ans)


def _strip_string(s: str) -> str:
    for old, new in _STRIP_REPLACEMENTS:
        s = s.replace(old, new)
    s = s.partition("\\text{ ")[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if s.count("=") == 1:
        s = s.rpartition("=")[2]
    if s.count("\\approx") == 1:
        s = s.rpartition("\\approx")[2]
    return s.replace(" ", "")


def python_int_of_text(text: str) -> int | None:
    """``int(text)`` as the official scripts' CPython reads it (default digit limit), or None where that raises.

    CPython's ``PyLong_FromString`` limits DIGITS, not characters: surrounding whitespace, one sign and single
    underscores between digits are free, leading zeros count, a Unicode digit counts one (checked with CPython
    3.11: "+" and 4,300 digits, or 2,201 digits joined by 2,200 underscores, convert; 4,301 digits raise).
    Digits are counted here first, stopping at the 4,301st, so a process that raised or disabled its limit
    (``PYTHONINTMAXSTRDIGITS``) still judges as the official run and never converts a long answer (int() is
    quadratic in its digits); nothing in the recipe lowers the limit, which would refuse more.

    >>> python_int_of_text(" +0_3 "), python_int_of_text("３"), python_int_of_text("3.0")
    (3, 3, None)
    >>> python_int_of_text("+" + "0" * 4299 + "3"), python_int_of_text("0" * 4300 + "3")
    (3, None)
    """
    if not isinstance(text, str):
        return None
    if len(text) > INT_MAX_STR_DIGITS:
        over = itertools.islice(_DECIMAL_DIGIT.finditer(text), INT_MAX_STR_DIGITS, None)
        if next(over, None) is not None:
            return None
    try:
        return int(text)
    except ValueError:
        return None


def vqa_correct_released(answer: str, gt: GroundTruth) -> bool:
    """The released exact-match rule on an answer from ``extract_vqa_answer_released``.

    TorF: ``answer.lower()`` equals "yes"/"no". Counting2/3: ``int(answer)`` (Python's int: signs, surrounding
    whitespace, underscores and non-ASCII decimal digits accepted, at most 4,300 digits: ``python_int_of_text``)
    equals the ground truth. Counting1: the lower-case answer is one letter a-d whose index equals the ground truth.
    """
    qtype = gt.question_type
    if qtype in YES_NO_TYPES:
        return answer.lower() == expected_vqa_answer(gt)
    if qtype in COUNT_TYPES:
        value = python_int_of_text(answer)
        return value is not None and value == gt.answer
    if qtype in OPTION_TYPES:
        return _LETTER_INDEX.get(answer.lower(), -1) == gt.answer
    return False
