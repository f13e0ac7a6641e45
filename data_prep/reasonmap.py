"""Official ReasonMap data -> schema rows: one record at a time (``record_to_row``) and the prep command.

Record shapes accepted (field names as on the dataset hub):

- ReasonMap-Train / ReasonMap-Plus: ``question, figure, answer, type`` (planning | TorF1 | TorF2 | Counting1 |
  Counting2 | Counting3), ``country, city, station_1, station_2, difficulty_city, question_transfer_count,
  json`` (station-file path such as ``stations/china/beijing.json``). One record -> one row.
- ReasonMap benchmark: ``question_short, question_long, figure, routes, station_1, station_2, country, city,
  difficulty_city, difficulty_question, question_transfer_count, json`` (the network itself). One record -> two
  planning rows: template ``short``, and ``long1`` when the long question asks for "Number of Via Stops:" or
  ``long2`` otherwise (the rule the benchmark's ``main.py`` uses to parse long answers).

``figure`` may be a PIL image, PNG/JPEG bytes, base64 text (optionally a data URI), a ``{'bytes'|'path'}`` dict
or a path; relative paths (the released data uses ``./maps/<country>/<city>.png``) are looked up under the
image roots. Station names keep the record's spelling (scoring normalises both sides).

Command (no side effects on import; ``main(argv)`` returns the exit status)::

    python -m data_prep.reasonmap --out DIR [--source [ROLE=]NAME_OR_PATH[@SPLIT] ...] [--stations-root DIR]
        [--image-root DIR] [--min-pixels N] [--max-pixels N] [--planning-templates short,long1,long2]
        [--skip-invalid] [--limit N] [--overwrite]

Sources default to the three hub datasets: ``FSCCS/ReasonMap-Train`` (split train) -> the four training stage
files, ``FSCCS/ReasonMap`` (the benchmark, split validation, the split its ``main.py`` evaluates) -> ``val.parquet``
(short and long rows), ``FSCCS/ReasonMap-Plus`` (split test) -> ``test.parquet``. See ``data_prep.sources`` for
local copies and how a source's role is inferred.

``--planning-templates`` keeps only planning rows of the listed templates (a benchmark record's long form is
long1 or long2 by its question; a training record's template is read off its question the same way); the rows
left out are counted per source in the manifest (``excluded_by_template``). The ``released`` reward mode
credits short answers only: prepare its data with ``--planning-templates short``.

Warnings (printed to stderr after writing, and listed in ``manifest["warnings"]``): no validation source, so
no ``val.parquet`` (``NO_VALIDATION_WARNING``); a validation or test source that is the training source; repeated
questions (``data_prep.duplicates``: duplicates are kept and listed under ``manifest["duplicates"]``, a question
answered two ways is an error, validation or test rows asking a training question are counted).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.duplicates import QuestionIndex
from data_prep.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SOURCE_PIXELS,
    DEFAULT_MIN_PIXELS,
    ImageError,
    ResizeCache,
    source_bytes_or_path,
)
from data_prep.schema import RowError, build_row
from data_prep.sources import HUB_SOURCES, Source, SourceError, iter_records, parse_source
from data_prep.stations import StationStore
from data_prep.writer import read_manifest, write_dataset
from reward_fns.ground_truth import OPTION_LETTERS, PLANNING_TEMPLATES, QUESTION_TYPES, GroundTruth
from reward_fns.line_names import line_key
from reward_fns.network import MetroNetwork, normalize_station, strip_markers

BENCHMARK_FORMS = ("short", "long")
NO_VALIDATION_WARNING = (
    "no val.parquet written: no validation source was given (only train/test); add --source val=FSCCS/ReasonMap "
    "(the ReasonMap benchmark, split validation) or a local copy of it to validate on the benchmark"
)
_TYPE_BY_LOWER = {t.lower(): t for t in QUESTION_TYPES}
# difficulty_city as the datasets write it ("middle"), plus tolerated spellings and 0/1/2 levels
_MAP_DIFFICULTY = {"easy": "easy", "middle": "middle", "medium": "middle", "hard": "hard"}
_MAP_DIFFICULTY.update({"0": "easy", "1": "middle", "2": "hard"})
_YES = {"1", "yes", "true", "y", "t"}
_NO = {"0", "no", "false", "n", "f"}
_OPTION = re.compile(rf"(?:^|\n)[ \t]*\(?([{''.join(OPTION_LETTERS)}])[\)\.:：][ \t]*([^\n]*?)[ \t]*(?=\n|$)")
_ON_LINE = re.compile(r"\bon (?:the )?(.+?)\s*\?", re.IGNORECASE)
_STATIONS_NEEDED = {
    "planning": ("station_1", "station_2"),
    "TorF1": ("station_1", "station_2"),
    "Counting1": ("station_1", "station_2"),
    "TorF2": ("station_1",),
    "Counting2": ("station_1",),
    "Counting3": (),
}


@dataclass
class RecordContext:
    """Shared state for converting many records: station files, resized images, image roots (all cached)."""

    stations: StationStore
    images: ResizeCache
    image_roots: list[Path] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        *,
        stations_root: str | Path | None = None,
        image_roots: Sequence[str | Path] = (),
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
    ) -> RecordContext:
        roots = [Path(r) for r in image_roots]
        if stations_root is not None:
            roots.append(Path(stations_root))  # the benchmark repository keeps maps/ beside stations/
        cache = ResizeCache(min_pixels=min_pixels, max_pixels=max_pixels, max_source_pixels=max_source_pixels)
        return cls(stations=StationStore(stations_root), images=cache, image_roots=roots)


def is_benchmark_record(record: Mapping[str, Any]) -> bool:
    """ReasonMap benchmark records carry short and long questions instead of ``question``."""
    return "question_short" in record or "question_long" in record


def record_to_row(
    record: Mapping[str, Any],
    *,
    stations_root: str | Path | None = None,
    data_source: str | None = None,
    split: str = "train",
    index: int = 0,
    form: str = "short",
    record_index: int | None = None,
    source_name: str = "",
    image_root: str | Path | None = None,
    context: RecordContext | None = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
) -> dict[str, Any]:
    """One official record -> one schema row (a benchmark record gives its ``form``: "short" or "long").

    ``index`` is the row's position in its split; ``record_index`` (default ``index``) and ``source_name`` name
    the record in errors and in ``extra_info.source_id``. ``data_source`` defaults to "reasonmap" for benchmark
    records, else "reasonmap_train" on the train split and "reasonmap_plus" otherwise. Pass a shared ``context``
    when converting many records (it caches station files and resized maps; it then also fixes the stations
    root, image roots and pixel budget). Raises RowError naming the record and the field.
    """
    if context is None:
        context = RecordContext.create(
            stations_root=stations_root,
            image_roots=[image_root] if image_root is not None else [],
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            max_source_pixels=max_source_pixels,
        )
    rec_index = index if record_index is None else record_index
    if not isinstance(record, Mapping):
        raise RowError(f"{source_name or 'source'} record {rec_index}: must be a mapping, got {type(record).__name__}")
    where = _where(record, source_name=source_name, record_index=rec_index)
    benchmark = is_benchmark_record(record)
    if data_source is None:
        data_source = "reasonmap" if benchmark else ("reasonmap_train" if split == "train" else "reasonmap_plus")

    country = _text(record, "country", where)
    city = _text(record, "city", where)
    map_difficulty = _map_difficulty(record, where)
    network = context.stations.network(record.get("json"), country=country, city=city, where=where)

    if benchmark:
        if form not in BENCHMARK_FORMS:
            raise ValueError(f"form must be one of {BENCHMARK_FORMS}, got {form!r}")
        qtype = "planning"
        question = _text(record, f"question_{form}", where)
        template = benchmark_template(form, question)
    else:
        qtype = _question_type(record, where)
        question = _text(record, "question", where)
        template = planning_template(question) if qtype == "planning" else "short"

    station_1 = _optional_text(record, "station_1", where)
    station_2 = _optional_text(record, "station_2", where)
    for name in _STATIONS_NEEDED[qtype]:
        value = station_1 if name == "station_1" else station_2
        if not value:
            raise RowError(f"{where}: field {name!r}: missing (required for {qtype})")
        if not network.has_station(value):
            raise RowError(f"{where}: field {name!r}: {value!r} is not a station of the {country}/{city} network")
    if qtype == "planning" and normalize_station(station_1) == normalize_station(station_2):
        raise RowError(f"{where}: field 'station_2': same station as station_1 ({station_1!r})")

    answer: int | None = None
    options: list[str] = []
    line = ""
    transfers = 0
    routes = None
    if qtype == "planning":
        transfers = _non_negative_int(record, "question_transfer_count", where)
        if benchmark:
            routes = _routes(record.get("routes"), where)
    else:
        answer = _answer(record.get("answer"), qtype, where)
        if qtype == "Counting1":
            options = parse_options(question)
        if qtype == "TorF2":
            line = find_line(network, station_2, question)
    station_2_gt = station_2 if qtype in ("planning", "TorF1", "Counting1") else ""
    station_1_gt = station_1 if qtype != "Counting3" else ""

    try:
        gt = GroundTruth(
            question_type=qtype,
            city=city,
            country=country,
            map_difficulty=map_difficulty,
            network=network.to_dict(),
            station_1=station_1_gt,
            station_2=station_2_gt,
            answer=answer,
            template=template,
            question_transfer_count=transfers,
            line=line,
            options=options,
            routes=routes,
        )
    except ValueError as err:
        raise RowError(f"{where}: {err}") from err

    image_png = _image(record, context, where)
    source_id = f"{source_name or data_source}:{rec_index}" + (f":{form}" if benchmark else "")
    return build_row(
        data_source=data_source,
        question=question.strip(),
        image_png=image_png,
        ground_truth=gt,
        split=split,
        index=index,
        source_id=source_id,
        min_pixels=context.images.min_pixels,
        max_pixels=context.images.max_pixels,
    )


def record_to_rows(
    record: Mapping[str, Any],
    *,
    index: int = 0,
    planning_templates: Sequence[str] = PLANNING_TEMPLATES,
    **options: Any,
) -> list[dict[str, Any]]:
    """The rows of a record: two (short, long) for a benchmark record, else one; indices from ``index`` up.

    Planning rows whose template is not in ``planning_templates`` are left out; the record is still converted
    (and so checked) when all its rows are left out. ``expected_rows(record) - len(result)`` counts them.
    """
    options.setdefault("record_index", index)
    if isinstance(record, Mapping) and is_benchmark_record(record):
        forms = [f for f in BENCHMARK_FORMS if _form_template(record, f) in (*planning_templates, None)]
        if not forms:
            record_to_row(record, index=index, form="short", **options)  # checked, then left out
        return [record_to_row(record, index=index + k, form=form, **options) for k, form in enumerate(forms)]
    row = record_to_row(record, index=index, **options)
    keep = row["extra_info"]["question_type"] != "planning" or row["extra_info"]["template"] in planning_templates
    return [row] if keep else []


def expected_rows(record: Any) -> int:
    """Rows a record gives before any template selection: two for a benchmark record, else one."""
    return len(BENCHMARK_FORMS) if isinstance(record, Mapping) and is_benchmark_record(record) else 1


def benchmark_template(form: str, question: str) -> str:
    """Template of a benchmark row: ``short`` for the short form; the long form is long1 or long2 by its question."""
    if form == "short":
        return "short"
    return "long1" if planning_template(question) == "long1" else "long2"


def _form_template(record: Mapping[str, Any], form: str) -> str | None:
    """A benchmark form's template, or None when its question is not text (conversion then reports it)."""
    question = record.get(f"question_{form}")
    return benchmark_template(form, question) if isinstance(question, str) else None


def parse_planning_templates(text: str) -> list[str]:
    """``short,long1`` -> ["short", "long1"]; raises ValueError naming the option on an unknown or empty list."""
    templates = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in templates if t not in PLANNING_TEMPLATES]
    if unknown or not templates:
        raise ValueError(
            f"--planning-templates {text!r}: give a comma-separated subset of {','.join(PLANNING_TEMPLATES)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return list(dict.fromkeys(templates))


def planning_template(question: str) -> str:
    """Template of a planning question from its answer format: long1 asks "Number of Via Stops:", long2
    "Via Stops:", short neither (the benchmark's ``main.py`` tells its long templates apart the same way)."""
    if "Number of Via Stops:" in question:
        return "long1"
    if "Via Stops:" in question:
        return "long2"
    return "short"


# --- field readers -------------------------------------------------------------------------------------------


def _where(record: Mapping[str, Any], *, source_name: str, record_index: int) -> str:
    city = record.get("city")
    place = f" ({record.get('country') or '?'}/{city})" if city else ""
    return f"{source_name or 'source'} record {record_index}{place}"


def _text(record: Mapping[str, Any], name: str, where: str) -> str:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"{where}: field {name!r}: missing")
    if not isinstance(value, str):
        raise RowError(f"{where}: field {name!r}: must be text, got {type(value).__name__}")
    return value.strip()


def _optional_text(record: Mapping[str, Any], name: str, where: str) -> str:
    """A field that may be empty (a station some types do not need); present, it must be text."""
    value = record.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):  # null, or pandas' null in a column
        return ""
    if not isinstance(value, str):
        raise RowError(f"{where}: field {name!r}: must be text (a station name), got {type(value).__name__} {value!r}")
    return strip_markers(value).strip()


def _map_difficulty(record: Mapping[str, Any], where: str) -> str:
    value = record.get("difficulty_city")
    key = str(value).strip().lower() if value is not None else ""
    if key not in _MAP_DIFFICULTY:
        raise RowError(f"{where}: field 'difficulty_city': {value!r} is not easy, middle or hard")
    return _MAP_DIFFICULTY[key]


def _question_type(record: Mapping[str, Any], where: str) -> str:
    value = record.get("type")
    qtype = _TYPE_BY_LOWER.get(str(value).strip().lower()) if value is not None else None
    if qtype is None:
        raise RowError(f"{where}: field 'type': {value!r} is not one of {QUESTION_TYPES}")
    return qtype


def _as_int(value: Any) -> int | None:
    """An integer written as an int, an integral float or digits; None otherwise (a boolean is not a count)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+(\.0+)?\s*", value):
        return int(float(value))
    return None


def _non_negative_int(record: Mapping[str, Any], name: str, where: str) -> int:
    value = _as_int(record.get(name))
    if value is None or value < 0:
        raise RowError(f"{where}: field {name!r}: {record.get(name)!r} is not a non-negative integer")
    return value


def _answer(value: Any, qtype: str, where: str) -> int:
    """TorF: 1/0 (or yes/no); Counting1: option index 0-3 (or a letter A-D); Counting2/3: a count >= 1."""
    text = str(value).strip().lower() if value is not None else ""
    if qtype.startswith("TorF"):
        if text in _YES or text == "1.0":
            return 1
        if text in _NO or text == "0.0":
            return 0
        raise RowError(f"{where}: field 'answer': {value!r} is not 1/0 (yes/no) for {qtype}")
    if qtype == "Counting1":
        letters = [letter.lower() for letter in OPTION_LETTERS]
        if text in letters:
            return letters.index(text)
        number = _as_int(value)
        if number is None or not 0 <= number <= 3:
            raise RowError(f"{where}: field 'answer': {value!r} is not an option index 0-3 (or A-D) for Counting1")
        return number
    number = _as_int(value)
    if number is None or number < 1:
        raise RowError(f"{where}: field 'answer': {value!r} is not a positive count for {qtype}")
    return number


def parse_options(question: str) -> list[str]:
    """The A-D option texts of a Counting1 question (``\\nA) 8 \\nB) 1 ...``), or [] when not exactly A-D."""
    found = _OPTION.findall(question)
    letters = [letter for letter, _ in found]
    if letters != list(OPTION_LETTERS):
        return []
    return [text for _, text in found]


def find_line(network: MetroNetwork, station_2: str, question: str) -> str:
    """TorF2's line: the network's name for it when station_2 or the question names one, else the raw text."""
    by_key = {line_key(name): name for name in network.lines}
    if station_2 and line_key(station_2) in by_key:
        return by_key[line_key(station_2)]
    best = ""
    q = question.lower()
    for name in network.lines:
        low = name.lower()
        start = q.find(low)
        while start >= 0:
            end = start + len(low)
            boundary = end >= len(q) or not q[end].isalnum() or not low[-1:].isalnum()
            if boundary and len(name) > len(best):
                best = name
                break
            start = q.find(low, start + 1)
    if best:
        return best
    if station_2:
        return station_2
    match = _ON_LINE.search(question)
    return match.group(1).strip() if match else ""


def _routes(value: Any, where: str) -> dict[str, list[dict[str, Any]]] | None:
    """Benchmark reference routes: plan id -> rides (an object or its JSON text; null plans dropped)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RowError(f"{where}: field 'routes': not valid JSON ({err})") from err
    if not isinstance(value, Mapping):
        raise RowError(f"{where}: field 'routes': must be an object of plan -> rides")
    routes: dict[str, list[dict[str, Any]]] = {}
    for plan, rides in value.items():
        if rides is None:
            continue
        if not isinstance(rides, (list, tuple)) or not all(isinstance(r, Mapping) for r in rides):
            raise RowError(f"{where}: field 'routes': plan {plan!r} must be a list of rides")
        routes[str(plan)] = [_plain(dict(r)) for r in rides]
    return routes or None


def _plain(value: Any) -> Any:
    """JSON-ready copy: tuples and arrays to lists, numpy scalars to Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


def _image(record: Mapping[str, Any], context: RecordContext, where: str) -> bytes:
    figure = record.get("figure")
    if figure is None or (isinstance(figure, (str, bytes)) and not figure):
        raise RowError(f"{where}: field 'figure': missing")
    where = f"{where}: field 'figure'"
    source = source_bytes_or_path(figure, where=where)
    if isinstance(source, Path):
        source = _resolve_path(source, context.image_roots, where)
    return context.images.get(source, where=where)


def _resolve_path(path: Path, roots: Sequence[Path], where: str) -> Path:
    """An existing file: ``path`` itself, or ``path`` under the first image root that has it."""
    if path.is_file():
        return path
    if not path.is_absolute():
        for root in roots:
            candidate = root / path
            if candidate.is_file():
                return candidate
    under = f" (also looked under {', '.join(repr(str(r)) for r in roots)})" if roots and not path.is_absolute() else ""
    hint = "" if roots else " (pass --image-root)"
    raise ImageError(f"{where}: image file not found: {str(path)!r}{under}{hint}")


# --- command ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.reasonmap",
        description="Convert ReasonMap-Train, ReasonMap-Plus and the ReasonMap benchmark into verl Parquet files.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    parser.add_argument(
        "--source",
        action="append",
        metavar="[ROLE=]NAME_OR_PATH[@SPLIT]",
        help="hub name or local copy (save_to_disk folder, parquet, json/jsonl); ROLE is train, val or test. "
        "Repeatable. Default: the three FSCCS hub datasets.",
    )
    parser.add_argument("--stations-root", type=Path, help="folder holding stations/<country>/<city>.json")
    parser.add_argument("--image-root", type=Path, action="append", default=[], help="folder for relative figures")
    parser.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--max-source-pixels", type=int, default=DEFAULT_MAX_SOURCE_PIXELS)
    parser.add_argument(
        "--planning-templates",
        default=",".join(PLANNING_TEMPLATES),
        help="planning templates to write, a comma-separated subset of short,long1,long2 (the 'released' reward "
        "mode credits short only); a benchmark record's long form is long1 or long2 by its question",
    )
    parser.add_argument("--skip-invalid", action="store_true", help="skip bad records (listed in the manifest)")
    parser.add_argument("--limit", type=int, help="convert at most N records per source")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    return parser


def run_prep(args: argparse.Namespace, *, argv: Sequence[str] = ()) -> Path:
    """Convert every source into rows and write the dataset folder; returns it. Raises on the first bad record
    unless ``args.skip_invalid``."""
    specs = [parse_source(text) for text in (args.source or HUB_SOURCES)]
    roles = [s.role for s in specs]
    if len(set(roles)) != len(roles):
        raise SourceError(f"one source per role (train, val, test), got roles {roles}")
    if args.limit is not None and args.limit < 1:
        raise SourceError("--limit must be at least 1")
    templates = parse_planning_templates(args.planning_templates)
    warnings: list[str] = []
    if "val" not in roles:
        warnings.append(NO_VALIDATION_WARNING)
    warnings += same_source_warnings(specs)
    questions = QuestionIndex()
    context = RecordContext.create(
        stations_root=args.stations_root,
        image_roots=args.image_root,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        max_source_pixels=args.max_source_pixels,
    )
    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    skipped: list[dict[str, Any]] = []
    sources_info: list[dict[str, Any]] = []
    for spec in specs:
        rows: list[dict[str, Any]] = rows_by_split.setdefault(spec.role, [])
        roots = context.image_roots
        context.image_roots = [*roots, *spec.image_roots()]
        n_records = n_skipped = n_excluded = 0
        try:
            for record_index, record in enumerate(iter_records(spec, limit=args.limit)):
                n_records += 1
                try:
                    new_rows = record_to_rows(
                        record,
                        index=len(rows),
                        planning_templates=templates,
                        split=spec.role,
                        record_index=record_index,
                        source_name=spec.name,
                        context=context,
                    )
                    questions.add(
                        new_rows,
                        split=spec.role,
                        source=spec.location,
                        record=record_index,
                        where=_where(record, source_name=spec.name, record_index=record_index),
                    )
                    n_excluded += expected_rows(record) - len(new_rows)
                    rows += new_rows
                except (RowError, TypeError, KeyError, AttributeError) as err:
                    if not isinstance(err, RowError):  # a record shaped unlike any official one
                        err = RowError(f"{spec.name} record {record_index}: unexpected {type(err).__name__}: {err}")
                    if not args.skip_invalid:
                        raise err from None
                    n_skipped += 1
                    skipped.append(_skip_entry(spec, record_index, record, err))
        finally:
            context.image_roots = roots
        if n_records == 0:
            raise SourceError(f"source {spec.location!r}: no records")
        sources_info.append(
            {
                "role": spec.role,
                "location": spec.location,
                "split": spec.split,
                "records": n_records,
                "skipped": n_skipped,
                "excluded_by_template": n_excluded,
                "rows": len(rows),
                **spec.info,
            }
        )
    empty = [role for role, rows in rows_by_split.items() if not rows]
    if empty:
        raise SourceError(
            f"no rows for {', '.join(empty)} ({len(skipped)} records skipped as invalid, planning templates "
            f"{','.join(templates)})"
        )
    duplicates, duplicate_warnings = questions.report()
    warnings += duplicate_warnings
    manifest_extra = {
        "generator": "data_prep.reasonmap",
        "command": ["python", "-m", "data_prep.reasonmap", *argv],
        "sources": sources_info,
        "skipped": skipped,
        "skipped_count": len(skipped),
        "images": {"distinct_maps": len(context.images), "resized": context.images.misses},
        "stations_root": str(args.stations_root) if args.stations_root else None,
        "planning_templates": templates,
        "duplicates": duplicates,
        "warnings": warnings,
    }
    return write_dataset(args.out, rows_by_split, manifest_extra=manifest_extra, overwrite=args.overwrite)


def same_source_warnings(specs: Sequence[Source]) -> list[str]:
    """A warning per validation or test source that is the training source itself (same file or dataset split)."""
    identity = {spec.role: _source_identity(spec) for spec in specs}
    return [
        f"the {role} source is the training source ({spec.location}, split {spec.split}): {role} scores would "
        "measure memorisation; give the benchmark (val) or ReasonMap-Plus (test) instead"
        for spec in specs
        if (role := spec.role) != "train" and "train" in identity and identity[role] == identity["train"]
    ]


def _source_identity(spec: Source) -> tuple[str, str]:
    """What a source reads: a local file (its split is the file), a local folder's split, or a hub split."""
    if not spec.local:
        return (spec.location, spec.split)
    path = Path(spec.location).resolve()
    return (str(path), "" if path.is_file() else spec.split)


def _skip_entry(spec: Source, record_index: int, record: Any, err: RowError) -> dict[str, Any]:
    rec = record if isinstance(record, Mapping) else {}
    return {
        "source": spec.location,
        "record": record_index,
        "country": rec.get("country") if isinstance(rec.get("country"), str) else None,
        "city": rec.get("city") if isinstance(rec.get("city"), str) else None,
        "type": rec.get("type") if isinstance(rec.get("type"), str) else None,
        "error": str(err),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 data or I/O error, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        out = run_prep(args, argv=list(sys.argv[1:] if argv is None else argv))
    except (RowError, ValueError, OSError) as err:  # SourceError and ImageError are ValueErrors
        print(f"data_prep.reasonmap: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("data_prep.reasonmap: interrupted; nothing written", file=sys.stderr)
        return 130
    for warning in read_manifest(out).get("warnings", []):
        print(f"data_prep.reasonmap: warning: {warning}", file=sys.stderr)
    print(f"data_prep.reasonmap: wrote {out}")
    return 0


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
