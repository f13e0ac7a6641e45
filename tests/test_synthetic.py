"""Synthetic data: exact answers (re-derived here by brute force), legible maps, determinism, schema, rewards.

The answer checks deliberately share no code with ``data_prep.synth_questions``: they work on the raw
line -> stations dict with plain loops and a BFS over lines.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import itertools
import json
import random
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep import prompts, synth_render
from data_prep.image_files import open_row_image
from data_prep.schema import validate_row
from data_prep.synth_network import classify_difficulty, count_transfers, generate_city
from data_prep.synth_questions import CityMeta, default_counts, generate_questions
from data_prep.synth_render import render_map, render_schematic
from data_prep.synthetic import SyntheticParams, generate_dataset, main
from reward_fns.gold import gold_response, route_answer
from reward_fns.ground_truth import GroundTruth
from reward_fns.network import MetroNetwork, normalize_station
from tests.conftest import real_station_files

# Hand-built networks: a plain cross with a disconnected line, a loop, and a branch sharing its trunk.
CROSS = {
    "Line 1": ["Ash Station", "Birch Station", "Cedar Station", "Dune Station", "Elm Station"],
    "Line 2": ["Fern Station", "Cedar Station", "Grove Station", "Heath Station"],
    "Line 3": ["Heath Station", "Iris Station", "Juniper Station"],
    "Line 4": ["Kale Station", "Lark Station", "Moss Station"],  # unreachable from the rest
}
LOOP = {
    "Circle Line": ["Ash Station", "Birch Station", "Cedar Station", "Dune Station", "Elm Station", "Ash Station"],
    "Red Line": ["Fern Station", "Birch Station", "Grove Station", "Heath Station"],
}
BRANCH = {
    "M1": ["Ash Station", "Birch Station", "Cedar Station", "Dune Station", "Elm Station"],
    "M1 Branch": ["Ash Station", "Birch Station", "Cedar Station", "Fern Station", "Grove Station"],
    "M2": ["Heath Station", "Dune Station", "Iris Station"],
}


# independent answers --------------------------------------------------------------------------------------


def _n(name: str) -> str:
    return normalize_station(name)


def _min_rides(lines: dict[str, list[str]], a: str, b: str) -> int | None:
    """Fewest rides from a to b: BFS over lines (two lines adjacent when they share a station)."""
    on = {line: {_n(s) for s in stations} for line, stations in lines.items()}
    start = [line for line in lines if _n(a) in on[line]]
    goal = {line for line in lines if _n(b) in on[line]}
    frontier, seen, rides = start, set(start), 1
    while frontier:
        if goal & set(frontier):
            return rides
        nxt = []
        for x in frontier:
            for y in lines:
                if y not in seen and on[x] & on[y]:
                    seen.add(y)
                    nxt.append(y)
        frontier, rides = nxt, rides + 1
    return None


def check_answer(gt: GroundTruth, text: str) -> None:
    """Recompute the answer of one question from ``gt.network`` and compare."""
    lines = gt.network
    on = {line: [_n(s) for s in stations] for line, stations in lines.items()}
    t = gt.question_type
    if t == "TorF1":
        expected = int(any(_n(gt.station_1) in s and _n(gt.station_2) in s for s in on.values()))
        assert gt.answer == expected
        assert _n(gt.station_1) != _n(gt.station_2)
    elif t == "TorF2":
        assert gt.answer == int(_n(gt.station_1) in on[gt.line])
        assert gt.line in text
    elif t == "Counting1":
        counts = set()
        for stations in on.values():
            if _n(gt.station_1) in stations and _n(gt.station_2) in stations:
                assert len(set(stations)) == len(stations), "Counting1 asked on a loop line"
                counts.add(abs(stations.index(_n(gt.station_1)) - stations.index(_n(gt.station_2))) - 1)
        assert len(counts) == 1, f"ambiguous count {counts}"
        assert len(gt.options) == 4 and len(set(gt.options)) == 4
        assert all(o.isdigit() for o in gt.options)
        assert int(gt.options[gt.answer]) == counts.pop()
        for letter, option in zip("ABCD", gt.options, strict=True):
            assert f"{letter}) {option} \n" in text
    elif t == "Counting2":
        assert gt.answer == sum(_n(gt.station_1) in s for s in on.values())
    elif t == "Counting3":
        assert gt.answer == len(lines)
    else:
        rides = _min_rides(lines, gt.station_1, gt.station_2)
        assert rides is not None
        assert gt.question_transfer_count == rides - 1
        (route,) = gt.routes.values()
        assert len(route) == rides
        assert _n(route[0]["departure_stop"]) == _n(gt.station_1)
        assert _n(route[-1]["arrival_stop"]) == _n(gt.station_2)
        for ride, nxt in itertools.zip_longest(route, route[1:]):
            stations = on[ride["route_name"]]
            i, j = stations.index(_n(ride["departure_stop"])), stations.index(_n(ride["arrival_stop"]))
            raw = lines[ride["route_name"]]
            via = raw[i + 1 : j] if i < j else raw[j + 1 : i][::-1]
            assert [_n(v) for v in ride["via_stops"]] == [_n(v) for v in via]
            assert ride["num_via_stops"] == len(via)
            if nxt is not None:
                assert _n(ride["arrival_stop"]) == _n(nxt["departure_stop"])
        assert f"from {gt.station_1} to {gt.station_2}?" in text


def _questions(lines: dict, seed: int = 0, total: int = 60):
    net = MetroNetwork(lines, name="test")
    meta = CityMeta("Testville", "nowhere", "easy")
    return generate_questions(net, meta, random.Random(seed), default_counts(total))


@pytest.mark.parametrize("lines", [CROSS, LOOP, BRANCH], ids=["cross", "loop", "branch"])
def test_answers_on_hand_built_networks(lines):
    questions = _questions(lines)
    types = collections.Counter(q.question_type for q in questions)
    assert set(types) == {"TorF1", "TorF2", "Counting1", "Counting2", "Counting3", "planning"}
    for q in questions:
        check_answer(q.ground_truth, q.text)
    keys = [q.key for q in questions]
    assert len(keys) == len(set(keys))


def test_counting1_avoids_loops_and_ambiguous_trunks():
    for q in _questions(LOOP, total=80):
        if q.question_type == "Counting1":
            assert not (
                {_n(q.ground_truth.station_1), _n(q.ground_truth.station_2)} <= {_n(s) for s in LOOP["Circle Line"]}
            )


def test_unreachable_pairs_are_never_planning_questions():
    isolated = {_n(s) for s in CROSS["Line 4"]}
    for q in _questions(CROSS, total=120):
        if q.question_type == "planning":
            assert (_n(q.ground_truth.station_1) in isolated) == (_n(q.ground_truth.station_2) in isolated)


@pytest.mark.parametrize("difficulty", ["easy", "middle", "hard"])
def test_answers_and_balance_on_generated_cities(difficulty):
    for seed in range(3):
        city = generate_city(seed, difficulty)
        assert city.difficulty == difficulty
        assert classify_difficulty(len(city.network.lines), count_transfers(city.network)) == difficulty
        meta = CityMeta(city.name, city.country, city.difficulty)
        questions = generate_questions(city.network, meta, random.Random(seed), default_counts(61))
        for q in questions:
            check_answer(q.ground_truth, q.text)
        for t in ("TorF1", "TorF2"):
            answers = collections.Counter(q.ground_truth.answer for q in questions if q.question_type == t)
            assert abs(answers[1] - answers[0]) <= 1, (t, answers)
        transfers = collections.Counter(
            min(q.ground_truth.question_transfer_count, 2) for q in questions if q.question_type == "planning"
        )
        assert transfers[0] > 0 and transfers[1] > 0


def test_answers_on_real_networks(reasonmap_dir):
    for path in real_station_files()[::5]:  # six cities, Shanghai's loop line among them
        net = MetroNetwork.from_json(path)
        meta = CityMeta(path.stem, path.parent.name, "easy")
        for q in generate_questions(net, meta, random.Random(1), default_counts(31)):
            check_answer(q.ground_truth, q.text)


def test_difficulty_thresholds_split_the_real_cities_evenly(reasonmap_dir):
    labels = collections.Counter()
    for path in real_station_files():
        net = MetroNetwork.from_json(path)
        labels[classify_difficulty(len(net.lines), count_transfers(net))] += 1
    assert labels == {"easy": 10, "middle": 10, "hard": 10}


def test_prompts_follow_the_official_shapes():
    assert "Number of Via Stops:" in prompts.planning("long1", "A", "B")
    assert "Via Stops:" in prompts.planning("long2", "A", "B")
    assert "Number of Via Stops:" not in prompts.planning("long2", "A", "B")  # how the official eval tells them apart
    assert "Via Stops" not in prompts.planning("short", "A", "B")
    assert prompts.planning("short", "A", "B").startswith("According to the subway map, how do I get from A to B?")
    assert '"\\boxed{}"' in prompts.torf1("A", "B")
    assert prompts.counting1("A", "B", ["8", "1", "25", "12"]).endswith("A) 8 \nB) 1 \nC) 25 \nD) 12 \n")
    assert prompts.counting3().endswith("how many subway (metro) lines are there in total?")


# legibility --------------------------------------------------------------------------------------------------


def _overlap(a, b) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


# Measured: over 45 generated maps (15 seeds per difficulty) and the 29 real networks other than New York,
# no two rendered label boxes overlap at all and no label box overlaps another station's marker. The
# tolerance allows 1 px^2 for rounding.
LABEL_OVERLAP_TOLERANCE_PX2 = 1.0


def _assert_legible(rendered) -> None:
    for (a, box_a), (b, box_b) in itertools.combinations(rendered.label_boxes, 2):
        assert _overlap(box_a, box_b) <= LABEL_OVERLAP_TOLERANCE_PX2, f"labels {a!r} and {b!r} overlap"
    for name, box in rendered.label_boxes:
        for other, marker in rendered.marker_boxes:
            if other != name:
                assert _overlap(box, marker) <= LABEL_OVERLAP_TOLERANCE_PX2, f"label {name!r} covers {other!r}"
        assert 0 <= box[0] and box[2] <= rendered.width and 0 <= box[1] and box[3] <= rendered.height


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_generated_map_labels_do_not_overlap(difficulty):
    city = generate_city(11, difficulty)
    rendered = render_map(city.layout)
    assert len(rendered.label_boxes) == len(city.network.stations)
    assert rendered.crowded_labels == 0
    _assert_legible(rendered)
    with Image.open(io.BytesIO(rendered.png)) as image:
        assert image.size == (rendered.width, rendered.height)
        assert image.width % 28 == 0 and image.height % 28 == 0


def test_schematic_of_a_real_network_is_legible(reasonmap_dir):
    net = MetroNetwork.from_json(reasonmap_dir / "stations" / "portugal" / "lisboa.json")
    rendered = render_schematic(net, title="Lisboa")
    assert len(rendered.label_boxes) == len(net.stations)
    _assert_legible(rendered)


def test_render_is_deterministic():
    city = generate_city(5, "easy")
    assert render_map(city.layout).png == render_map(generate_city(5, "easy").layout).png


# the dataset -------------------------------------------------------------------------------------------------


SMALL = SyntheticParams(cities=3, seed=7, questions_per_city=13, difficulty="easy")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "ds"
    return generate_dataset(out, SMALL, contact_sheet=True)


def _rows(folder: Path) -> list[dict]:
    return [row for path in sorted(folder.glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def test_same_seed_gives_byte_identical_files(small_dataset, tmp_path):
    again = generate_dataset(tmp_path / "again", SyntheticParams(**dataclasses.asdict(SMALL)), contact_sheet=True)
    names = sorted(p.relative_to(small_dataset).as_posix() for p in small_dataset.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    assert {"manifest.json", "contact_sheet.png", "val.parquet", "test.parquet"} <= set(names)
    assert sum(name.startswith("images/") for name in names) == 3  # one map per city
    for name in names:
        assert (small_dataset / name).read_bytes() == (again / name).read_bytes(), name
    other = generate_dataset(tmp_path / "other", dataclasses.replace(SMALL, seed=8))
    assert (other / "val.parquet").read_bytes() != (small_dataset / "val.parquet").read_bytes()


def test_rows_validate_and_splits_are_by_city(small_dataset):
    rows = _rows(small_dataset)
    assert len(rows) == 3 * 13
    cities_of = collections.defaultdict(set)
    for row in rows:
        gt = validate_row(row)
        assert row["data_source"] == "synthetic"
        cities_of[row["extra_info"]["split"]].add(gt.city)
        with open_row_image(row["images"][0], data_dir=small_dataset, where="synthetic row") as image:
            assert image.width % 28 == 0 and image.height % 28 == 0
    assert set(cities_of) == {"train", "val", "test"}
    assert not any(a & b for a, b in itertools.combinations(cities_of.values(), 2))
    manifest = json.loads((small_dataset / "manifest.json").read_text())
    assert manifest["data_source"] == "synthetic" and manifest["generator"]["seed"] == 7
    assert {c["split"] for c in manifest["cities"]} == {"train", "val", "test"}


def _compute_score():
    import reward_fns

    if hasattr(reward_fns, "compute_score"):
        return reward_fns.compute_score
    from reward_fns.score import compute_score

    return compute_score


def test_gold_answers_get_full_reward_for_every_question_type(small_dataset):
    compute_score = _compute_score()
    rows = _rows(small_dataset)
    seen = set()
    for row in rows:
        gt_text = row["reward_model"]["ground_truth"]
        gt = GroundTruth.from_json(gt_text)
        seen.add(gt.question_type if gt.question_type != "planning" else gt.template)
        gold = gold_response(gt)
        if gt.question_type == "planning":  # the row's reference route is the gold route, via stops as ridden
            assert gold == route_answer(gt.routes["0"], gt.template)
        result = compute_score("synthetic", gold, gt_text, row["extra_info"])
        assert result["acc"] == 1.0 and result["format"] == 1.0, (gt.question_type, gold, result)
        assert result["score"] == pytest.approx(result["weight"] * (1.0 + 10.0 + 0.5 * result["detail"]))
        if gt.question_type == "planning":
            assert result["detail"] > 0
        if gt.question_type != "planning" or gt.template == "short":
            # the released reward reads everything after "Arrival Stop:" as the arrival, so in "released" mode a
            # correct long-template answer is wrong by design (reward_fns.reward_released.parse_route_blocks_strict)
            assert compute_score("synthetic", gold, gt_text, mode="released")["acc"] == 1.0
    assert seen >= {"TorF1", "TorF2", "Counting1", "Counting2", "Counting3", "short", "long1", "long2"}


def test_cli_without_render_and_with_a_real_network(tmp_path, reasonmap_dir):
    path = reasonmap_dir / "stations" / "portugal" / "lisboa.json"
    out = tmp_path / "cli"
    code = main(
        ["--out", str(out), "--cities", "2", "--seed", "3", "--questions-per-city", "7", "--no-render"]
        + ["--from-network", str(path), "--planning-templates", "short"]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"]["rendered"] is False
    assert manifest["generator"]["from_networks"] == ["portugal/lisboa.json"]
    assert [c["source"] for c in manifest["cities"]] == ["generated", "generated", "portugal/lisboa.json"]
    for row in _rows(out):
        gt = validate_row(row)
        check_answer(gt, row["prompt"][0]["content"])
        assert gt.question_type != "planning" or gt.template == "short"
    assert main(["--out", str(out), "--cities", "1", "--seed", "3", "--no-render"]) == 2  # not empty, no overwrite


def test_no_cjk_font_is_a_warning_not_an_error(monkeypatch):
    monkeypatch.setattr(synth_render, "_cjk_font_path", lambda: None)  # a machine without any CJK font
    net = MetroNetwork({"1号线": ["西单站", "东单站", "王府井站"]}, name="北京")
    with pytest.warns(UserWarning, match="no CJK font found"):
        rendered = render_schematic(net)
    with Image.open(io.BytesIO(rendered.png)) as image:
        assert image.size == (rendered.width, rendered.height) and image.format == "PNG"
    assert {name for name, _ in rendered.label_boxes} == {"西单站", "东单站", "王府井站"}  # every label still placed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render_schematic(MetroNetwork({"Line 1": ["Alder", "Birch", "Cedar"]}))
    assert not [w for w in caught if "CJK" in str(w.message)]  # Latin labels need no CJK font
