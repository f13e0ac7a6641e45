"""Line names: the key two spellings of one line share, and how a response's line name is resolved onto the network.

``line_key`` (case and whitespace ignored: "line 1", "Line1" and "Line 1") reads a line name a model or a question
writes for a line of the map: everything but case and spacing can carry meaning there ("S1" vs "S-1", "1-2" vs
"12"), and it decides the fixed reward. The benchmark compares line names by its own rule, the official
``clean_string`` (``reward_fns.benchmark_released``), which maps a reference's map-app name onto the network too.
The Beijing renames are the released code's hard-coded ones (Batong runs through to Line 1, Daxing to Line 4);
the released reward applies them in every city (``reward_fns.reward_released.released_line``), the tolerant
resolver only in Beijing (``resolve_line``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The released code's hard-coded renames, applied in this order to every route name.
BEIJING_RENAMES = (("八通", "Line 1"), ("大兴", "Line 4"))
# Cities where the tolerant resolver applies them (elsewhere they would map foreign names onto unrelated lines).
RENAME_CITIES = frozenset({"beijing"})

_SPACES = re.compile(r"\s+")
_MAX_LINE_NAME = 200  # longer "line names" are junk; never build keys from megabytes


def line_key(name: str) -> str:
    """Case- and whitespace-insensitive key of a line name ("line 1" and "Line1" match "Line 1")."""
    return _SPACES.sub("", name[:_MAX_LINE_NAME].strip().strip("*_`.").casefold())


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
