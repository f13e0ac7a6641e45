"""Total, linear-time parsing of model output: route blocks (planning) and boxed / phrased answers (VQA).

Every function here accepts any string and never raises: model output is arbitrary text (empty, megabytes long,
binary junk), and a reward worker must not crash on it. No regular expression used here can backtrack
super-linearly: patterns are anchored and bounded, or plain ``str`` methods (find / split / partition) are used.

Two families:

* **Tolerant** (``parse_route_blocks``, ``extract_vqa_answer``, ``normalize_vqa_answer``): what the ``fixed`` and
  ``sparse`` reward modes read. Accepts the demanded layout plus the usual deviations (markdown bold, bullets,
  blank lines, Windows newlines, full-width colons, any case, blocks not separated by ``--``) and records whether
  each block was written exactly as the prompt demands (``RouteBlock.canonical``), which the format reward uses.
* **Strict** (``parse_route_blocks_strict``, ``extract_vqa_answer_released``): a re-implementation of the released
  RewardMap code's parsing, quirks included (see each docstring), so that ``paper`` mode reproduces the released
  reward exactly, and of the ReasonMap evaluation's parsing for the benchmark metrics.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Literal

from reward_fns.network import normalize_station

# ----------------------------------------------------------------------------------------------------------------
# Route blocks, tolerant
# ----------------------------------------------------------------------------------------------------------------

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
_NO_VIA = frozenset({"", "none", "无", "n/a", "na", "-", "--", "nil", "null"})


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


def split_via_stops(value: str) -> tuple[str, ...]:
    """Split a ``Via Stops:`` value on commas (either width), ideographic commas and semicolons; "None" -> ()."""
    if value.strip().strip(".").lower() in _NO_VIA:
        return ()
    parts = (_clean_value(p).rstrip(".。") for p in _VIA_SPLIT.split(value))
    return tuple(p for p in parts if p and p.lower() not in _NO_VIA)


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
            via = fields.get(FIELD_VIA)
            blocks.append(
                RouteBlock(
                    route_name=fields[FIELD_ROUTE],
                    departure=fields[FIELD_DEPARTURE],
                    arrival=fields[FIELD_ARRIVAL],
                    num_via_stops=fields.get(FIELD_NUM_VIA),
                    via_stops=None if via is None else split_via_stops(via),
                    canonical=canonical,
                )
            )
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


# ----------------------------------------------------------------------------------------------------------------
# Route blocks, strict (the released code's parsing)
# ----------------------------------------------------------------------------------------------------------------

WRONG = "Wrong"  # the released code's placeholder when a field's regex finds nothing
_STRICT_LABELS = ("Route Name:", "Departure Stop:", "Arrival Stop:")
_LOWER_LABELS = ("route name:", "departure stop:", "arrival stop:")


@dataclass(frozen=True, slots=True)
class StrictBlock:
    """A section as the released code records it.

    ``route_name`` is the stripped text after ``Route Name: `` up to the line end (``"Wrong"`` if absent);
    ``departure`` and ``arrival`` are already passed through ``normalize_station`` once (the released code
    normalises at parse time and again when comparing). ``num_via_stops`` / ``via_stops`` hold the raw text after
    the last ``Number of Via Stops: `` / ``Via Stops: `` of the section when requested (evaluation only).
    """

    route_name: str
    departure: str
    arrival: str
    num_via_stops: str | None = None
    via_stops: str | None = None
    exact_labels: bool = True  # the section has the three labels case-sensitively (the correctness check's test)


def _line_after(section: str, label: str) -> str | None:
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
) -> list[StrictBlock]:
    """Parse sections exactly as the released code does (linear time, never raises).

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
      ``arrival="line"`` (the benchmark's long questions): like the departure.
    - ``via="number"`` / ``"list"`` (benchmark long questions): raw text after the last ``Number of Via Stops: ``
      / ``Via Stops: ``, stripped; None when the label is missing (the benchmark code then reads the whole
      section, so any digit in it, such as a line number, counted as the via-stop count: not reproduced).
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
        route = _line_after(section, "Route Name: ")
        departure = _line_after(section, "Departure Stop: ")
        if arrival == "tail":
            arrival_value = normalize_station(section.rpartition("Arrival Stop:")[2].strip())
        else:
            raw_arrival = _line_after(section, "Arrival Stop: ")
            arrival_value = WRONG if raw_arrival is None else normalize_station(raw_arrival)
        num_via = via_list = None
        if via == "number" and "Number of Via Stops: " in section:
            num_via = section.rpartition("Number of Via Stops: ")[2].strip()
        elif via == "list" and "Via Stops: " in section:
            via_list = section.rpartition("Via Stops: ")[2].strip()
        blocks.append(
            StrictBlock(
                route_name=WRONG if route is None else route.strip(),
                departure=WRONG if departure is None else normalize_station(departure),
                arrival=arrival_value,
                num_via_stops=num_via,
                via_stops=via_list,
                exact_labels=exact,
            )
        )
    return blocks


# ----------------------------------------------------------------------------------------------------------------
# VQA answers
# ----------------------------------------------------------------------------------------------------------------

_BOX_OR_BRACE = re.compile(r"[bB][oO][xX][eE][dD]\{|[{}]")


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (nested braces balanced; any case of "boxed"), else None.

    "Last" is the box that closes last, so ``\\boxed{\\boxed{1}}`` gives ``\\boxed{1}``. One pass over the braces.
    """
    if not isinstance(text, str) or "{" not in text:
        return None
    depth = 0
    open_boxes: list[tuple[int, int]] = []  # (depth outside the box, content start)
    last: tuple[int, int] | None = None
    for match in _BOX_OR_BRACE.finditer(text):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            if depth == 0:
                continue  # a stray closing brace
            depth -= 1
            if open_boxes and open_boxes[-1][0] == depth:
                last = (open_boxes.pop()[1], match.start())
        else:  # "boxed{"
            open_boxes.append((depth, match.end()))
            depth += 1
    return None if last is None else text[last[0] : last[1]]


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


# Tolerant VQA ---------------------------------------------------------------------------------------------------

_ANSWER_PHRASE = re.compile(r"answer[ \t]{0,3}(?:(?:is|should[ \t]{1,3}be)[ \t]{0,3}[:：]?|[:：])", re.IGNORECASE)
_LATEX_WRAPPERS = ("\\textbf", "\\text", "\\mathrm", "\\mathbf", "\\mbox", "\\bf")
_MARKUP = str.maketrans("", "", "{}$*`\"'“”‘’")
_WORD = re.compile(r"[a-z]+|\d+")
_YES = frozenset({"yes", "true"})
_NO = frozenset({"no", "false"})
_LETTERS = {"a": 0, "b": 1, "c": 2, "d": 3}
_LETTER_WORDS = frozenset({"option", "choice", "answer"})
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_MAX_ANSWER = 200  # an answer is a word or a number; longer content is judged on its first characters


@dataclass(frozen=True, slots=True)
class VqaExtraction:
    """The raw answer text found in a response and where it came from (``boxed``, ``phrase`` or ``bare``)."""

    text: str
    source: Literal["boxed", "phrase", "bare"]


def extract_vqa_answer(text: str) -> VqaExtraction | None:
    """Tolerantly find the answer of a VQA response: last ``\\boxed{}``, else the last "answer is" phrase
    (rest of its line, first sentence), else the whole response when it is short (a bare "Yes" or "B")."""
    if not isinstance(text, str):
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        return VqaExtraction(boxed, "boxed")
    phrases = deque(_ANSWER_PHRASE.finditer(text), maxlen=1)  # keeps only the last match
    if phrases:
        last = phrases[0]
        tail = text[last.end() : last.end() + 4 * _MAX_ANSWER].partition("\n")[0].partition(". ")[0]
        return VqaExtraction(tail, "phrase")
    if len(text.strip()) <= 32:
        return VqaExtraction(text, "bare")
    return None


def _plain(raw: str) -> str:
    s = raw[: 4 * _MAX_ANSWER]
    for wrapper in _LATEX_WRAPPERS:
        s = s.replace(wrapper, "")
    return s.translate(_MARKUP).strip().lower()[:_MAX_ANSWER]


def normalize_vqa_answer(raw: str, question_type: str) -> str | int | None:
    """Map an extracted answer onto the question type's answer set, or None when it is not one unambiguous answer.

    TorF*: ``"yes"`` / ``"no"`` (also true/false); the first word decides, and content naming both polarities
    ("yes or no") is rejected. Counting1: option index 0-3 from a letter A-D (``B``, ``(B)``, ``B. 5``,
    ``Option B``); content naming two different letters is rejected. Counting2/3: the one distinct integer in
    the content (digits or an English number word up to twenty); several different numbers are rejected.
    """
    if not isinstance(raw, str):
        return None
    words = _WORD.findall(_plain(raw))
    if not words:
        return None
    if question_type in ("TorF1", "TorF2"):
        polar = {"yes" if w in _YES else "no" for w in words if w in _YES or w in _NO}
        first = words[0]
        if len(polar) == 1 and (first in _YES or first in _NO):
            return polar.pop()
        return None
    if question_type == "Counting1":
        if words[0] in _LETTER_WORDS and len(words) > 1:
            words = words[1:]
        letters = {w for w in words if w in _LETTERS}
        if words[0] in _LETTERS and len(letters) == 1:
            return _LETTERS[words[0]]
        return None
    if question_type in ("Counting2", "Counting3"):
        numbers = {int(w) for w in words if w.isdigit() and len(w) <= 6}
        numbers |= {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS}
        return numbers.pop() if len(numbers) == 1 else None
    return None


def first_integer(text: str) -> int | None:
    """The first run of ASCII digits in ``text`` as an int (at most 9 digits read), else None."""
    if not isinstance(text, str):
        return None
    match = _DIGITS.search(text)
    return None if match is None else int(match.group()[:9])


_DIGITS = re.compile(r"\d+", re.ASCII)
