"""``python -m recipe.evaluate`` without a model: files, test sets, responses, scoring, resume, compare, export."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep.reasonmap import record_to_row
from data_prep.synthetic import SyntheticParams, generate_dataset
from data_prep.writer import write_dataset
from recipe.evaluate import scoring
from recipe.evaluate.cli import main
from recipe.evaluate.files import EvalInputError, JsonlAppender, read_jsonl, repair_torn_tail, write_text_atomic
from recipe.evaluate.generation import GenerateRequest, GenerationSettings, Output, run_generate
from recipe.evaluate.models import resolve_model
from recipe.evaluate.report import headline
from recipe.evaluate.responses import meta_path, read_responses
from recipe.evaluate.testset import load_questions
from recipe.evaluate.training_logs import read_training_log, reward_series, validation_series
from recipe.evaluate.vlmevalkit import run_export
from recipe.row_images import chat_messages
from reward_fns.gold import gold_response
from reward_fns.ground_truth import GroundTruth

BEIJING = {
    "Line 1": ["复兴门站", "西单", "天安门西站", "天安门东站", "王府井站"],
    "Line 2": ["西直门站", "车公庄站", "阜成门站", "复兴门站"],
}
ROUTE = [
    {
        "route_name": "地铁2号线内环(西直门--西直门)",
        "departure_stop": "西直门",
        "arrival_stop": "复兴门",
        "via_stops": ["车公庄", "阜成门"],
        "num_via_stops": 2,
    },
    {
        "route_name": "地铁1号线八通线(古城--环球度假区)",
        "departure_stop": "复兴门",
        "arrival_stop": "王府井",
        "via_stops": ["西单", "天安门西", "天安门东"],
        "num_via_stops": 3,
    },
]
GOLD_SHORT = (
    "Route Name: Line 2\nDeparture Stop: 西直门站\nArrival Stop: 复兴门站\n--\n"
    "Route Name: Line 1\nDeparture Stop: 复兴门站\nArrival Stop: 王府井站\n"
)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (112, 84), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def benchmark_rows() -> list[dict[str, Any]]:
    """A hand-built ReasonMap benchmark record (short and long rows), through ``record_to_row`` as prep does."""
    record = {
        "question_short": "From 西直门站 to 王府井站? Answer with Route Name, Departure Stop, Arrival Stop.",
        "question_long": "From 西直门站 to 王府井站? Route Name, Departure Stop, Arrival Stop, Number of Via Stops: n",
        "figure": _png(),
        "station_1": "西直门站",
        "station_2": "王府井站",
        "country": "china",
        "city": "beijing",
        "difficulty_city": "middle",
        "difficulty_question": "medium",
        "question_transfer_count": 1,
        "json": BEIJING,
        "routes": {"0": ROUTE},
    }
    return [
        record_to_row(record, form=form, split="test", index=i, source_name="hand", max_pixels=4 * 3136)
        for i, form in enumerate(("short", "long"))
    ]


@pytest.fixture(scope="module")
def test_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("testset")
    synthetic = generate_dataset(root / "syn", SyntheticParams(cities=3, seed=5, questions_per_city=12, render=False))
    bench = write_dataset(root / "bench", {"test": benchmark_rows()}, manifest_extra={"generator": "test"})
    return [str(synthetic / "test.parquet"), str(bench / "test.parquet")]


def write_responses(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def gold_records(test_files: list[str]) -> list[dict[str, Any]]:
    return [
        {"id": q.id, "sample": 0, "response": gold_response(GroundTruth.from_json(q.ground_truth))}
        for q in load_questions(test_files)
    ]


# Files -----------------------------------------------------------------------------------------------------------


def test_torn_last_line_is_reported_and_cut(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with JsonlAppender(path) as log:
        log.write([{"a": 1}, {"a": 2}])
    with open(path, "ab") as f:
        f.write(b'{"a": 3, "tru')  # a killed writer
    content = read_jsonl(path)
    assert [r for _, r in content.records] == [{"a": 1}, {"a": 2}] and content.torn
    assert repair_torn_tail(path) and not repair_torn_tail(path)
    with JsonlAppender(path) as log:  # appending again starts on a clean line
        log.write([{"a": 4}])
    assert [r["a"] for _, r in read_jsonl(path).records] == [1, 2, 4]


def test_a_complete_bad_line_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(EvalInputError, match=r"log.jsonl:2: not a JSON line"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(EvalInputError, match=r"log.jsonl:2: not a JSON object"):
        read_jsonl(path)


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a.txt", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "x"


# Test sets and responses -----------------------------------------------------------------------------------------


def test_questions_of_prepared_files(test_files: list[str]) -> None:
    questions = load_questions(test_files)
    bench = [q for q in questions if q.data_source == "reasonmap"]
    assert [(q.id, q.template, q.form, q.question_difficulty) for q in bench] == [
        ("hand:0:short", "short", "short", "medium"),
        ("hand:1:long", "long1", "long", "medium"),
    ]
    assert {q.data_source for q in questions} == {"reasonmap", "synthetic"}
    assert len({q.id for q in questions}) == len(questions)


def test_bad_test_files_are_named(tmp_path: Path, test_files: list[str]) -> None:
    with pytest.raises(EvalInputError, match="not found"):
        load_questions([str(tmp_path / "missing.parquet")])
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(EvalInputError, match="junk.parquet: not a Parquet file"):
        load_questions([str(tmp_path / "junk.parquet")])
    pq.write_table(pa.table({"question": ["q"]}), tmp_path / "other.parquet")
    with pytest.raises(EvalInputError, match="other.parquet: not a prepared test file"):
        load_questions([str(tmp_path / "other.parquet")])
    table = pq.read_table(test_files[1])
    rows = table.to_pylist()
    rows[1]["reward_model"]["ground_truth"] = '{"question_type": "planning"}'
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tmp_path / "bad_gt.parquet")
    with pytest.raises(EvalInputError, match=r"bad_gt.parquet row 1: field 'reward_model.ground_truth'"):
        load_questions([str(tmp_path / "bad_gt.parquet")])
    with pytest.raises(EvalInputError, match=r"row 0: duplicate question id 'hand:0:short'"):
        load_questions([test_files[1], test_files[1]])


def test_bad_responses_are_named(tmp_path: Path, test_files: list[str]) -> None:
    known = {q.id: q for q in load_questions(test_files)}
    good = {"id": "hand:0:short", "sample": 0, "response": "x"}
    cases = [
        ([good, {"id": "nope", "sample": 0, "response": "x"}], r":2: unknown question id 'nope'"),
        ([good, good], r":2: duplicate response for question 'hand:0:short' sample 0 \(first .*:1\)"),
        ([good, {"id": "hand:1:long", "response": 3}], r":2: field 'response'"),
        ([{"id": "hand:0:short", "sample": -1, "response": "x"}], r":1: field 'sample'"),
    ]
    for records, message in cases:
        path = write_responses(tmp_path / "r.jsonl", records)
        with pytest.raises(EvalInputError, match=message):
            read_responses([path], known)
    path = write_responses(tmp_path / "r.jsonl", [good])
    with open(path, "a") as f:
        f.write('{"id": "hand:1:long", "sam')
    responses = read_responses([path], known)
    assert list(responses.by_key) == [("hand:0:short", 0)] and responses.torn_files == [str(path)]


# Scoring ---------------------------------------------------------------------------------------------------------


def test_score_gold_and_garbage(tmp_path: Path, test_files: list[str]) -> None:
    gold = write_responses(tmp_path / "gold.jsonl", gold_records(test_files))
    out = tmp_path / "results"
    assert main(["score", "--responses", str(gold), "--test", *test_files, "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy_by_difficulty.png",
        "plus_per_type.png",
        "report.md",
        "scores.jsonl",
        "summary.json",
    ]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial folder left
    summary = json.loads((out / "summary.json").read_text())
    fixed = summary["planning"]["fixed"]
    assert fixed["short"]["accuracy"] == fixed["long"]["accuracy"] == 1.0
    for reading in ("released", "vlmevalkit"):
        assert summary["plus"][reading]["overall"]["accuracy"] == 1.0
    assert "fixed" not in summary["plus"]  # the fixed rules read ReasonMap-Plus as released: one reading, one record
    assert headline(summary)["fixed"]["reasonmap_plus"] == headline(summary)["released"]["reasonmap_plus"] == 1.0
    assert summary["coverage"]["reasonmap"] == {"questions": 2, "answered": 2, "responses": 2, "expected_responses": 2}
    records = {json.loads(line)["id"]: json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()}
    # the hand-built Beijing question, gold answer in the network's spelling: released map score 1 + 4 + 4 = 9
    # (names from the digits, stops with 站), +10; fixed the same.
    short = records["hand:0:short"]
    assert (short["released"]["acc"], short["released"]["map_score"], short["fixed"]["map_score"]) == (1, 19.0, 19.0)
    assert short["parsed"][0] == {
        "route_name": "Line 2",
        "departure": "西直门站",
        "arrival": "复兴门站",
        "num_via_stops": None,
        "via_stops": None,
    }
    report = (out / "report.md").read_text()
    for text in ("`released`", "`fixed`", "`vlmevalkit`", "paper, Qwen2.5-VL-7B: RewardMap", "31.51", "Coverage"):
        assert text in report
    garbage = write_responses(
        tmp_path / "garbage.jsonl", [{**r, "response": "I cannot tell."} for r in gold_records(test_files)]
    )
    out2 = tmp_path / "garbage"
    assert main(["score", "--responses", str(garbage), "--test", *test_files, "--out", str(out2), "--no-plots"]) == 0
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["planning"]["released"]["overall"]["accuracy"] == 0.0
    assert summary["planning"]["fixed"]["overall"]["map_score"] == 0.0
    assert summary["plus"]["vlmevalkit"]["overall"]["accuracy"] == 0.0


def test_partial_coverage_is_stated(tmp_path: Path, test_files: list[str]) -> None:
    records = gold_records(test_files)[:5]
    path = write_responses(tmp_path / "some.jsonl", records)
    out = tmp_path / "results"
    assert main(["score", "--responses", str(path), "--test", *test_files, "--out", str(out), "--no-plots"]) == 0
    coverage = json.loads((out / "summary.json").read_text())["coverage"]
    assert coverage["synthetic"]["answered"] == 5 and coverage["reasonmap"]["answered"] == 0
    assert "0 / 2 questions answered" in (out / "report.md").read_text()


def test_interrupted_score_resumes_without_rescoring(
    tmp_path: Path, test_files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    responses = write_responses(tmp_path / "gold.jsonl", gold_records(test_files))
    out = tmp_path / "results"
    real = scoring.score_response
    calls = {"n": 0}

    def dies_after_8(question: Any, response: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 8:
            raise KeyboardInterrupt
        return real(question, response)

    monkeypatch.setattr(scoring, "_APPEND_EVERY", 4)
    monkeypatch.setattr(scoring, "score_response", dies_after_8)
    n = len(gold_records(test_files))
    argv = ["score", "--responses", str(responses), "--test", *test_files, "--out", str(out), "--no-plots"]
    assert main(argv) == 130
    assert not out.exists()  # nothing half-written in the results folder
    partial = tmp_path / ".results.partial" / "scores.jsonl"
    assert len(read_jsonl(partial).records) == 8
    monkeypatch.setattr(scoring, "score_response", real)
    assert main(argv) == 0
    timing = json.loads((out / "summary.json").read_text())["timing"]
    assert (timing["reused"], timing["scored"]) == (8, n - 8)
    assert main(argv) == 0  # a complete folder is reused wholesale
    assert json.loads((out / "summary.json").read_text())["timing"]["scored"] == 0


def test_official_cities_filter(tmp_path: Path, test_files: list[str]) -> None:
    path = write_responses(tmp_path / "gold.jsonl", gold_records(test_files))
    out = tmp_path / "results"
    argv = ["score", "--responses", str(path), "--test", *test_files, "--out", str(out), "--no-plots"]
    assert main([*argv, "--official-cities"]) == 0
    planning = json.loads((out / "summary.json").read_text())["planning"]
    assert planning["excluded_outside_test_cities"] == 0  # beijing is a test city; synthetic rows are never filtered


# Generation without a model ------------------------------------------------------------------------------------


class EchoBackend:
    """A stand-in backend: answers each prompt with its question id and sample (counts what it was asked)."""

    name = "transformers"

    def __init__(self, fail_after: int | None = None) -> None:
        self.prompts: list[str] = []
        self.fail_after = fail_after

    def chat_text(self, messages: list[dict[str, Any]]) -> str:
        return json.dumps(messages, ensure_ascii=False)

    def generate(self, prompts: Any) -> list[list[Output]]:
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt
        self.prompts += [p.question_id for p in prompts]
        return [[Output(f"{p.question_id}#{s}", "stop", 3) for s in p.samples] for p in prompts]


def test_prompts_are_built_as_verl_builds_them() -> None:
    assert chat_messages({"prompt": [{"role": "user", "content": "<image>\nWhich line?"}]}) == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhich line?"}]}
    ]


def test_generate_resumes_after_a_kill_and_a_torn_line(tmp_path: Path, test_files: list[str]) -> None:
    out = tmp_path / "responses.jsonl"
    settings = GenerationSettings(backend="transformers", temperature=0.7, samples=2)
    request = GenerateRequest(model="stand-in", test_files=test_files, out=str(out), settings=settings, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        run_generate(request, backend=EchoBackend(fail_after=8), progress=False)
    assert len(read_jsonl(out).records) == 16  # two batches of 4 questions x 2 samples
    with open(out, "ab") as f:
        f.write(b'{"id": "torn')
    backend = EchoBackend()
    counts = run_generate(request, backend=backend, progress=False)
    n = len(load_questions(test_files))
    assert counts["generated"] == 2 * n - 16 and len(backend.prompts) == n - 8
    responses = read_responses([out], None)
    assert len(responses.by_key) == 2 * n and not responses.torn_files
    assert all(r.response == f"{r.id}#{r.sample}" for r in responses.by_key.values())
    assert run_generate(request, backend=EchoBackend(), progress=False)["generated"] == 0
    meta = json.loads(meta_path(out).read_text())
    assert meta["settings"]["samples"] == 2 and meta["settings"]["temperature"] == 0.7
    results = tmp_path / "results"
    assert main(["score", "--responses", str(out), "--test", *test_files, "--out", str(results), "--no-plots"]) == 0
    summary = json.loads((results / "summary.json").read_text())
    assert summary["samples_per_question"] == 2 and summary["pass_at_k"]["plus"]["k"] == 2
    assert summary["coverage"]["reasonmap"]["expected_responses"] == 4
    assert "## pass@k (%)" in (results / "report.md").read_text()


def test_generate_refuses_other_settings_and_bad_options(tmp_path: Path, test_files: list[str]) -> None:
    out = tmp_path / "responses.jsonl"
    settings = GenerationSettings(backend="transformers")
    request = GenerateRequest(model="stand-in", test_files=test_files, out=str(out), settings=settings, limit=4)
    run_generate(request, backend=EchoBackend(), progress=False)
    other = GenerateRequest(
        model="stand-in", test_files=test_files, out=str(out), settings=GenerationSettings(max_new_tokens=7)
    )
    with pytest.raises(EvalInputError, match="responses.jsonl.meta.json: the responses were generated with other"):
        run_generate(other, backend=EchoBackend(), progress=False)
    bad = GenerateRequest(model="m", test_files=test_files, out=str(out), settings=GenerationSettings(samples=4))
    with pytest.raises(EvalInputError, match="--temperature"):
        run_generate(bad, backend=EchoBackend(), progress=False)
    write_responses(out, [{"id": "nope", "sample": 0, "response": ""}])
    with pytest.raises(EvalInputError, match=r"responses.jsonl:1: unknown question id"):
        run_generate(request, backend=EchoBackend(), progress=False)


def test_cli_reports_bad_input_with_file_and_line(
    tmp_path: Path, test_files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "hand:0:short", "sample": 0, "response": "x"}\n{oops}\n')
    assert main(["score", "--responses", str(path), "--test", *test_files, "--out", str(tmp_path / "o")]) == 1
    assert f"{path}:2: not a JSON line" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_model_specs(tmp_path: Path) -> None:
    assert resolve_model("Qwen/Qwen2.5-VL-7B-Instruct").source == "hub"
    with pytest.raises(EvalInputError, match="no such folder"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalInputError, match="neither a Hugging Face model folder"):
        resolve_model(str(tmp_path / "empty"))
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"")
    assert resolve_model(str(hf)).source == "hf_folder"
    root = tmp_path / "ckpt"
    actor = root / "global_step_3" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    (actor / "fsdp_config.json").write_text("{}")
    (root / "latest_checkpointed_iteration.txt").write_text("5")
    with pytest.raises(EvalInputError, match="names step '5'"):
        resolve_model(str(root))
    (root / "latest_checkpointed_iteration.txt").write_text("3")
    with pytest.raises(EvalInputError, match="no model_world_size"):  # found the actor, nothing to merge
        resolve_model(str(root))


# Compare, export, training logs ------------------------------------------------------------------------------------


def test_compare_two_folders(tmp_path: Path, test_files: list[str]) -> None:
    records = gold_records(test_files)
    folders = []
    for name, rows in (("base", [{**r, "response": "no idea"} for r in records]), ("trained", records)):
        path = write_responses(tmp_path / f"{name}.jsonl", rows)
        folders.append(str(tmp_path / name))
        assert main(["score", "--responses", str(path), "--test", *test_files, "--out", folders[-1], "--no-plots"]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", *folders, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md", "comparison.png"]
    data = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in data["runs"]] == ["base", "trained"]
    assert data["runs"][1]["headline"]["fixed"]["reasonmap_short"] == 1.0
    assert data["runs"][0]["headline"]["released"]["reasonmap_plus"] == 0.0
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(EvalInputError, match="not a results folder"):
        from recipe.evaluate.compare import run_compare

        run_compare([folders[0], str(tmp_path)], str(tmp_path / "x"))


def test_export_vlmevalkit(tmp_path: Path, test_files: list[str]) -> None:
    out = tmp_path / "ReasonMap-Plus-local.tsv"
    counts = run_export(test_files, str(out))
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    questions = [q for q in load_questions(test_files) if not q.is_planning]
    assert counts["rows"] == len(rows) == len(questions) and counts["planning_rows_skipped"] > 0
    assert list(rows[0]) == [
        "index",
        "image_path",
        "question",
        "answer",
        "type",
        "difficulty_city",
        "city",
        "country",
        "source_id",
    ]
    assert [r["index"] for r in rows] == [str(i) for i in range(len(rows))]
    by_source = {q.id: q for q in questions}
    for row in rows:
        gt = GroundTruth.from_json(by_source[row["source_id"]].ground_truth)
        assert (int(row["answer"]), row["type"], row["difficulty_city"]) == (
            gt.answer,
            gt.question_type,
            gt.map_difficulty,
        )
        assert "<image>" not in row["question"] and Path(row["image_path"]).is_file()
    # every distinct map is written once (the unrendered test maps are one blank placeholder)
    assert counts["images"] == len({r["image_path"] for r in rows}) == 1
    embedded = run_export(test_files, str(tmp_path / "embedded.tsv"), embed_images=True)
    with open(tmp_path / "embedded.tsv", encoding="utf-8") as f:
        first = next(csv.DictReader(f, delimiter="\t"))
    assert first["image"].startswith("data:image;base64,") and embedded["rows"] == counts["rows"]
    with pytest.raises(EvalInputError, match="no ReasonMap-Plus"):
        run_export([test_files[1]], str(tmp_path / "none.tsv"))


def test_training_logs_from_tensorboard_and_file_logger(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb" / "project" / "run"))
    for step in (1, 2, 3):
        writer.add_scalar("rewardmap/reward/score/mean", 2.0 * step, step)
        writer.add_scalar("val-aux/reasonmap/bench_fixed_short_acc/mean@1", 0.1 * step, step)
        writer.add_scalar("val-core/reasonmap/acc/mean@1", 0.5, step)
    writer.close()
    series = read_training_log(tmp_path / "tb")
    assert reward_series(series) == {"rewardmap/reward/score/mean": [(1, 2.0), (2, 4.0), (3, 6.0)]}
    assert list(validation_series(series)) == ["val-aux/reasonmap/bench_fixed_short_acc/mean@1"]
    log = tmp_path / "run.jsonl"
    log.write_text(
        '{"step": 1, "data": {"rewardmap/reward/acc/mean": 0.25, "val-core/reasonmap/acc/mean@1": 0.5}}\n'
        '{"step": 2, "data": {"rewardmap/reward/acc/mean": 0.5}}\n'
    )
    series = read_training_log(log)
    assert series["rewardmap/reward/acc/mean"] == [(1, 0.25), (2, 0.5)]
    assert list(validation_series(series)) == ["val-core/reasonmap/acc/mean@1"]
    log.write_text('{"step": "x", "data": {}}\n')
    with pytest.raises(EvalInputError, match="run.jsonl:1: not a verl file-logger line"):
        read_training_log(log)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalInputError, match="no TensorBoard event files"):
        read_training_log(tmp_path / "empty")
    with pytest.raises(EvalInputError, match="not found"):
        read_training_log(tmp_path / "missing")


def test_vllm_backend_builds_engine_and_requests(
    tmp_path: Path, test_files: list[str], tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in ``vllm`` module records what the backend asks vLLM's offline engine for on a GPU machine (the
    real engine on CPU: tests/test_evaluate_vllm_cpu.py)."""
    import sys
    import types

    from recipe.evaluate import generation
    from recipe.evaluate.generation import VllmBackend, sample_seed

    monkeypatch.setattr(generation, "vllm_cpu_build", lambda: False)

    calls: dict[str, Any] = {}

    class FakeSamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    class FakeLLM:
        def __init__(self, **kwargs: Any) -> None:
            calls["engine"] = kwargs

        def generate(self, requests: list[dict], sampling_params: list[FakeSamplingParams], use_tqdm: bool) -> list:
            calls.setdefault("requests", []).extend(requests)
            calls.setdefault("params", []).extend(p.kwargs for p in sampling_params)
            return [
                types.SimpleNamespace(
                    outputs=[
                        types.SimpleNamespace(text=f"answer {j}", finish_reason="stop", token_ids=[1, 2])
                        for j in range(p.kwargs["n"])
                    ]
                )
                for p in sampling_params
            ]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    settings = GenerationSettings(backend="vllm", temperature=0.8, top_k=20, samples=3, seed=7, max_pixels=4 * 3136)
    backend = VllmBackend(str(tiny_dir), settings, tensor_parallel_size=2, max_model_len=4096)
    assert calls["engine"] == {
        "model": str(tiny_dir),
        "trust_remote_code": False,
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.9,
        "seed": 7,
        "limit_mm_per_prompt": {"image": 1, "video": 0},
        "max_model_len": 4096,
        "mm_processor_kwargs": {"max_pixels": 4 * 3136},
    }
    out = tmp_path / "vllm.jsonl"
    request = GenerateRequest(model="m", test_files=test_files, out=str(out), settings=settings, chunk_size=5, limit=7)
    assert run_generate(request, backend=backend, progress=False)["generated"] == 21
    questions = load_questions(test_files)[:7]
    assert len(calls["requests"]) == 7
    first = calls["requests"][0]
    assert "<|vision_start|><|image_pad|><|vision_end|>" in first["prompt"] and first["prompt"].endswith("assistant\n")
    assert isinstance(first["multi_modal_data"]["image"], Image.Image)
    assert calls["params"][0] == {
        "n": 3,
        "temperature": 0.8,
        "top_p": 1.0,
        "max_tokens": 2048,
        "repetition_penalty": 1.0,
        "seed": sample_seed(7, questions[0].id, 0),
        "top_k": 20,
    }
    responses = read_responses([out], None)
    assert sorted(responses.by_key) == sorted((q.id, s) for q in questions for s in range(3))
