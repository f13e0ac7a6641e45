"""Tolerant, total, linear-time parsing of a planning answer into route blocks (what ``fixed`` and ``sparse`` read).

Accepts the demanded layout plus the usual deviations (markdown bold, bullets, blank lines, Windows newlines,
full-width colons, any case, blocks not separated by ``--``) and records whether each block was written exactly
as the prompt demands (``RouteBlock.canonical``). ``parse_answer_layout`` is the strict reading the ``fixed`` format
term uses: a response that is nothing but the demanded layout. Every function accepts any string and never raises;
no regular expression here can backtrack super-linearly (patterns are anchored and bounded).
The released code's own parser lives in ``reward_fns.reward_released``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reward_fns.network import drop_parenthesised

FIELD_ROUTE = "route_name"
FIELD_DEPARTURE = "departure"
FIELD_ARRIVAL = "arrival"
FIELD_NUM_VIA = "num_via_stops"
FIELD_VIA = "via_stops"

# The labels exactly as the prompts demand them (case, ASCII colon and one space).
CANONICAL_LABELS = {
    FIELD_ROUTE: "Route Name: ",
    FIELD_DEPARTURE: "Departure Stop: ",
    FIELD_ARRIVAL: "Arrival Stop: ",
    FIELD_NUM_VIA: "Number of Via Stops: ",
    FIELD_VIA: "Via Stops: ",
}

# Only a line's head is matched against this, so a pathological line costs O(head), never more. Leading junk
# (bullets, quote marks, heading hashes, bold markers) is one character class; the label follows, then optional
# bold markers, an ASCII or full-width colon, optional bold markers. Consecutive classes that share characters are
# separated by a literal, so the split between them is unambiguous and the match is linear.
_HEAD = 96
_LABEL = re.compile(
    r"[\s>*\-•·+#_]*(?:\d{1,3}[.)][\s*_]*)?"
    r"(route[ \t]*name|departure[ \t]*(?:stop|station)|arrival[ \t]*(?:stop|station)"
    r"|number[ \t]*of[ \t]*via[ \t]*(?:stops|stations)|via[ \t]*(?:stops|stations))"
    r"[ \t*_]*[:：][ \t*_]*",
    re.IGNORECASE,
)
_FIELD_OF_LABEL = {  # first three letters of a matched label -> field
    "rou": FIELD_ROUTE,
    "dep": FIELD_DEPARTURE,
    "arr": FIELD_ARRIVAL,
    "num": FIELD_NUM_VIA,
    "via": FIELD_VIA,
}
_SEPARATOR_CHARS = frozenset("-–—")
_VALUE_STRIP = " \t*_`\"'“”‘’"
_VIA_SPLIT = re.compile(r"[,，、;；]")
# What a "Via Stops:" value (or one piece of it) is when the ride has none, compared lower-cased after
# ``says_no_via_stops`` strips markup, brackets and a final full stop. No station of the 30 real networks is one.
NO_VIA_STOPS = frozenset(
    {"", "none", "no", "nil", "null", "nothing", "n/a", "na", "-", "--", "–", "—", "无", "没有"}
    | {"no stops", "no via stops", "no intermediate stops"}
)


@dataclass(frozen=True, slots=True)
class RouteBlock:
    """One ride of a planning answer, as written (values stripped of markup, not normalised).

    ``num_via_stops`` / ``via_stops`` are None when the block has no such field. ``canonical`` is True when every
    field line of the block used the exact label of the prompt at the start of its line and the block was
    delimited by ``--`` lines (not split off implicitly by a repeated field).
    """

    route_name: str
    departure: str
    arrival: str
    num_via_stops: str | None = None
    via_stops: tuple[str, ...] | None = None
    canonical: bool = True


def _is_separator(stripped: str) -> bool:
    return len(stripped) >= 2 and all(ch in _SEPARATOR_CHARS for ch in stripped)


def _clean_value(value: str) -> str:
    return value.strip().strip(_VALUE_STRIP).strip()


def says_no_via_stops(value: str) -> bool:
    """Whether a ``Via Stops:`` value, or one piece of it, says the ride has no via stops (``NO_VIA_STOPS``).

    Read by the training reward's parser and by the benchmark's ``fixed`` rules alike.

    >>> [says_no_via_stops(v) for v in ("None", "**N/A.**", "无。", "None (adjacent stations)", "Nonesuch")]
    [True, True, True, True, False]
    """
    return _clean_value(drop_parenthesised(value)).rstrip(".。").strip().lower() in NO_VIA_STOPS


def split_via_stops(value: str) -> tuple[str, ...]:
    """Split a ``Via Stops:`` value on commas (either width), ideographic commas and semicolons; "None" -> ()."""
    if says_no_via_stops(value):
        return ()
    parts = (_clean_value(p).rstrip(".。") for p in _VIA_SPLIT.split(value))
    return tuple(p for p in parts if p and not says_no_via_stops(p))


def parse_route_blocks(text: str) -> list[RouteBlock]:
    """Tolerantly parse the complete route blocks of a planning answer (linear time, never raises).

    A block is complete when it has a route name, a departure and an arrival; incomplete ones are dropped (as
    the released code drops sections missing a field). Blocks end at a line of two or more dashes, or implicitly
    when a field repeats inside the current block (``canonical`` is then False for the new block).
    """
    if not isinstance(text, str) or not text:
        return []
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks: list[RouteBlock] = []
    fields: dict[str, str] = {}
    canonical = True

    def close() -> None:
        if fields.get(FIELD_ROUTE) and fields.get(FIELD_DEPARTURE) and fields.get(FIELD_ARRIVAL):
            blocks.append(_route_block(fields, canonical=canonical))
        fields.clear()

    for line in text.split("\n"):
        head = line[:_HEAD]
        match = _LABEL.match(head)
        if match is None:
            if _is_separator(line.strip()):
                close()
                canonical = True
            continue
        field = _FIELD_OF_LABEL[match.group(1)[:3].lower()]
        if field in fields:  # a repeated field starts the next block without a separator line
            close()
            canonical = False
        line_canonical = line.lstrip(" \t").startswith(CANONICAL_LABELS[field])
        canonical = canonical and line_canonical
        fields[field] = _clean_value(line[match.end() :])
    close()
    return blocks


# Field order inside a block of the demanded layout: route, departure, arrival, then the via fields (any order).
_LAYOUT_ORDER = (FIELD_ROUTE, FIELD_DEPARTURE, FIELD_ARRIVAL)
_LAYOUT_LABELS = tuple((field, label.rstrip()) for field, label in CANONICAL_LABELS.items())


def _layout_field(stripped: str) -> tuple[str, str] | None:
    """(field, value) of a line that starts with a label exactly as the prompt writes it, else None."""
    for field, label in _LAYOUT_LABELS:
        if stripped.startswith(label):
            return field, stripped[len(label) :].strip()
    return None


def parse_answer_layout(text: str) -> list[RouteBlock] | None:
    """The blocks of a response that is nothing but the demanded layout, else None (linear time, never raises).

    The whole response is the answer: the prompt asks for "only one optimal route" in a format "strictly followed",
    and the released parser reads text after the last block into its arrival. Every line that is not blank is
    either a field line, starting with the prompt's own label (``Route Name:``, ``Departure Stop:``,
    ``Arrival Stop:``, ``Number of Via Stops:``, ``Via Stops:``; surrounding whitespace and the spacing after the
    colon are free), or a separator of two or more ASCII hyphens. Inside a block the route name, departure and
    arrival come in that order, then at most one of each via field. A separator closes a complete block (a
    trailing one is allowed); the last block needs none. Anything else (prose, markdown, a repeated or
    misplaced field, an incomplete block, an empty block) gives None. Values are returned stripped, not
    normalised; whether the template's via field is present is the caller's question.

    >>> [b.arrival for b in parse_answer_layout("Route Name: L1\\nDeparture Stop: A\\nArrival Stop: B\\n")]
    ['B']
    >>> parse_answer_layout("Sure!\\nRoute Name: L1\\nDeparture Stop: A\\nArrival Stop: B") is None
    True
    """
    if not isinstance(text, str):
        return None
    blocks: list[RouteBlock] = []
    fields: dict[str, str] = {}

    def close() -> bool:
        if len(fields) < len(_LAYOUT_ORDER):  # an empty or incomplete block
            return False
        blocks.append(_route_block(fields))
        fields.clear()
        return True

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        stripped = line.strip()
        if not stripped:
            continue
        if len(stripped) >= 2 and stripped.count("-") == len(stripped):
            if not close():
                return None
            continue
        found = _layout_field(stripped)
        if found is None:
            return None
        field, value = found
        position = len(fields)
        if field in fields or (position < len(_LAYOUT_ORDER) and field != _LAYOUT_ORDER[position]):
            return None
        fields[field] = value
    if fields and not close():
        return None
    return blocks or None


def first_integer(text: str) -> int | None:
    """The first run of decimal digits in ``text`` as an int (at most 9 digits read), else None.

    Any script's decimal digits count, so a full-width "６" (as CJK input methods type it) reads as 6.

    >>> first_integer("Number of Via Stops: ６"), first_integer("none")
    (6, None)
    """
    if not isinstance(text, str):
        return None
    match = _DIGITS.search(text)
    return None if match is None else int(match.group()[:9])


_DIGITS = re.compile(r"\d+")  # Unicode decimal digits (category Nd), all of which int() reads


def _route_block(fields: dict[str, str], *, canonical: bool = True) -> RouteBlock:
    """The ``RouteBlock`` of one block's parsed fields (route, departure and arrival present)."""
    via = fields.get(FIELD_VIA)
    return RouteBlock(
        route_name=fields[FIELD_ROUTE],
        departure=fields[FIELD_DEPARTURE],
        arrival=fields[FIELD_ARRIVAL],
        num_via_stops=fields.get(FIELD_NUM_VIA),
        via_stops=None if via is None else split_via_stops(via),
        canonical=canonical,
    )
