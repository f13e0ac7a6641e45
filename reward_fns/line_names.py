"""Line names: the key two spellings of one line share, and how a response's line name is resolved onto the network.

Two key rules, for two kinds of names. ``line_key`` (case and whitespace ignored: "line 1", "Line1" and "Line 1")
reads a line name a model or a question writes for a line of the map: everything but case and spacing can carry
meaning there ("S1" vs "S-1", "1-2" vs "12"), and it decides the fixed reward. ``reference_line_key`` (also
punctuation ignored) reads the benchmark's map-app names ("M1-es Metróvonal", "Line (A)"), which add punctuation of
their own; it is only one of ``match_line_name``'s steps, and a key shared by two lines matches neither.
The Beijing renames are the released code's hard-coded ones (Batong runs through to Line 1, Daxing to Line 4);
the released reward applies them in every city (``reward_fns.released.released_line``), the tolerant resolver only
in Beijing (``resolve_line``). ``match_line_name`` maps a benchmark reference's map-app line name onto the
network line it denotes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from reward_fns.network import drop_parenthesised

# The released code's hard-coded renames, applied in this order to every route name.
BEIJING_RENAMES = (("八通", "Line 1"), ("大兴", "Line 4"))
# Cities where the tolerant resolver applies them (elsewhere they would map foreign names onto unrelated lines).
RENAME_CITIES = frozenset({"beijing"})

_SPACES = re.compile(r"\s+")
_MAX_LINE_NAME = 200  # longer "line names" are junk; never build keys from megabytes


def line_key(name: str) -> str:
    """Case- and whitespace-insensitive key of a line name ("line 1" and "Line1" match "Line 1")."""
    return _SPACES.sub("", name[:_MAX_LINE_NAME].strip().strip("*_`.").casefold())


def reference_line_key(name: str) -> str:
    """``line_key`` with punctuation dropped too: the key of a map-app reference name (module docstring)."""
    return "".join(ch for ch in line_key(name) if ch.isalnum())


def resolve_line(
    name: str, line_stations: Mapping[str, object], line_by_key: Mapping[str, str], *, renames: bool
) -> str | None:
    """Exact name, else (``renames``: Beijing) the renames, else a unique ``line_key`` match; None otherwise."""
    if name in line_stations:
        return name
    if renames:
        for marker, target in BEIJING_RENAMES:
            if marker in name and target in line_stations:
                return target
    return line_by_key.get(line_key(name))


# Reference line names (map-app style) -> network line names

# Names that carry no identifier or colour of their own.
_GENERIC_WORDS = frozenset(
    {"line", "linea", "linha", "metro", "metrorail", "subway", "rail", "mrt", "lrt", "ktm", "train", "tram"}
)
# Only where nothing in a name says which line it is (the released code's per-city rules, reduced to these).
_CITY_ALIASES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "beijing": BEIJING_RENAMES,
    "kl": (
        ("putrajaya", "Line 12"),
        ("ampang", "Line 3"),
        ("kelana jaya", "Line 5"),
        ("tanjung malim", "Line 2"),
        ("pelabuhan klang", "Line 2"),
        ("port klang", "Line 2"),
        ("sri petaling", "Line 4"),
        ("kajang", "Line 9"),
        ("batu caves", "Line 1"),
        ("tampin", "Line 1"),
        ("seremban", "Line 1"),
    ),
}
_CITY_KEYS = {"kuala lumpur": "kl", "kuala_lumpur": "kl"}
_NUMBERED_LINE = re.compile(r"(?:line\s*)?([a-z]?\d{1,3}|[a-z])", re.IGNORECASE)
_CHINESE_NUMBER = re.compile(r"(\d{1,3})\s*号线")
_TOKEN = re.compile(r"[A-Za-z]+\d*|\d+")
_ASCII_WORD = re.compile(r"[a-z]+")
_VOWELS = str.maketrans("", "", "aeiou")


def _identifier(token: str) -> str:
    """Canonical line identifier: lower-case letter prefix + number without leading zeros ("M01" -> "m1")."""
    token = token.lower()
    letters = token.rstrip("0123456789")
    digits = token[len(letters) :]
    return letters + (str(int(digits)) if digits else "")


def _identifier_candidates(name: str) -> Iterable[str]:
    """Possible line identifiers in a reference name, most specific first ("M1" -> m1, 1, m)."""
    chinese = _CHINESE_NUMBER.search(name)
    if chinese:
        yield _identifier(chinese.group(1))
    for token in _TOKEN.findall(name):
        letters = token.rstrip("0123456789")
        digits = token[len(letters) :]
        if not letters:
            yield _identifier(digits)
        elif len(letters) == 1:
            if digits:
                yield _identifier(token)
                yield _identifier(digits)
            yield letters.lower()


def _words_match(words: Sequence[str], ref_words: Sequence[str], ref_joined: str) -> bool:
    """Every distinctive word of a line name appears in the reference, whole, as a prefix of 3+ letters
    ("West" -> western), or as its consonant skeleton ("Grn" -> green, "Sth" -> southern)."""
    for word in words:
        skeleton = word.translate(_VOWELS)
        if len(word) >= 3 and word in ref_joined:
            continue
        if len(skeleton) >= 3 and skeleton in ref_joined:
            continue
        if any(len(t) >= 3 and (word.startswith(t) or skeleton.startswith(t)) for t in ref_words):
            continue
        return False
    return True


def match_line_name(name: str, lines: Iterable[str], *, city: str = "") -> str | None:
    """The network line a reference (map-app) line name denotes, or None when no rule identifies exactly one.

    In order: the exact name; equality ignoring case, spaces, punctuation, parenthesised text and "地铁"; the
    few city aliases no name can reveal (Beijing's Batong/Daxing lines, Kuala Lumpur's named lines); a line
    identifier (number, letter, or letter+number: "5号线", "Metro A Line", "M1-es Metróvonal", "5 Train", "B1" ->
    Line B) against networks that name lines "Line X" or "X"; the distinctive words of colour / named lines
    ("MRed2" -> Red Line, "MGrn" -> Green Line, "West" -> Western Line, "NS Line" -> North South Line).
    """
    if not isinstance(name, str):
        return None
    lines = [line for line in lines if isinstance(line, str)]
    if not lines or not name.strip():
        return None
    if name in lines:
        return name
    cleaned = drop_parenthesised(name[:_MAX_LINE_NAME]).replace("地铁", "").strip()
    by_key: dict[str, list[str]] = {}
    for line in lines:
        by_key.setdefault(reference_line_key(line), []).append(line)
    same = by_key.get(reference_line_key(cleaned), [])
    if len(same) == 1:
        return same[0]

    folded = cleaned.casefold()
    city_key = _CITY_KEYS.get(city.strip().lower(), city.strip().lower())
    for marker, target in _CITY_ALIASES.get(city_key, ()):
        if marker in folded and target in lines:
            return target

    identifiers: dict[str, list[str]] = {}
    for line in lines:
        numbered = _NUMBERED_LINE.fullmatch(line.strip())
        if numbered:
            identifiers.setdefault(_identifier(numbered.group(1)), []).append(line)
    for candidate in _identifier_candidates(cleaned):
        found = identifiers.get(candidate, [])
        if len(found) == 1:
            return found[0]

    ref_words = _ASCII_WORD.findall(folded)
    ref_joined = "".join(ref_words)
    best: list[tuple[int, str]] = []
    for line in lines:
        words = [w for w in _ASCII_WORD.findall(line.casefold()) if w not in _GENERIC_WORDS]
        if not words:
            continue
        initials = "".join(w[0] for w in words)
        if _words_match(words, ref_words, ref_joined) or (len(words) >= 2 and initials in ref_words):
            best.append((len(words), line))
    if best:
        top = max(size for size, _ in best)
        winners = [line for size, line in best if size == top]
        if len(winners) == 1:
            return winners[0]
    return None
