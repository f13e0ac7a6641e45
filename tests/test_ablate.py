"""``python -m recipe.ablate`` without training: its arms compose over the same data, curves are read back from a
run's files, the table and plots, and a killed ablation resumes without running finished arms again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recipe import ablate
from recipe.ablate_report import CURVES, arm_table, plot_curves, run_curves, spread
from reward_fns.gold import gold_response
from reward_fns.ground_truth import GroundTruth

NETWORK = {"Line 1": ["Oak Station", "Elm Station", "Fir Station"], "Line 2": ["Fir Station", "Ash Station"]}


def options(tmp_path: Path, *extra: str) -> ablate.Options:
    return ablate.parse_args(["--out", str(tmp_path / "results"), *extra])


def test_the_command_line() -> None:
    default = ablate.parse_args([])
    assert default.arms == ("rl_baseline", "detail_reward") and default.seeds == (0, 1)
    assert default.rollout == "transformers" and default.evaluate and default.planning_steps is None
    every = ablate.parse_args(["--arms", "all", "--seeds", "3", "--steps", "5", "--rollout", "vllm", "x.y=1"])
    assert every.arms == tuple(ablate.ARMS) and every.seeds == (3,) and every.planning_steps == 5
    assert every.overrides == ("x.y=1",) and every.rollout == "vllm"
    for bad in (["--arms", "nope"], ["--seeds", "a"], ["--seeds", "1,1"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            ablate.parse_args(bad)


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every arm's config with the toy settings (the toy data generated once in a temporary cache)."""
    cache = tmp_path_factory.mktemp("cache")
    opts = ablate.parse_args(["--arms", "all", f"rewardmap.cache_dir={cache}"])
    return {arm: ablate.compose(ablate.hydra_overrides(arm, 0, opts)) for arm in opts.arms}


def test_every_arm_trains_on_the_same_data_with_the_toy_settings(composed: dict[str, Any]) -> None:
    assert len({str(c.rewardmap.data_dir) for c in composed.values()}) == 1
    for arm, config in composed.items():
        assert config.data.train_batch_size == 8 and config.actor_rollout_ref.rollout.n == 8, arm
        assert config.actor_rollout_ref.rollout.name == "transformers" and config.trainer.save_freq > 1000
        assert list(config.rewardmap.synthetic_planning_templates) == ["short"]
    modes = {arm: c.reward.reward_kwargs.mode for arm, c in composed.items()}
    assert modes["rl_baseline"] == modes["curriculum"] == "sparse" and modes["rewardmap_released"] == "released"
    assert composed["difficulty_weights"].algorithm.adv_estimator == "grpo_batch_scale"
    assert composed["difficulty_weights_grpo"].algorithm.adv_estimator == "grpo"
    assert dict(composed["detail_reward"].reward.reward_kwargs.map_weights) == {"easy": 1, "middle": 1, "hard": 1}
    stages = {arm: [s.name for s in c.data.stages] for arm, c in composed.items()}
    assert stages["rl_baseline"] == ["planning"] and stages["coarse_curriculum"] == ["perception", "planning"]


def test_stage_steps_reach_the_composed_config(composed: dict[str, Any], tmp_path: Path) -> None:
    cache = Path(str(composed["rewardmap"].rewardmap.cache_dir))
    opts = ablate.parse_args(["--arms", "rewardmap", f"rewardmap.cache_dir={cache}"])
    stages = ablate.stage_steps([s.name for s in composed["rewardmap"].data.stages], 12, 7)
    config = ablate.compose(ablate.hydra_overrides("rewardmap", 3, opts, stages))
    assert [(s.name, s.steps) for s in config.data.stages] == [
        ("torf", 3),
        ("counting", 2),
        ("counting_stops", 2),
        ("planning", 12),
    ]
    assert config.data.seed == 3 and config.actor_rollout_ref.rollout.seed == 3


def ground_truth(origin: str, destination: str) -> str:
    gt = GroundTruth("planning", "c", "easy", NETWORK, station_1=origin, station_2=destination, template="short")
    return gt.to_json()


def write_run(folder: Path, steps: dict[int, list[tuple[str, str, float]]], logged: dict[int, dict]) -> None:
    """A run folder as verl leaves it: file-logger metrics and rollout dumps (output, gts, score per sample)."""
    (folder / "run" / "metrics").mkdir(parents=True)
    lines = [json.dumps({"step": step, "data": data}) for step, data in logged.items()]
    (folder / "run" / "metrics" / "launch-1.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "rollouts").mkdir()
    for step, samples in steps.items():
        rows = [
            {"output": o, "gts": g, "score": s, "step": step, "uid": f"{step}_{i}"}
            for i, (o, g, s) in enumerate(samples)
        ]
        (folder / "rollouts" / f"{step}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curves_are_the_fixed_components_of_every_sample(tmp_path: Path) -> None:
    direct, transfer = ground_truth("Oak Station", "Elm Station"), ground_truth("Oak Station", "Ash Station")
    gold = gold_response(GroundTruth.from_json(direct))
    endpoints_only = "Route Name: Line 9\nDeparture Stop: Oak\nArrival Stop: Ash Station"
    vqa = GroundTruth("TorF1", "c", "easy", NETWORK, station_1="Oak Station", station_2="Elm Station", answer=1)
    samples = {
        1: [("junk", direct, 0.0), ("junk", transfer, 0.0)],
        2: [(gold, direct, 11.0), (endpoints_only, transfer, 1.0), ("\\boxed{yes}", vqa.to_json(), 10.0)],
    }
    logged = {
        1: {"rewardmap/reward/score/mean": 0.0, "rewardmap/groups/all_equal_frac": 1.0},
        2: {"response_length/mean": 9},
    }
    write_run(tmp_path, samples, logged)
    curves = run_curves(tmp_path / "run", tmp_path / "rollouts")
    assert curves[1]["endpoints"] == 0.0 and curves[1]["vqa_acc"] is None and curves[1]["all_equal"] == 1.0
    assert curves[2]["endpoints"] == 1.0 and curves[2]["planning_acc"] == 0.5 and curves[2]["vqa_acc"] == 1.0
    assert curves[2]["format"] == pytest.approx(2 / 3)  # the gold answer and the boxed one; Line 9 is no line
    assert curves[2]["detail"] == pytest.approx((6.0 + 2.0) / 2) and curves[2]["response_length"] == 9.0
    assert curves[2]["reward"] is None and set(curves[2]) == set(CURVES)


def test_the_table_gives_first_and_last_windows_over_seeds(tmp_path: Path) -> None:
    def rising(start: float) -> dict[int, dict[str, float]]:
        return {s: {"reward": start + s, "endpoints": 0.5} for s in range(1, 11)}

    table = arm_table({"detail_reward": {0: rising(0.0), 1: rising(1.0)}}, 3)
    row = next(line for line in table if "| reward |" in line)
    assert "| 2.500 [2.000, 3.000] | 9.500 [9.000, 10.000] | 7.000 [7.000, 7.000] | 0, 1 |" in row
    assert spread([None]) == "-" and spread([1.0]) == "1.000"
    # a curriculum arm: 4 perception steps (VQA samples only), then its planning stage; windows of 2
    curriculum = {s: {"reward": 10.0 * s, "vqa_acc": 0.1 * s} for s in range(1, 5)}
    curriculum |= {s: {"reward": float(s), "endpoints": 0.5} for s in range(5, 11)}
    rows = {line.split(" | ")[1]: line for line in arm_table({"coarse": {0: curriculum}}, 2)[2:]}
    assert "| 5.500 | 9.500 | 4.000 | 0 |" in rows["reward"]  # steps 5-6 against 9-10, not 1-2
    assert "| 0.150 | 0.350 | 0.200 | 0 |" in rows["vqa_acc"]
    png = plot_curves({"a": {0: rising(0.0)}, "b": {0: rising(2.0)}}, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_killed_ablation_resumes_without_rerunning_finished_arms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = options(tmp_path, "--arms", "rl_baseline,detail_reward", "--seeds", "0,1", "--no-eval")
    plan = ablate.Plan(tmp_path / "data", tmp_path / "model", {a: [("planning", 2)] for a in opts.arms}, 1, {})
    monkeypatch.setattr(ablate, "make_plan", lambda _: plan)
    ran: list[tuple[str, int]] = []
    kill_at = {("detail_reward", 0)}

    def fake_run(arm: str, seed: int, options: ablate.Options, plan: ablate.Plan, progress: Any) -> None:
        def build(folder: Path) -> None:
            ran.append((arm, seed))
            (folder / "curves.json").write_text(json.dumps({"1": {"reward": 1.0}, "2": {"reward": 2.0}}))
            if (arm, seed) in kill_at:
                raise KeyboardInterrupt  # killed half-way: nothing of this arm may count as finished
            progress(arm, seed, 2, 2)
            rec = {"arm": arm, "seed": seed, "train_wall_s": 1.0, "train_cpu_s": 1.0, "mean_load": 1.0}
            (folder / "record.json").write_text(json.dumps(rec))

        ablate.atomic_build(options.out / "arms" / f"{arm}-seed{seed}", build)

    monkeypatch.setattr(ablate, "run_arm", fake_run)
    with pytest.raises(KeyboardInterrupt):
        ablate.main(["--out", str(opts.out), "--arms", "rl_baseline,detail_reward", "--seeds", "0,1", "--no-eval"])
    assert ran == [("rl_baseline", 0), ("rl_baseline", 1), ("detail_reward", 0)]
    assert sorted(p.name for p in (opts.out / "arms").iterdir()) == ["rl_baseline-seed0", "rl_baseline-seed1"]
    kill_at.clear()
    ablate.main(["--out", str(opts.out), "--arms", "rl_baseline,detail_reward", "--seeds", "0,1", "--no-eval"])
    assert ran[3:] == [("detail_reward", 0), ("detail_reward", 1)]
    report = (opts.out / "report.md").read_text()
    assert "Runs finished: 4 of 4" in report and (opts.out / "curves.png").is_file()
    assert "| detail_reward | reward | 1.000 [1.000, 1.000] | 2.000 [2.000, 2.000]" in report
