"""Find and parse the metro network a ReasonMap record refers to, once per city.

ReasonMap-Train and ReasonMap-Plus records name their city's station file by a path relative to the benchmark
repository (``json = "stations/china/beijing.json"``); the ReasonMap benchmark embeds the network itself in
``json`` (an object, or that object as JSON text). ``StationStore`` resolves either and caches the parsed
``MetroNetwork`` per file, so thousands of questions on 30 cities parse 30 files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data_prep.schema import RowError
from reward_fns.network import MetroNetwork


class StationStore:
    """Resolves a record's ``json`` field to a ``MetroNetwork`` under ``root`` (cached per file).

    ``root`` may be the folder holding ``stations/`` (the benchmark repository layout) or the ``stations``
    folder itself; only a record with an empty ``json`` falls back to ``stations/<country>/<city>.json`` (a
    named file that is missing is an error, never silently another city's file).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise ValueError(f"stations root {str(self.root)!r} is not a folder")
        self._by_path: dict[Path, MetroNetwork] = {}

    def candidates(self, ref: str, *, country: str, city: str) -> list[Path]:
        """Paths tried, in order, for a record's station-file reference."""
        rels: list[Path] = []
        if ref:
            rel = Path(ref)
            if rel.is_absolute():
                return [rel]
            rels.append(rel)
            parts = rel.parts
            if parts and parts[0] in (".",):
                parts = parts[1:]
            if parts and parts[0] == "stations":
                rels.append(Path(*parts[1:]))
        elif country and city:  # no reference: the benchmark's own layout
            rels += [Path("stations") / country / f"{city}.json", Path(country) / f"{city}.json"]
        base = self.root if self.root is not None else Path.cwd()
        seen: list[Path] = []
        for rel in rels:
            path = base / rel
            if path not in seen:
                seen.append(path)
        return seen

    def network(self, value: Any, *, country: str, city: str, where: str) -> MetroNetwork:
        """The network for a record's ``json`` value: a path reference, an embedded object, or its JSON text."""
        name = f"{country}/{city}"
        if isinstance(value, Mapping):
            return _embedded(value, name=name, where=where)
        text = "" if value is None else str(value).lstrip("\ufeff")  # a BOM copied along with the JSON text
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise RowError(f"{where}: field 'json': embedded network is not valid JSON ({err})") from err
            return _embedded(data, name=name, where=where)
        tried = self.candidates(text.strip(), country=country, city=city)
        for path in tried:
            if path.is_file():
                return self._load(path, name=name, where=where)
        shown = ", ".join(repr(str(p)) for p in tried[:3]) or "(nothing to try)"
        hint = "" if self.root is not None else " (pass --stations-root)"
        raise RowError(f"{where}: field 'json': station file {text!r} not found; tried {shown}{hint}")

    def _load(self, path: Path, *, name: str, where: str) -> MetroNetwork:
        key = path.resolve()
        cached = self._by_path.get(key)
        if cached is not None:
            return cached
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))  # editors on Windows prepend a BOM
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RowError(f"{where}: field 'json': cannot read station file {str(path)!r}: {err}") from err
        network = _embedded(data, name=name, where=where, source=f" (station file {str(path)!r})")
        self._by_path[key] = network
        return network

    def __len__(self) -> int:
        return len(self._by_path)


def _embedded(data: Any, *, name: str, where: str, source: str = "") -> MetroNetwork:
    """A network object of line -> list of station names; lines whose value is null are dropped (Arrow gives every
    city the union of keys). ``source`` names the station file in errors."""
    field = f"field 'json'{source}"
    if not isinstance(data, Mapping):
        raise RowError(f"{where}: {field}: network must be an object of line -> stations")
    lines: dict[str, list[str]] = {}
    for line, stations in data.items():
        if stations is None:
            continue
        if hasattr(stations, "tolist") and not isinstance(stations, (str, bytes)):  # a numpy array from pandas
            stations = stations.tolist()
        if not isinstance(stations, (list, tuple)):
            hint = " (a string would become one-letter stations)" if isinstance(stations, (str, bytes)) else ""
            raise RowError(
                f"{where}: {field}: line {str(line)!r} must be a list of station names, "
                f"got {type(stations).__name__}{hint}"
            )
        for station in stations:
            if not isinstance(station, str):
                raise RowError(
                    f"{where}: {field}: line {str(line)!r}: station {station!r} must be text, "
                    f"got {type(station).__name__}"
                )
        lines[str(line)] = list(stations)
    try:
        return MetroNetwork(lines, name=name)
    except (TypeError, ValueError) as err:
        raise RowError(f"{where}: {field}: {err}") from err
