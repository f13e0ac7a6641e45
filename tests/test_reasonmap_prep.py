"""data_prep.reasonmap: official records -> schema rows, the whole command on local and hub sources, atomic output."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep import writer
from data_prep.image_files import open_row_image
from data_prep.images import smart_resize_dims
from data_prep.reasonmap import (
    NO_VALIDATION_WARNING,
    RecordContext,
    find_line,
    main,
    parse_options,
    record_to_row,
    record_to_rows,
)
from data_prep.schema import RowError, validate_row
from data_prep.sources import SourceError, infer_role, parse_source
from data_prep.writer import read_manifest, write_dataset
from reward_fns.ground_truth import GroundTruth
from reward_fns.network import MetroNetwork

BUDGET = 100 * 28 * 28  # small max_pixels so the toy map (700 x 420) is downscaled
MAP_SIZE = (700, 420)
NETWORK = {
    "Line 1": ["Alpha Station", "Beta Station (Transfer Station)", "Gamma Station", "Zeta Station"],
    "Line 2": ["Beta Station (Transfer Station)", "Delta Station", "Epsilon Station"],
    "Line 10": ["Gamma Station", "Eta Station"],
}
OPTIONS_Q = (
    'Please solve the multiple choice problem and put your answer (one of ABCD) in one "\\boxed{}". '
    "According to the subway map, how many intermediate stops are there between Alpha Station and Zeta Station "
    "(except for this two stops)? \nA) 1 \nB) 2 \nC) 5 \nD) 9 \n"
)
LONG1 = "... Route Name: ...\nDeparture Stop: ...\nArrival Stop: ...\nNumber of Via Stops: ..."
LONG2 = "... Route Name: ...\nDeparture Stop: ...\nArrival Stop: ...\nVia Stops: ..."


# --- fixtures built in code --------------------------------------------------------------------------------------


def _map_png(size: tuple[int, int] = MAP_SIZE, color: str = "white") -> bytes:
    image = Image.new("RGB", size, color)
    for x in range(0, size[0], 9):
        for y in range(0, size[1], 3):
            image.putpixel((x, y), (20, 90, 200))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def toy_repo(tmp_path: Path) -> Path:
    """The benchmark repository layout: stations/<country>/<city>.json and maps/<country>/<city>.png."""
    root = tmp_path / "repo"
    (root / "stations" / "testland").mkdir(parents=True)
    (root / "maps" / "testland").mkdir(parents=True)
    (root / "stations" / "testland" / "toy.json").write_text(json.dumps(NETWORK), encoding="utf-8")
    (root / "maps" / "testland" / "toy.png").write_bytes(_map_png())
    return root


def _base(**fields: Any) -> dict[str, Any]:
    record = {
        "question": "",
        "figure": "./maps/testland/toy.png",
        "answer": None,
        "type": "",
        "country": "testland",
        "city": "toy",
        "station_1": "",
        "station_2": "",
        "difficulty_city": "middle",
        "city_line_count": 3,
        "city_transfer_count": 2,
        "question_transfer_count": None,
        "json": "stations/testland/toy.json",
    }
    record.update(fields)
    return record


def train_records(figure: Any = "./maps/testland/toy.png") -> list[dict[str, Any]]:
    """ReasonMap-Train: one record of each type, plus a second TorF and planning."""
    return [
        _base(type="TorF1", question="Is Alpha the same line as Gamma?", answer=1, station_1="Alpha Station",
              station_2="Gamma Station", figure=figure),
        _base(type="TorF2", question="Is Delta Station on the line Line 2?", answer=1, station_1="Delta Station",
              station_2="Line 2", figure=figure),
        _base(type="Counting1", question=OPTIONS_Q, answer=1, station_1="Alpha Station", station_2="Zeta Station",
              figure=figure),
        _base(type="Counting2", question="How many lines pass through Beta?", answer=2, station_1="Beta Station",
              figure=figure),
        _base(type="Counting3", question="How many lines?", answer=3, figure=figure),
        _base(type="planning", question="From Alpha to Epsilon." + LONG1, station_1="Alpha Station",
              station_2="Epsilon Station", question_transfer_count=1, figure=figure),
        _base(type="planning", question="From Zeta to Alpha.", station_1="Zeta Station", station_2="Alpha Station",
              question_transfer_count=0, difficulty_city="hard", figure=figure),
        _base(type="TorF1", question="Is Eta the same line as Delta?", answer=0, station_1="Eta Station",
              station_2="Delta Station", figure=figure),
    ]  # fmt: skip


def plus_records(figure: Any) -> list[dict[str, Any]]:
    """ReasonMap-Plus test split: VQA only, the same fields as Train."""
    return [
        _base(type="Counting2", question="How many lines pass through Gamma?", answer="2", station_1="Gamma Station",
              figure=figure, difficulty_city="easy"),
        _base(type="TorF2", question="Is Eta Station on Line 10?", answer="no", station_1="Eta Station",
              station_2="", figure=figure),
        _base(type="Counting1", question=OPTIONS_Q, answer="B", station_1="Alpha Station",
              station_2="Zeta Station", figure=figure),
    ]  # fmt: skip


def benchmark_records(figure: Any) -> list[dict[str, Any]]:
    """ReasonMap benchmark: short and long questions, reference routes, the network embedded in ``json``."""
    routes = {
        "plan_1": [
            {"route_name": "Metro Line 1", "departure_stop": "Alpha", "arrival_stop": "Beta",
             "via_stops": [], "num_via_stops": 0},
            {"route_name": "Metro Line 2", "departure_stop": "Beta", "arrival_stop": "Epsilon",
             "via_stops": ["Delta"], "num_via_stops": 1},
        ],
        "plan_2": None,  # Arrow gives every record the union of plan keys
    }  # fmt: skip
    return [
        {
            "question_short": "Go from Alpha Station to Epsilon Station.",
            "question_long": "Go from Alpha Station to Epsilon Station." + LONG1,
            "figure": figure,
            "routes": routes,
            "station_1": "Alpha Station",
            "station_2": "Epsilon Station",
            "country": "testland",
            "city": "toy",
            "difficulty_city": "easy",
            "difficulty_question": "medium",
            "question_transfer_count": 1,
            "city_line_count": 3,
            "city_transfer_count": 2,
            "json": NETWORK,
        },
        {
            "question_short": "Go from Zeta Station to Alpha Station.",
            "question_long": "Go from Zeta Station to Alpha Station." + LONG2,
            "figure": figure,
            "routes": json.dumps({"plan_1": routes["plan_1"][:1]}),
            "station_1": "Zeta Station",
            "station_2": "Alpha Station",
            "country": "testland",
            "city": "toy",
            "difficulty_city": "easy",
            "difficulty_question": "easy",
            "question_transfer_count": 0,
            "city_line_count": 3,
            "city_transfer_count": 2,
            "json": json.dumps(NETWORK),
        },
    ]


def _write_parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _hub_dataset(records: list[dict[str, Any]], png: bytes) -> datasets.Dataset:
    """A Dataset shaped like the hub's: ``figure`` an Image feature (decoded to PIL on access by default)."""
    rows = [{**r, "figure": {"bytes": png, "path": None}} for r in records]
    ds = datasets.Dataset.from_list(rows)
    return ds.cast_column("figure", datasets.Image())


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _all_rows(out: Path) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in read_manifest(out)["files"]:
        rows[name] = pq.read_table(out / name).to_pylist()
    return rows


# --- record_to_row -----------------------------------------------------------------------------------------------


def test_each_train_type_becomes_a_valid_row(toy_repo: Path) -> None:
    context = RecordContext.create(stations_root=toy_repo, max_pixels=BUDGET)
    rows = [
        record_to_row(r, index=i, record_index=i, source_name="ReasonMap-Train", context=context)
        for i, r in enumerate(train_records())
    ]
    gts = [validate_row(row, where=f"row {i}") for i, row in enumerate(rows)]
    by_type = {gt.question_type: gt for gt in reversed(gts)}  # first of each type
    assert by_type["TorF1"].answer == 1 and by_type["TorF1"].station_2 == "Gamma Station"
    assert by_type["TorF2"].line == "Line 2" and by_type["TorF2"].station_2 == ""
    assert by_type["Counting1"].options == ["1", "2", "5", "9"] and by_type["Counting1"].answer == 1
    assert by_type["Counting2"].station_1 == "Beta Station" and by_type["Counting2"].answer == 2
    assert by_type["Counting3"].station_1 == "" and by_type["Counting3"].answer == 3
    planning = [gt for gt in gts if gt.question_type == "planning"]
    assert [p.template for p in planning] == ["long1", "short"]
    assert [p.question_transfer_count for p in planning] == [1, 0]
    assert planning[1].map_difficulty == "hard"
    # markers stripped from the embedded network, record spelling kept for stations
    assert by_type["TorF1"].network["Line 1"][1] == "Beta Station"
    assert rows[0]["prompt"][0]["content"] == "<image>\nIs Alpha the same line as Gamma?"
    assert rows[0]["data_source"] == "reasonmap_train"
    assert rows[0]["extra_info"]["source_id"] == "ReasonMap-Train:0"
    assert context.images.misses == 1 and context.images.hits == len(rows) - 1  # one map, resized once
    png = Image.open(io.BytesIO(rows[0]["images"][0]["bytes"]))
    assert png.size == smart_resize_dims(*MAP_SIZE, min_pixels=3136, max_pixels=BUDGET)
    assert rows[0]["images"][0]["max_pixels"] == BUDGET


def test_benchmark_record_gives_short_and_long_rows() -> None:
    png = _map_png()
    records = benchmark_records(base64.b64encode(png).decode())
    rows = record_to_rows(records[0], index=4, split="val", max_pixels=BUDGET) + record_to_rows(
        records[1], index=6, split="val", max_pixels=BUDGET
    )
    gts = [validate_row(r) for r in rows]
    assert [gt.template for gt in gts] == ["short", "long1", "short", "long2"]
    assert [r["extra_info"]["index"] for r in rows] == [4, 5, 6, 7]
    assert {r["data_source"] for r in rows} == {"reasonmap"}
    assert gts[0].routes is not None and list(gts[0].routes) == ["plan_1"]  # null plan dropped
    assert gts[0].routes["plan_1"][1]["via_stops"] == ["Delta"]
    assert gts[2].routes == {"plan_1": benchmark_records("")[0]["routes"]["plan_1"][:1]}  # routes as JSON text
    assert gts[0].question_transfer_count == 1 and gts[0].map_difficulty == "easy"
    assert rows[1]["extra_info"]["source_id"] == "reasonmap:4:long"  # record index defaults to the first row's


def test_record_to_row_keeps_the_issue_signature(toy_repo: Path) -> None:
    row = record_to_row(train_records()[3], stations_root=toy_repo, min_pixels=3136, max_pixels=BUDGET)
    assert validate_row(row).question_type == "Counting2"


@pytest.mark.parametrize(
    "figure_form",
    ["bytes", "base64", "data_uri", "dict_bytes", "dict_path", "abs_path", "pil"],
)
def test_every_figure_form(toy_repo: Path, figure_form: str) -> None:
    png = (toy_repo / "maps/testland/toy.png").read_bytes()
    b64 = base64.b64encode(png).decode()
    figure = {
        "bytes": png,
        "base64": b64,
        "data_uri": "data:image/png;base64," + b64,
        "dict_bytes": {"bytes": png, "path": "toy.png"},
        "dict_path": {"bytes": None, "path": "maps/testland/toy.png"},
        "abs_path": str(toy_repo / "maps/testland/toy.png"),
        "pil": Image.open(io.BytesIO(png)),
    }[figure_form]
    row = record_to_row(train_records(figure)[0], stations_root=toy_repo, max_pixels=BUDGET)
    size = Image.open(io.BytesIO(row["images"][0]["bytes"])).size
    assert size == smart_resize_dims(*MAP_SIZE, min_pixels=3136, max_pixels=BUDGET)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"type": "Counting4"}, "'type'", "is not one of"),
        ({"station_1": "Nowhere Station"}, "'station_1'", "is not a station of the testland/toy network"),
        ({"station_2": ""}, "'station_2'", "missing"),
        ({"answer": "maybe"}, "'answer'", "is not 1/0"),
        ({"answer": None}, "'answer'", "is not 1/0"),
        ({"figure": b"not a png"}, "'figure'", "unreadable image"),
        ({"figure": "./maps/testland/missing.png"}, "'figure'", "not found"),
        ({"figure": None}, "'figure'", "missing"),
        ({"city": ""}, "'city'", "missing"),
        ({"difficulty_city": "extreme"}, "'difficulty_city'", "is not easy, middle or hard"),
        ({"json": "stations/testland/atlantis.json"}, "'json'", "not found"),
    ],
)
def test_bad_records_name_the_record_and_field(
    toy_repo: Path, change: dict[str, Any], field: str, message: str
) -> None:
    record = {**train_records()[0], **change}
    with pytest.raises(RowError) as info:
        record_to_row(record, stations_root=toy_repo, record_index=17, source_name="ReasonMap-Train")
    text = str(info.value)
    assert "ReasonMap-Train record 17" in text and f"field {field}" in text and message in text
    if change.get("city") != "":
        assert "(testland/toy)" in text


@pytest.mark.parametrize(
    ("base", "change", "field", "message"),
    [
        (3, {"answer": True}, "'answer'", "True is not a positive count for Counting2"),
        (2, {"answer": True}, "'answer'", "True is not an option index 0-3"),
        (5, {"question_transfer_count": True}, "'question_transfer_count'", "True is not a non-negative integer"),
        (0, {"station_1": 5}, "'station_1'", "must be text (a station name), got int 5"),
        (1, {"station_2": 2}, "'station_2'", "must be text (a station name), got int 2"),
        (
            0,
            {"json": {**NETWORK, "Line 2": "Beta Station"}},
            "'json'",
            "line 'Line 2' must be a list of station names, got str (a string would become one-letter stations)",
        ),
        (0, {"json": {**NETWORK, "Line 2": 5}}, "'json'", "line 'Line 2' must be a list of station names, got int"),
        (0, {"json": {**NETWORK, "Line 2": ["Beta Station", 7]}}, "'json'", "line 'Line 2': station 7 must be text"),
    ],
)
def test_records_that_used_to_pass_or_fail_without_a_field(
    toy_repo: Path, base: int, change: dict[str, Any], field: str, message: str
) -> None:
    """True as a count, integer stations, a line given as a string or an integer: a RowError naming the field."""
    record = {**train_records()[base], **change}
    with pytest.raises(RowError) as info:
        record_to_row(record, stations_root=toy_repo, record_index=17, source_name="ReasonMap-Train")
    text = str(info.value)
    assert "ReasonMap-Train record 17 (testland/toy)" in text and f"field {field}" in text and message in text


def test_a_bad_line_in_a_station_file_names_the_file(toy_repo: Path) -> None:
    path = toy_repo / "stations" / "testland" / "toy.json"
    path.write_text(json.dumps({**NETWORK, "Line 10": "Gamma Station"}), encoding="utf-8")
    with pytest.raises(
        RowError, match=r"record 3 \(testland/toy\): field 'json' \(station file '.*toy.json'\): line 'Line 10'"
    ):
        record_to_row(train_records()[0], stations_root=toy_repo, record_index=3, source_name="S")


def test_an_integer_line_is_no_unexpected_type_error_in_the_cli(
    toy_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = train_records()
    records[4] = {**records[4], "json": {**NETWORK, "Line 2": 5}}
    source = _write_jsonl(tmp_path / "ReasonMap-Train.jsonl", records)
    code, err = _run(["--out", str(tmp_path / "o"), "--source", str(source), "--stations-root", str(toy_repo)], capsys)
    assert code == 1 and "unexpected" not in err
    assert "ReasonMap-Train.jsonl record 4 (testland/toy): field 'json': line 'Line 2'" in err


def test_utf8_bom_json_files_are_read(toy_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Windows editors prepend a BOM: station files, JSON arrays and JSON lines sources must still read."""
    station_file = toy_repo / "stations" / "testland" / "toy.json"
    station_file.write_bytes(b"\xef\xbb\xbf" + json.dumps(NETWORK).encode())
    array = tmp_path / "ReasonMap-Train.json"
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps(train_records()).encode())
    lines = tmp_path / "ReasonMap-Plus.jsonl"
    lines.write_bytes(
        b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\n" for r in plus_records("maps/testland/toy.png"))
    )
    out = tmp_path / "prepared"
    argv = ["--out", str(out), "--stations-root", str(toy_repo), "--image-root", str(toy_repo)]
    code, err = _run([*argv, "--source", f"train={array}", "--source", f"test={lines}"], capsys)
    assert code == 0, err
    assert read_manifest(out)["counts"]["train"]["rows"] == 8 and read_manifest(out)["counts"]["test"]["rows"] == 3
    embedded = {**benchmark_records(base64.b64encode(_map_png()).decode())[0], "json": "\ufeff" + json.dumps(NETWORK)}
    assert len(record_to_rows(embedded, split="val")) == 2  # network JSON text carrying a BOM


@pytest.mark.parametrize(
    ("qtype", "answer", "ok"),
    [("Counting1", 4, False), ("Counting1", "D", True), ("Counting2", 0, False), ("Counting3", "12", True),
     ("TorF2", 2, False), ("TorF1", "yes", True), ("planning", None, True)],
)  # fmt: skip
def test_answer_ranges(toy_repo: Path, qtype: str, answer: Any, ok: bool) -> None:
    record = _base(type=qtype, question="q? \nA) 1 \nB) 2 \nC) 3 \nD) 4", answer=answer, station_1="Alpha Station",
                   station_2="Zeta Station", question_transfer_count=0)  # fmt: skip
    if ok:
        assert validate_row(record_to_row(record, stations_root=toy_repo, max_pixels=BUDGET))
    else:
        with pytest.raises(RowError, match="field 'answer'"):
            record_to_row(record, stations_root=toy_repo, max_pixels=BUDGET)


def test_planning_needs_transfer_count_and_distinct_stations(toy_repo: Path) -> None:
    planning = train_records()[5]
    with pytest.raises(RowError, match="field 'question_transfer_count'"):
        record_to_row({**planning, "question_transfer_count": None}, stations_root=toy_repo)
    with pytest.raises(RowError, match="field 'station_2': same station"):
        record_to_row({**planning, "station_2": "alpha"}, stations_root=toy_repo)


def test_station_root_may_be_the_stations_folder(toy_repo: Path) -> None:
    row = record_to_row(train_records()[4], stations_root=toy_repo / "stations", image_root=toy_repo, max_pixels=BUDGET)
    assert validate_row(row).answer == 3


def test_parse_options_and_find_line() -> None:
    assert parse_options(OPTIONS_Q) == ["1", "2", "5", "9"]
    assert parse_options("How many? \nA) 1 \nB) 2") == []
    net = MetroNetwork(NETWORK)
    assert find_line(net, "line 2", "") == "Line 2"
    assert find_line(net, "", "Is Eta Station on Line 10?") == "Line 10"  # longest match, not "Line 1"
    assert find_line(net, "", "Is Alpha Station on Line 1?") == "Line 1"
    assert find_line(net, "", "Is Alpha Station on the Purple Line?") == "Purple Line"


# --- the command ---------------------------------------------------------------------------------------------------


@pytest.fixture
def local_sources(toy_repo: Path, tmp_path: Path) -> dict[str, Path]:
    """Train as a save_to_disk DatasetDict (figure paths), Plus as parquet (figure bytes), benchmark as jsonl."""
    png = (toy_repo / "maps/testland/toy.png").read_bytes()
    train_dir = tmp_path / "data" / "ReasonMap-Train"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(train_records())}).save_to_disk(str(train_dir))
    plus = _write_parquet(tmp_path / "plus_test.parquet", plus_records({"bytes": png, "path": None}))
    bench = _write_jsonl(tmp_path / "reasonmap_val.jsonl", benchmark_records(base64.b64encode(png).decode()))
    return {"train": train_dir, "test": plus, "val": bench}


def _argv(out: Path, sources: dict[str, Path], toy_repo: Path, *extra: str) -> list[str]:
    argv = ["--out", str(out), "--stations-root", str(toy_repo), "--max-pixels", str(BUDGET)]
    for role, path in sources.items():
        argv += ["--source", f"{role}={path}"]
    return argv + list(extra)


def test_cli_converts_local_copies(
    toy_repo: Path, local_sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prepared"
    code, err = _run(_argv(out, local_sources, toy_repo), capsys)
    assert code == 0, err
    manifest = read_manifest(out)
    expected_files = ["torf.parquet", "counting.parquet", "counting_stops.parquet", "planning.parquet"]
    assert manifest["stages"] == expected_files
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*expected_files, "val.parquet", "test.parquet", "manifest.json", "images"]
    )
    # the one map is stored once, named by its content, and listed in the manifest
    (image_name,) = manifest["image_files"]
    assert sorted(p.relative_to(out).as_posix() for p in (out / "images").iterdir()) == [image_name]
    stored = (out / image_name).read_bytes()
    assert image_name == f"images/{hashlib.sha256(stored).hexdigest()}.png"
    assert manifest["image_files"][image_name]["sha256"] == hashlib.sha256(stored).hexdigest()
    assert manifest["image_files"][image_name]["bytes"] == len(stored)
    assert (manifest["image_files"][image_name]["width"], manifest["image_files"][image_name]["height"]) == (
        smart_resize_dims(*MAP_SIZE, min_pixels=3136, max_pixels=BUDGET)
    )
    assert manifest["counts"]["train"]["by_type"] == {
        "Counting1": 1, "Counting2": 1, "Counting3": 1, "TorF1": 2, "TorF2": 1, "planning": 2,
    }  # fmt: skip
    assert manifest["counts"]["train"]["by_type_and_map_difficulty"]["planning"] == {"hard": 1, "middle": 1}
    assert manifest["counts"]["val"]["rows"] == 4 and manifest["counts"]["test"]["rows"] == 3
    assert manifest["pixel_budget"] == {"min_pixels": 3136, "max_pixels": BUDGET}
    assert manifest["skipped"] == [] and manifest["skipped_count"] == 0
    assert manifest["images"] == {"distinct_maps": 1, "resized": 1}
    assert {s["role"]: s["records"] for s in manifest["sources"]} == {"train": 8, "test": 3, "val": 2}
    assert "verl" in manifest["versions"] and "pyarrow" in manifest["versions"]
    for name, info in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == info["sha256"]
    target = smart_resize_dims(*MAP_SIZE, min_pixels=3136, max_pixels=BUDGET)
    rows = _all_rows(out)
    for name, file_rows in rows.items():
        assert len(file_rows) == manifest["files"][name]["rows"]
        for i, row in enumerate(file_rows):
            gt = validate_row(row, where=f"{name} {i}")
            assert row["images"][0]["bytes"] is None and row["images"][0]["path"] == image_name
            assert open_row_image(row["images"][0], data_dir=out, where=name).size == target
            if name in expected_files:
                assert row["extra_info"]["stage"] == name.removesuffix(".parquet")
                assert row["extra_info"]["split"] == "train"
            else:
                assert row["extra_info"]["split"] == name.removesuffix(".parquet")
            assert isinstance(GroundTruth.from_json(row["reward_model"]["ground_truth"]), GroundTruth)
            assert gt.question_type == row["extra_info"]["question_type"]
    assert {r["data_source"] for r in rows["test.parquet"]} == {"reasonmap_plus"}
    assert [r["extra_info"]["template"] for r in rows["val.parquet"]] == ["short", "long1", "short", "long2"]
    # pandas reads the nested columns back
    frame = pd.read_parquet(out / "counting_stops.parquet")
    assert frame.iloc[0]["extra_info"]["question_type"] == "Counting1"
    assert not list(tmp_path.glob(".prepared.*"))  # no temporary folders left


def test_cli_output_loads_through_the_recipes_rlhf_dataset(
    toy_repo: Path, local_sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from omegaconf import OmegaConf

    from recipe.dataset import StagedRLHFDataset

    out = tmp_path / "prepared"
    assert _run(_argv(out, local_sources, toy_repo), capsys)[0] == 0
    files = [str(out / name) for name in read_manifest(out)["stages"]]
    config = OmegaConf.create({"cache_dir": str(tmp_path / "cache"), "filter_overlong_prompts": False})
    # __getitem__ only needs *a* processor to build the multimodal message; tokenising is the agent loop's job
    dataset = StagedRLHFDataset(files, tokenizer=None, config=config, processor=SimpleNamespace())
    assert len(dataset) == 8
    item = dataset[0]
    content = item["raw_prompt"][0]["content"]
    image_part = next(part for part in content if part["type"] == "image")
    (image_name,) = read_manifest(out)["image_files"]
    # the worker gets an absolute path and the budget, never the PNG bytes
    assert image_part == {"type": "image", "image": str(out / image_name), "min_pixels": 3136, "max_pixels": BUDGET}
    (image,), _, _ = StagedRLHFDataset._process_multi_modal_info(item["raw_prompt"], 14, config)
    assert image.size == smart_resize_dims(*MAP_SIZE, min_pixels=3136, max_pixels=BUDGET)
    assert item["extra_info"]["stage"] == "torf"


def test_cli_stops_on_a_bad_record_and_writes_nothing(
    toy_repo: Path, local_sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = train_records()
    records[2] = {**records[2], "station_1": "Atlantis Station"}
    bad = _write_jsonl(tmp_path / "train_bad.jsonl", records)
    out = tmp_path / "prepared"
    code, err = _run(_argv(out, {**local_sources, "train": bad}, toy_repo), capsys)
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "record 2 (testland/toy)" in err and "field 'station_1'" in err and "Atlantis Station" in err
    assert not out.exists() and not list(tmp_path.glob(".prepared.*"))


def test_cli_skip_invalid_lists_skipped_records(
    toy_repo: Path, local_sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [{**r, "answer": None if r["answer"] is None else str(r["answer"])} for r in train_records()]
    records[1] = {**records[1], "answer": "perhaps"}  # answers as text: a string column in parquet
    records[6] = {**records[6], "type": "Counting9"}
    bad = _write_parquet(tmp_path / "train_bad.parquet", records)
    out = tmp_path / "prepared"
    code, err = _run(_argv(out, {**local_sources, "train": bad}, toy_repo, "--skip-invalid"), capsys)
    assert code == 0, err
    manifest = read_manifest(out)
    assert manifest["skipped_count"] == 2
    assert [(s["record"], s["type"]) for s in manifest["skipped"]] == [(1, "TorF2"), (6, "Counting9")]
    assert "field 'answer'" in manifest["skipped"][0]["error"]
    assert manifest["counts"]["train"]["rows"] == 6
    assert "TorF2" not in manifest["counts"]["train"]["by_type"]
    train_source = next(s for s in manifest["sources"] if s["role"] == "train")
    assert (train_source["records"], train_source["skipped"], train_source["rows"]) == (8, 2, 6)


def test_cli_limit_and_overwrite(
    toy_repo: Path, local_sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prepared"
    assert _run(_argv(out, local_sources, toy_repo, "--limit", "1"), capsys)[0] == 0
    assert read_manifest(out)["counts"]["train"]["rows"] == 1
    code, err = _run(_argv(out, local_sources, toy_repo), capsys)
    assert code == 1 and "not empty" in err
    assert read_manifest(out)["counts"]["train"]["rows"] == 1  # untouched
    assert _run(_argv(out, local_sources, toy_repo, "--overwrite"), capsys)[0] == 0
    assert read_manifest(out)["counts"]["train"]["rows"] == 8


def test_cli_planning_templates_keep_only_the_listed_ones(
    toy_repo: Path, local_sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "short"
    code, err = _run(_argv(out, local_sources, toy_repo, "--planning-templates", "short"), capsys)
    assert code == 0, err
    manifest, rows = read_manifest(out), _all_rows(out)
    assert manifest["planning_templates"] == ["short"]
    assert [r["extra_info"]["template"] for r in rows["planning.parquet"]] == ["short"]  # the long1 record is out
    assert [r["extra_info"]["template"] for r in rows["val.parquet"]] == ["short", "short"]
    assert [r["extra_info"]["index"] for r in rows["val.parquet"]] == [0, 1]  # positions stay contiguous
    assert [r["extra_info"]["source_id"] for r in rows["val.parquet"]] == [
        "reasonmap_val.jsonl:0:short",
        "reasonmap_val.jsonl:1:short",
    ]
    excluded = {s["role"]: s["excluded_by_template"] for s in manifest["sources"]}
    assert excluded == {"train": 1, "val": 2, "test": 0}
    assert manifest["counts"]["train"]["by_type"]["TorF1"] == 2  # VQA rows are untouched

    out = tmp_path / "long2"
    code, err = _run(_argv(out, local_sources, toy_repo, "--planning-templates", "long2"), capsys)
    assert code == 0, err
    rows = _all_rows(out)
    assert "planning.parquet" not in rows  # training planning records are long1 and short
    assert [(r["extra_info"]["template"], r["extra_info"]["source_id"]) for r in rows["val.parquet"]] == [
        ("long2", "reasonmap_val.jsonl:1:long")  # the benchmark's long form is long1 or long2 by its question
    ]
    code, err = _run(_argv(tmp_path / "bad", local_sources, toy_repo, "--planning-templates", "short,long3"), capsys)
    assert code == 1 and "--planning-templates" in err and "unknown: long3" in err
    assert not (tmp_path / "bad").exists()


def test_cli_with_only_a_training_source_says_no_validation_file_was_written(
    toy_repo: Path, local_sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train-only"
    code, err = _run(_argv(out, {"train": local_sources["train"]}, toy_repo), capsys)
    assert code == 0, err
    assert f"data_prep.reasonmap: warning: {NO_VALIDATION_WARNING}\n" in err
    assert "no val.parquet written" in err and "--source val=FSCCS/ReasonMap" in err
    assert read_manifest(out)["warnings"] == [NO_VALIDATION_WARNING] and not (out / "val.parquet").exists()
    code, err = _run(_argv(tmp_path / "with-val", local_sources, toy_repo), capsys)
    assert code == 0 and "no val.parquet" not in err
    assert NO_VALIDATION_WARNING not in read_manifest(tmp_path / "with-val")["warnings"]


def test_cli_reports_duplicates_and_refuses_a_question_with_two_answers(
    toy_repo: Path, local_sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = train_records()
    doubled = _write_jsonl(tmp_path / "train_doubled.jsonl", [*records, {**records[0], "question": " Is Alpha the "
                           "same   line as Gamma?"}])  # fmt: skip
    out = tmp_path / "doubled"
    code, err = _run(_argv(out, {"train": doubled, "val": local_sources["val"]}, toy_repo), capsys)
    assert code == 0, err
    assert "warning: 1 duplicate rows in train" in err
    manifest = read_manifest(out)
    assert manifest["duplicates"]["count"] == {"train": 1}
    assert manifest["duplicates"]["listed"] == [{"split": "train", "source": str(doubled), "record": 8, "same_as": 0}]
    assert manifest["counts"]["train"]["rows"] == 9  # kept, as in the source

    conflicting = _write_jsonl(tmp_path / "train_conflict.jsonl", [*records, {**records[3], "answer": 3}])
    code, err = _run(_argv(tmp_path / "conflict", {"train": conflicting}, toy_repo), capsys)
    assert code == 1 and "train_conflict.jsonl record 8 (testland/toy): field 'answer'" in err
    assert "as record 3 of this split, with another answer" in err and not (tmp_path / "conflict").exists()
    code, err = _run(_argv(tmp_path / "skipped", {"train": conflicting}, toy_repo, "--skip-invalid"), capsys)
    assert code == 0 and [s["record"] for s in read_manifest(tmp_path / "skipped")["skipped"]] == [8]


def test_cli_reports_a_test_source_equal_to_the_train_source(
    toy_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_jsonl(tmp_path / "records.jsonl", train_records())
    out = tmp_path / "prepared"
    code, err = _run(_argv(out, {"train": source, "test": source}, toy_repo), capsys)
    assert code == 0, err
    assert f"warning: the test source is the training source ({source}, split test)" in err
    assert "8 test rows ask a question the training rows ask too" in err
    assert read_manifest(out)["duplicates"]["shared_with_train"] == {"test": 8}
    assert sum("training source" in w for w in read_manifest(out)["warnings"]) == 1


def test_cli_usage_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["--out", str(tmp_path / "o"), "--source", str(tmp_path / "nothing_here")], capsys)
    assert code == 1 and "no such file or folder" in err and err.count("\n") == 1
    mystery = _write_jsonl(tmp_path / "questions.jsonl", [])
    code, err = _run(["--out", str(tmp_path / "o"), "--source", str(mystery)], capsys)
    assert code == 1 and "cannot tell its role" in err
    with pytest.raises(SystemExit) as info:
        main(["--source", "x"])  # --out missing: argparse's usage error
    assert info.value.code == 2


def test_hub_path_with_load_dataset_mocked(
    toy_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    png = (toy_repo / "maps/testland/toy.png").read_bytes()
    hub = {
        ("FSCCS/ReasonMap-Train", "train"): _hub_dataset(train_records(), png),
        ("FSCCS/ReasonMap-Plus", "test"): _hub_dataset(plus_records(None), png),
        ("FSCCS/ReasonMap", "validation"): datasets.Dataset.from_list(
            [{**r, "json": json.dumps(NETWORK), "routes": json.dumps({"plan_1": []})}
             for r in benchmark_records(base64.b64encode(png).decode())]
        ),
    }  # fmt: skip
    calls: list[tuple[str, str]] = []

    def fake_load_dataset(name: str, split: str | None = None, **kwargs: Any) -> datasets.Dataset:
        calls.append((name, split))
        return hub[(name, split)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "prepared"
    code, err = _run(["--out", str(out), "--stations-root", str(toy_repo), "--max-pixels", str(BUDGET)], capsys)
    assert code == 0, err
    assert sorted(calls) == sorted(hub)
    manifest = read_manifest(out)
    assert {s["role"]: (s["kind"], s["rows"]) for s in manifest["sources"]} == {
        "train": ("hub", 8), "val": ("hub", 4), "test": ("hub", 3),
    }  # fmt: skip
    assert manifest["images"]["distinct_maps"] == 1
    for file_rows in _all_rows(out).values():
        for row in file_rows:
            validate_row(row)
    # a hub failure is one line, naming the dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    code, err = _run(["--out", str(tmp_path / "o2"), "--source", "FSCCS/ReasonMap-Train"], capsys)
    assert code == 1 and "FSCCS/ReasonMap-Train" in err and "offline" in err and err.count("\n") == 1


def test_parse_source_roles_and_splits(tmp_path: Path) -> None:
    assert (parse_source("FSCCS/ReasonMap-Train").role, parse_source("FSCCS/ReasonMap-Train").split) == (
        "train",
        "train",
    )
    assert (parse_source("FSCCS/ReasonMap-Plus").role, parse_source("FSCCS/ReasonMap-Plus").split) == ("test", "test")
    assert (parse_source("FSCCS/ReasonMap").role, parse_source("FSCCS/ReasonMap").split) == ("val", "validation")
    assert parse_source("val=FSCCS/ReasonMap-Plus@train").split == "train"
    assert infer_role("data/ReasonMap-Train") == "train"
    with pytest.raises(SourceError):
        parse_source("not a path or hub name")


# --- the writer on its own -------------------------------------------------------------------------------------------


def _rows(toy_repo: Path) -> list[dict[str, Any]]:
    context = RecordContext.create(stations_root=toy_repo, max_pixels=BUDGET)
    return [record_to_row(r, index=i, context=context) for i, r in enumerate(train_records())]


def test_writer_failure_mid_write_leaves_nothing(
    toy_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(toy_repo)
    real = writer._write_parquet
    written: list[str] = []

    def flaky(path: Path, file_rows: list[dict[str, Any]]) -> None:
        if len(written) == 2:
            raise OSError("disk full (injected)")
        real(path, file_rows)
        written.append(path.name)

    monkeypatch.setattr(writer, "_write_parquet", flaky)
    out = tmp_path / "prepared"
    with pytest.raises(OSError, match="injected"):
        write_dataset(out, {"train": rows}, manifest_extra={})
    assert written == ["torf.parquet", "counting.parquet"]
    assert not out.exists() and list(tmp_path.iterdir()) == [toy_repo]
    # replacing an existing dataset: a failure keeps the old one intact
    monkeypatch.setattr(writer, "_write_parquet", real)
    write_dataset(out, {"train": rows[:1]}, manifest_extra={"generation": "old"})
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    monkeypatch.setattr(writer, "_write_parquet", flaky)
    written.clear()
    with pytest.raises(OSError, match="injected"):
        write_dataset(out, {"train": rows}, manifest_extra={}, overwrite=True)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert read_manifest(out)["generation"] == "old" and sorted(tmp_path.iterdir()) == sorted([toy_repo, out])


def test_writer_rejects_bad_input_before_writing(toy_repo: Path, tmp_path: Path) -> None:
    rows = _rows(toy_repo)
    out = tmp_path / "prepared"
    with pytest.raises(ValueError, match="keys must be"):
        write_dataset(out, {"training": rows}, manifest_extra={})
    with pytest.raises(ValueError, match="writer's keys"):
        write_dataset(out, {"train": rows}, manifest_extra={"files": 1})
    broken = [*rows[:3], {**rows[3], "ability": "planning"}]
    with pytest.raises(RowError, match="train row 3: field 'ability'"):
        write_dataset(out, {"train": broken}, manifest_extra={})
    with pytest.raises(RowError, match="field 'extra_info.split'"):
        write_dataset(out, {"val": rows}, manifest_extra={})
    with pytest.raises(RowError, match="field 'surprise'"):
        write_dataset(out, {"train": [{**rows[0], "surprise": 1}]}, manifest_extra={})
    by_path = {**rows[0], "images": [{**rows[0]["images"][0], "bytes": None, "path": "images/" + "0" * 64 + ".png"}]}
    with pytest.raises(RowError, match="the writer stores images itself; give it the PNG 'bytes'"):
        write_dataset(out, {"train": [by_path]}, manifest_extra={})
    assert not out.exists()


def test_writer_omits_empty_stages_and_round_trips_rows(toy_repo: Path, tmp_path: Path) -> None:
    rows = [r for r in _rows(toy_repo) if r["extra_info"]["question_type"] in ("TorF1", "planning")]
    out = write_dataset(tmp_path / "p", {"train": rows}, manifest_extra={"generator": "test"})
    manifest = read_manifest(out)
    assert manifest["stages"] == ["torf.parquet", "planning.parquet"]
    assert manifest["generator"] == "test"
    back = pq.read_table(out / "torf.parquet").to_pylist() + pq.read_table(out / "planning.parquet").to_pylist()
    back = sorted(back, key=lambda r: r["extra_info"]["index"])
    # nested columns survive exactly; the image is written once and the row keeps its path
    assert [{k: v for k, v in r.items() if k != "images"} for r in back] == [
        {k: v for k, v in r.items() if k != "images"} for r in rows
    ]
    for row, original in zip(back, rows, strict=True):
        (entry,) = row["images"]
        assert entry["bytes"] is None and (out / entry["path"]).read_bytes() == original["images"][0]["bytes"]
        assert (entry["min_pixels"], entry["max_pixels"]) == (3136, BUDGET)
    assert len(manifest["image_files"]) == 1 and len(list((out / "images").iterdir())) == 1
    assert pq.read_schema(out / "torf.parquet").equals(writer.ROW_SCHEMA)


# --- real networks and a real map (../shared/reasonmap) ------------------------------------------------------------


def test_real_networks_and_map(reasonmap_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Records in the released format (relative ``json`` and ``figure`` paths) on real cities, through the CLI."""
    records: list[dict[str, Any]] = []
    station_files = sorted((reasonmap_dir / "stations").glob("*/*.json"))
    maps = {
        p.relative_to(reasonmap_dir / "maps").with_suffix("").as_posix(): p
        for p in (reasonmap_dir / "maps").glob("*/*.png")
    }
    if not maps:
        pytest.skip("no real maps under ../shared/reasonmap/maps")
    figure_of = "./maps/italy/rome.png" if "italy/rome" in maps else f"./maps/{sorted(maps)[0]}.png"
    for path in station_files:
        country, city = path.parent.name, path.stem
        net = MetroNetwork.from_json(path)
        lines = list(net.lines)
        a = net.lines[lines[0]][0]
        b = next(s for s in reversed(net.lines[lines[0]]) if net.canonical(s) != net.canonical(a))  # loops
        transfer = next(s for s in net.stations if net.is_transfer(s)) if any(map(net.is_transfer, net.stations)) else a
        common = {"country": country, "city": city, "difficulty_city": "easy", "figure": figure_of,
                  "json": f"stations/{country}/{city}.json", "question_transfer_count": 0}  # fmt: skip
        records += [
            {**common, "type": "TorF1", "question": f"Is {a} on the same line as {b}?", "answer": 1,
             "station_1": a, "station_2": b},
            {**common, "type": "Counting2", "question": f"How many lines pass {transfer}?",
             "answer": len(net.lines_through(transfer)), "station_1": transfer, "station_2": ""},
            {**common, "type": "Counting3", "question": "How many lines?", "answer": len(lines),
             "station_1": "", "station_2": ""},
            {**common, "type": "planning", "question": f"From {a} to {b}.", "station_1": a, "station_2": b},
        ]  # fmt: skip
    source = _write_jsonl(tmp_path / "ReasonMap-Train.jsonl", records)
    out = tmp_path / "prepared"
    budget = 512 * 28 * 28
    code, err = _run(
        [
            "--out",
            str(out),
            "--source",
            str(source),
            "--stations-root",
            str(reasonmap_dir),
            "--max-pixels",
            str(budget),
        ],
        capsys,
    )
    assert code == 0, err
    manifest = read_manifest(out)
    assert manifest["counts"]["train"]["rows"] == 4 * len(station_files)
    assert manifest["counts"]["train"]["cities"] == len(station_files)
    assert manifest["images"] == {"distinct_maps": 1, "resized": 1}
    with Image.open(maps[figure_of[len("./maps/") : -len(".png")]]) as original:
        target = smart_resize_dims(*original.size, min_pixels=3136, max_pixels=budget)
    for file_rows in _all_rows(out).values():
        for row in file_rows:
            gt = validate_row(row)
            assert gt.network == MetroNetwork(gt.network).to_dict()
            assert open_row_image(row["images"][0], data_dir=out, where="real").size == target
