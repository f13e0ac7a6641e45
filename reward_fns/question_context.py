"""The per-question view scoring needs (ground truth, indexed network, normalised endpoints), built once and cached.

A GRPO group scores n responses to one question, and a batch holds many questions of few cities, so parsing the
ground-truth JSON and indexing the network must not happen per response: contexts are cached by the ground-truth
string, and the network index (normalised station sets per line, line-name look-ups) by the network's content,
shared by every question of a city. Line-name rules live in ``reward_fns.line_names``.

Station names are normalised with ``normalize_station`` (the training normaliser) unless a context is asked for
another one (``reward_fns.reward_released`` asks for the released code's); a context remembers its normaliser, so every
comparison against it uses the same rule.
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from reward_fns.ground_truth import GroundTruth
from reward_fns.line_names import RENAME_CITIES, line_key, resolve_line
from reward_fns.network import MetroNetwork, normalize_station

Normaliser = Callable[[str], str]


class Leg(NamedTuple):
    """One ride reduced to what the rules compare: resolved line (None if not a line of the city), stops normalised."""

    line: str | None
    departure: str
    arrival: str


@dataclass(frozen=True)
class NetworkIndex:
    """A city's network with the look-ups scoring does per response precomputed."""

    network: MetroNetwork
    line_stations: dict[str, frozenset[str]]  # line -> its normalised station names
    line_by_key: dict[str, str]  # line_key -> line, for keys that name exactly one line

    def direct_lines(self, a: str, b: str) -> frozenset[str]:
        """Lines holding both (normalised) stations."""
        return frozenset(line for line, stations in self.line_stations.items() if a in stations and b in stations)


@functools.lru_cache(maxsize=128)
def _network_index(content: tuple[tuple[str, tuple[str, ...]], ...], name: str, normalize: Normaliser) -> NetworkIndex:
    network = MetroNetwork({line: list(stations) for line, stations in content}, name=name)
    line_stations = {line: frozenset(normalize(s) for s in stations) for line, stations in network.lines.items()}
    keys: dict[str, list[str]] = {}
    for line in network.lines:
        keys.setdefault(line_key(line), []).append(line)
    return NetworkIndex(network, line_stations, {k: v[0] for k, v in keys.items() if len(v) == 1})


def network_index(
    network: Mapping[str, Any], *, name: str = "", normalize: Normaliser = normalize_station
) -> NetworkIndex:
    """The cached index of a network given as line -> stations (one per distinct content and normaliser)."""
    try:
        content = tuple((str(line), tuple(str(s) for s in stations)) for line, stations in network.items())
    except (AttributeError, TypeError) as err:
        raise ValueError(f"network {name!r}: must map line names to station lists") from err
    return _network_index(content, name, normalize)


@dataclass(frozen=True)
class QuestionContext:
    """A question's ground truth plus, for planning, its indexed network and normalised endpoints."""

    gt: GroundTruth
    index: NetworkIndex | None = None
    origin: str = ""
    destination: str = ""
    direct_lines: frozenset[str] = frozenset()
    renames: bool = False  # whether the tolerant resolver applies the Beijing renames
    normalize: Normaliser = normalize_station  # the station normaliser of origin, destination and the index
    min_rides: int | None = None  # rides of a minimum-transfer route (None: endpoints unknown, equal or unlinked)

    def tolerant_line(self, name: str) -> str | None:
        """Exact name, else (Beijing) the renames, else a unique case/space-insensitive match; None otherwise."""
        if self.index is None:
            return None
        return resolve_line(name, self.index.line_stations, self.index.line_by_key, renames=self.renames)


def _build(gt: GroundTruth, normalize: Normaliser) -> QuestionContext:
    if gt.question_type != "planning":
        return QuestionContext(gt, normalize=normalize)
    index = network_index(gt.network, name=gt.city, normalize=normalize)
    origin, destination = normalize(gt.station_1), normalize(gt.station_2)
    return QuestionContext(
        gt,
        index,
        origin,
        destination,
        index.direct_lines(origin, destination),
        gt.city.strip().lower() in RENAME_CITIES,
        normalize,
        _min_rides(index.network, gt.station_1, gt.station_2),
    )


def _min_rides(network: MetroNetwork, origin: str, destination: str) -> int | None:
    try:
        return len(network.min_transfer_route(origin, destination)) or None
    except KeyError:  # an endpoint not in the network, or both the same station
        return None


@functools.lru_cache(maxsize=2048)
def _context_from_json(text: str, normalize: Normaliser) -> QuestionContext:
    return _build(GroundTruth.from_json(text), normalize)


_BY_OBJECT: OrderedDict[tuple[int, Normaliser], QuestionContext] = OrderedDict()
_BY_OBJECT_MAX = 1024


def _json_default(value: Any) -> Any:
    for attr in ("tolist", "item"):  # numpy arrays and scalars, as Parquet readers hand them over
        if hasattr(value, attr):
            return getattr(value, attr)()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def question_context(
    ground_truth: str | GroundTruth | Mapping[str, Any], *, normalize: Normaliser = normalize_station
) -> QuestionContext:
    """The cached context of a ground truth given as its JSON string, a GroundTruth, or a dict of its fields.

    ``normalize`` is the station normaliser of the context (see the module docstring). Raises ValueError when
    the ground truth itself is invalid (a data bug, never a property of a response).
    """
    if isinstance(ground_truth, GroundTruth):
        key = (id(ground_truth), normalize)
        ctx = _BY_OBJECT.get(key)
        if ctx is not None and ctx.gt is ground_truth:
            _BY_OBJECT.move_to_end(key)
            return ctx
        ctx = _build(ground_truth, normalize)
        _BY_OBJECT[key] = ctx  # the context keeps the object alive, so its id stays unique
        if len(_BY_OBJECT) > _BY_OBJECT_MAX:
            _BY_OBJECT.popitem(last=False)
        return ctx
    if isinstance(ground_truth, Mapping):
        try:
            text = json.dumps(dict(ground_truth), ensure_ascii=False, sort_keys=True, default=_json_default)
        except (TypeError, ValueError, RecursionError) as err:
            raise ValueError(f"ground_truth: {str(err)[:200]}") from err
        return question_context(text, normalize=normalize)
    if isinstance(ground_truth, bytes):
        ground_truth = ground_truth.decode("utf-8", errors="replace")
    if not isinstance(ground_truth, str):
        raise ValueError(
            f"ground_truth: expected a JSON string, GroundTruth or dict, got {type(ground_truth).__name__}"
        )
    try:
        return _context_from_json(ground_truth, normalize)
    except (AttributeError, TypeError, ValueError, KeyError) as err:
        raise ValueError(f"ground_truth: invalid ({err})") from err
