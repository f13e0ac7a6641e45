"""``python -m recipe.ablate``: the paper's ablation rows at toy scale on CPU, on the same data, warm start and seeds.

Each arm is a row of ``configs/experiment/`` (plus ``difficulty_weights_grpo``: the difficulty weights under plain
GRPO, where they cancel, to show what ``grpo_batch_scale`` changes). Each arm and seed is one run of the main
job's CPU dry run (``python -m recipe.main_rewardmap --dry-run +experiment=ARM +ablation=toy``): verl's real
trainer with the toy settings of ``configs/ablation/toy.yaml`` (stated once there), the tiny model warm-started on
held-out cities (``recipe.cpu.warm_start``; one model for every arm), and the same synthetic data. Every arm trains
``planning_steps`` planning steps; curriculum arms train ``perception_steps`` perception steps before them. The
toy's warm start, on planning questions only, answers no perception question, so their step-0 check stops them; a
warm start on every question type with the planning rows repeated reaches both (README, "Toy ablation").

The results folder gets, per arm and seed (``arms/ARM-seedS/``): the run's metrics, its per-step curves
(``curves.json``, ``recipe.ablate_report``), a few sampled answers of its first and last steps, its last checkpoint
(the only one), and a held-out evaluation of that checkpoint with ``recipe.evaluate`` (generate + score, both rule
sets, on the data's validation and test cities); plus the warm start's own evaluation, ``curves.png``, ``table.md``
and ``report.md``. Each arm folder is built beside its place and renamed into it when complete, so a killed
ablation continues where it stopped: finished arms are not run again, a half-finished one starts over.

    python -m recipe.ablate                                  # rl_baseline and detail_reward, seeds 0 and 1
    python -m recipe.ablate --arms all --seeds 0,1,2 --out runs/ablation-all  # curriculum arms: see below
    python -m recipe.ablate --arms detail_reward --steps 20 --seeds 0 --rollout vllm
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipe.ablate_report import arm_table, keep_samples, plot_curves, run_curves, spread

ABLATION_CONFIG = "toy"  # configs/ablation/toy.yaml
ROLLOUT_BACKENDS = ("transformers", "vllm")
DEFAULT_ARMS = ("rl_baseline", "detail_reward")
DEFAULT_SEEDS = (0, 1)
PERCEPTION_STAGES = ("torf", "counting", "counting_stops", "perception")
RUN_TIMEOUT_S = 3600
STEP_LINE = re.compile(r"(?:^|\s)step:(\d+) - ")


@dataclass(frozen=True)
class Arm:
    """An ablation row: the experiment config it selects and any overrides on top."""

    experiment: str
    overrides: tuple[str, ...] = ()
    what: str = ""


ARMS: dict[str, Arm] = {
    "rl_baseline": Arm("rl_baseline", what="planning only, sparse reward (10 x correct), plain GRPO"),
    "detail_reward": Arm("detail_reward", what="planning only, detail + format, every weight 1"),
    "difficulty_weights": Arm(
        "difficulty_weights", what="planning only, detail + format + difficulty weights, grpo_batch_scale"
    ),
    "difficulty_weights_grpo": Arm(
        "difficulty_weights",
        ("algorithm.adv_estimator=grpo", "algorithm.norm_adv_by_std_in_grpo=true"),
        what="as difficulty_weights under plain GRPO (the weights cancel in each group)",
    ),
    "curriculum": Arm("curriculum", what="fine curriculum, sparse reward"),
    "coarse_curriculum": Arm("coarse_curriculum", what="perception then planning, fixed reward"),
    "rewardmap": Arm("rewardmap", what="fine curriculum, fixed reward (the full method)"),
    "rewardmap_released": Arm("rewardmap_released", what="fine curriculum, the released reward"),
}


@dataclass(frozen=True)
class Options:
    """The command line."""

    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    out: Path
    planning_steps: int | None  # None: configs/ablation/toy.yaml
    rollout: str
    evaluate: bool
    overrides: tuple[str, ...] = ()


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m recipe.ablate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, or 'all': {', '.join(ARMS)}")
    parser.add_argument("--seeds", default=",".join(str(s) for s in DEFAULT_SEEDS), help="comma-separated integers")
    parser.add_argument("--steps", type=int, default=None, help="planning steps per arm (default: the toy config's)")
    parser.add_argument("--out", default="ablation_results", help="results folder (resumed when it exists)")
    parser.add_argument("--rollout", choices=ROLLOUT_BACKENDS, default="transformers", help="rollout backend")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation of the checkpoints")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (KEY=VALUE)")
    args = parser.parse_args(argv)
    arms = tuple(ARMS) if args.arms == "all" else tuple(a.strip() for a in args.arms.split(",") if a.strip())
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        parser.error(f"--arms: unknown {unknown or 'none given'}; known: {', '.join(ARMS)} or all")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        parser.error(f"--seeds: {args.seeds!r} is not a comma-separated list of integers")
    if not seeds or len(set(seeds)) != len(seeds):
        parser.error("--seeds: give one or more distinct integers")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps: at least 1")
    return Options(arms, seeds, Path(args.out).expanduser().resolve(), args.steps, args.rollout, not args.no_eval,
                   tuple(args.overrides))  # fmt: skip


# -- the toy's settings, composed as the main job composes them ----------------------------------------------------


def compose(overrides: Sequence[str]) -> Any:
    """The resolved config of a run (its data folder prepared), as ``python -m recipe.main_rewardmap`` composes it
    (``${hydra:runtime.choices}`` in the run's name resolved against this composition, as in the driver)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from recipe.config_resolvers import register_resolvers
    from recipe.main_rewardmap import hydra_arguments, resolve_data

    register_resolvers()
    config_dir = str(Path(__file__).resolve().parents[1] / "configs")
    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            arguments = hydra_arguments([*overrides, "trainer.experiment_name=ablation"])
            config = hydra_compose("rewardmap", overrides=arguments, return_hydra_config=True)
        hydra_config.set_config(config)
        with open_dict(config):
            config.rewardmap.run_choices = OmegaConf.to_container(config.rewardmap.run_choices, resolve=True)
            del config["hydra"]
        resolve_data(config)
    finally:
        hydra_config.cfg = before
    return config


def hydra_overrides(arm: str, seed: int, options: Options, stages: Sequence[tuple[str, int]] = ()) -> list[str]:
    """The main job's overrides of one run (``stages``: (name, steps) of each stage, in order)."""
    spec = ARMS[arm]
    overrides = ["dry_run=cpu", f"+experiment={spec.experiment}", f"+ablation={ABLATION_CONFIG}", *spec.overrides]
    # the seed orders the data and seeds the rollout's sampling (recipe.cpu.rollout: seeded sampling)
    overrides += [f"data.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}"]
    overrides += [f"actor_rollout_ref.rollout.name={options.rollout}"]
    overrides += [f"data.stages.{index}.steps={steps}" for index, (_, steps) in enumerate(stages)]
    return [*overrides, *options.overrides]


def stage_steps(stage_names: Sequence[str], planning_steps: int, perception_steps: int) -> list[tuple[str, int]]:
    """Steps per stage: every planning stage ``planning_steps``; ``perception_steps`` split over the others.

    >>> stage_steps(["torf", "counting", "counting_stops", "planning"], 40, 40)
    [('torf', 14), ('counting', 13), ('counting_stops', 13), ('planning', 40)]
    """
    perception = [name for name in stage_names if name != "planning"]
    share, extra = divmod(perception_steps, max(len(perception), 1))
    return [
        (name, planning_steps if name == "planning" else share + (perception.index(name) < extra))
        for name in stage_names
    ]


@dataclass(frozen=True)
class Plan:
    """What every run shares (data, warm-started model, windows) and each arm's stage steps."""

    data_dir: Path
    model_dir: Path
    stages: dict[str, list[tuple[str, int]]]
    last_k: int
    settings: dict[str, Any]

    @property
    def runs(self) -> int:
        return len(self.stages)


def make_plan(options: Options) -> Plan:
    """Compose every arm's config: the same data folder for all (checked), the stage steps; build the tiny model."""
    from omegaconf import OmegaConf

    from recipe.cpu.dry_run import prepare_dry_run

    stages: dict[str, list[tuple[str, int]]] = {}
    data_dirs: set[str] = set()
    first: Any = None
    for arm in options.arms:
        config = compose(hydra_overrides(arm, 0, options))
        toy = config.rewardmap.ablation
        planning = options.planning_steps or int(toy.planning_steps)
        names = [str(stage.name) for stage in config.data.stages]
        stages[arm] = stage_steps(names, planning, int(toy.perception_steps))
        data_dirs.add(str(config.rewardmap.data_dir))
        first = first or config
    if len(data_dirs) != 1:
        raise SystemExit(f"[ablate] the arms would train on different data folders: {sorted(data_dirs)}")
    prepare_dry_run(first)  # the tiny model every arm starts from (cached), and its step-0 check
    settings = {
        "toy": OmegaConf.to_container(first.rewardmap.ablation, resolve=True),
        "batch": int(first.data.train_batch_size),
        "rollouts": int(first.actor_rollout_ref.rollout.n),
        "lr": float(first.actor_rollout_ref.actor.optim.lr),
        "temperature": float(first.actor_rollout_ref.rollout.temperature),
        "max_response_length": int(first.data.max_response_length),
        "rollout": options.rollout,
        "warm_start": OmegaConf.to_container(first.rewardmap.cpu_run.warm_start, resolve=True),
        "model": {k: int(first.rewardmap.cpu_run[k]) for k in ("hidden_size", "layers", "heads")},
    }
    return Plan(
        Path(next(iter(data_dirs))),
        Path(str(first.actor_rollout_ref.model.path)),
        stages,
        int(first.rewardmap.ablation.last_k),
        settings,
    )


# -- CPU time of a process tree ----------------------------------------------------------------------------------


@dataclass
class TreeCpu:
    """Context manager: CPU seconds (user + system) of a process and its descendants, sampled every second.

    A process's last second before it exits, and processes living under a second, are missed: a lower bound.
    """

    pid: int
    interval_s: float = 1.0
    seen: dict[tuple[int, float], float] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for process in processes:
            try:
                times = process.cpu_times()
                self.seen[(process.pid, process.create_time())] = times.user + times.system
            except psutil.Error:
                continue
        self.load.append(os.getloadavg()[0])

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> TreeCpu:
        self._thread = threading.Thread(target=self._run, name="rewardmap-tree-cpu", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    @property
    def mean_load(self) -> float | None:
        return sum(self.load) / len(self.load) if self.load else None


# -- running -------------------------------------------------------------------------------------------------------


def run_logged(
    command: list[str], log: Path, *, env: dict[str, str], on_line: Any = None
) -> tuple[int, float, float, float | None]:
    """Run ``command`` with output appended to ``log``; (exit code, wall s, CPU s of its tree, mean load)."""
    started = time.monotonic()
    with open(log, "a") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        with TreeCpu(process.pid) as cpu:
            assert process.stdout is not None
            for line in process.stdout:
                sink.write(line)
                if on_line is not None:
                    on_line(line)
            code = process.wait()
    return code, time.monotonic() - started, cpu.seconds, cpu.mean_load


def log_tail(log: Path, lines: int = 40) -> str:
    """The end of a run's log, for its error: the log lives in a staging folder that a failed build removes."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    return f"the end of its log ({log.name}):\n" + "".join(text.splitlines(keepends=True)[-lines:])


def python_env() -> dict[str, str]:
    """The environment of the runs: this checkout first on PYTHONPATH (Ray workers inherit it)."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.pop("RAY_ADDRESS", None)
    return env


def evaluate(model: str, data_dir: Path, out: Path, log: Path, max_new_tokens: int) -> dict[str, Any]:
    """``recipe.evaluate`` generate + score of ``model`` on the data's validation and test files (answers as long as
    the runs' responses); its summary."""
    tests = [str(data_dir / name) for name in ("val.parquet", "test.parquet") if (data_dir / name).is_file()]
    out.mkdir(parents=True, exist_ok=True)
    responses = out / "responses.jsonl"
    # the tiny model's folder carries its processor's stand-in video processor as remote code (recipe.cpu)
    generate = ["generate", "--model", model, "--test", *tests, "--out", str(responses), "--no-progress"]
    generate += ["--max-new-tokens", str(max_new_tokens), "--trust-remote-code"]
    steps = [generate, ["score", "--responses", str(responses), "--test", *tests, "--out", str(out / "results")]]
    for step in steps:
        code, _, _, _ = run_logged([sys.executable, "-m", "recipe.evaluate", *step], log, env=python_env())
        if code != 0:
            raise RuntimeError(f"recipe.evaluate {step[0]} failed (exit {code}); {log_tail(log)}")
    return json.loads((out / "results" / "summary.json").read_text())


def held_out_numbers(summary: dict[str, Any]) -> dict[str, float | None]:
    """The evaluation's headline: weighted accuracy (ReasonMap short, ReasonMap-Plus) under each rule set."""
    from recipe.evaluate.report import headline

    numbers: dict[str, float | None] = {}
    for rules, values in headline(summary).items():
        for name, value in values.items():
            numbers[f"{rules}/{name}"] = value
    return numbers


def atomic_build(final: Path, build: Any, *, marker: str = "record.json") -> None:
    """Build a folder with ``build(staging)`` and put it in place (``data_prep.atomic_dir.replacing``); a folder
    holding ``marker`` is complete."""
    from data_prep import atomic_dir

    with atomic_dir.replacing(final, is_complete=lambda folder: (folder / marker).is_file()) as staging:
        build(staging)


def run_arm(arm: str, seed: int, options: Options, plan: Plan, progress: Any) -> None:
    """Train one arm and seed, keep its curves, evaluate its last checkpoint; into ``arms/ARM-seedS/``."""
    final = options.out / "arms" / f"{arm}-seed{seed}"

    def build(folder: Path) -> None:
        run_dir = folder / "run"
        stages = plan.stages[arm]
        overrides = hydra_overrides(arm, seed, options, stages)
        overrides += [
            f"rewardmap.cpu_run.run_dir={run_dir}",
            f"trainer.default_local_dir={run_dir / 'checkpoints'}",
            f"trainer.rollout_data_dir={folder / 'rollouts'}",
            f"trainer.experiment_name=ablation-{arm}-seed{seed}",
        ]
        command = [sys.executable, "-m", "recipe.main_rewardmap", *overrides]
        total = sum(steps for _, steps in stages)

        def on_line(line: str) -> None:
            found = STEP_LINE.search(line)  # verl's console line, behind Ray's "(TaskRunner pid=...)" prefix
            if found:
                progress(arm, seed, int(found.group(1)), total)

        (folder / "command.txt").write_text(" ".join(command) + "\n")
        code, wall, cpu, load = run_logged(command, folder / "train.log", env=python_env(), on_line=on_line)
        if code != 0:
            raise RuntimeError(
                f"arm {arm} seed {seed}: training failed (exit {code}); {log_tail(folder / 'train.log')}"
            )
        curves = run_curves(run_dir, folder / "rollouts")
        dumps = sorted((int(p.stem), p) for p in (folder / "rollouts").glob("*.jsonl") if p.stem.isdigit())
        if dumps:
            keep_samples(dumps[0][1], folder / "samples_first_step.jsonl")
            keep_samples(dumps[-1][1], folder / "samples_last_step.jsonl")
        shutil.rmtree(folder / "rollouts", ignore_errors=True)
        record: dict[str, Any] = {"arm": arm, "seed": seed, "stages": stages, "train_wall_s": wall, "train_cpu_s": cpu}
        record["mean_load"] = load
        if options.evaluate:
            started = time.monotonic()
            summary = evaluate(
                str(run_dir / "checkpoints"),
                plan.data_dir,
                folder / "eval",
                folder / "eval.log",
                int(plan.settings["max_response_length"]),
            )
            record["held_out"] = held_out_numbers(summary)
            record["eval_wall_s"] = time.monotonic() - started
        (folder / "curves.json").write_text(json.dumps({str(k): v for k, v in curves.items()}, indent=1) + "\n")
        (folder / "record.json").write_text(json.dumps(record, indent=2) + "\n")

    atomic_build(final, build)


# -- the report --------------------------------------------------------------------------------------------------

# recipe.evaluate.report.headline's keys, in the table's order; a column shows when some model has a number in it
HELD_OUT_ORDER = tuple(
    f"{rules}/reasonmap_{split}" for split in ("short", "long", "plus") for rules in ("released", "fixed", "vlmevalkit")
)


def load_runs(out: Path, arms: Sequence[str], seeds: Sequence[int]) -> tuple[dict, dict]:
    """(curves[arm][seed][step], records[arm][seed]) of the finished runs in ``out``."""
    curves: dict[str, dict[int, dict[int, dict[str, Any]]]] = {}
    records: dict[str, dict[int, dict[str, Any]]] = {}
    for arm in arms:
        for seed in seeds:
            folder = out / "arms" / f"{arm}-seed{seed}"
            if not (folder / "record.json").is_file():
                continue
            raw = json.loads((folder / "curves.json").read_text())
            curves.setdefault(arm, {})[seed] = {int(k): v for k, v in raw.items()}
            records.setdefault(arm, {})[seed] = json.loads((folder / "record.json").read_text())
    return curves, records


def held_out_table(records: dict[str, dict[int, dict[str, Any]]], warm: dict[str, Any] | None) -> list[str]:
    """Markdown: each arm's held-out weighted accuracies (mean [min, max] over seeds), the warm start first."""
    numbers = [r.get("held_out", {}) for s in records.values() for r in s.values()] + [warm or {}]
    keys = [k for k in HELD_OUT_ORDER if any(n.get(k) is not None for n in numbers)]
    if not keys:
        return []
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    if warm:
        lines.append("| warm start (step 0, every arm) | " + " | ".join(spread([warm.get(k)]) for k in keys) + " |")
    for arm, seeds in records.items():
        cells = [spread([r.get("held_out", {}).get(k) for r in seeds.values()]) for k in keys]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def timing_lines(records: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    lines = [
        "| arm | seed | train wall (s) | train CPU (s) | mean 1-min load | eval wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    for arm, seeds in records.items():
        for seed, r in seeds.items():
            load = r.get("mean_load")
            lines.append(
                f"| {arm} | {seed} | {r['train_wall_s']:.0f} | {r['train_cpu_s']:.0f} | "
                f"{'-' if load is None else f'{load:.1f}'} | {r.get('eval_wall_s', 0):.0f} |"
            )
    return lines


def write_report(options: Options, plan: Plan, started: float, cpu_s: float) -> Path:
    """``table.md``, ``curves.png`` and ``report.md`` of the finished runs, each written then renamed into place."""
    curves, records = load_runs(options.out, options.arms, options.seeds)
    warm_path = options.out / "warm_start" / "held_out.json"
    warm = json.loads(warm_path.read_text()) if warm_path.is_file() else None
    table = arm_table(curves, plan.last_k)
    _write(options.out / "table.md", "\n".join(table) + "\n")
    if curves:
        tmp = options.out / f".curves.tmp-{os.getpid()}.png"
        plot_curves(curves, tmp)
        os.replace(tmp, options.out / "curves.png")
    arms_lines = [f"- `{arm}`: {ARMS[arm].what}; stages {plan.stages[arm]}" for arm in options.arms]
    lines = [
        "# Toy ablation",
        "",
        f"Command: `python -m recipe.ablate {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        f"Data: `{plan.data_dir}`; tiny model (every arm's start): `{plan.model_dir}`.",
        f"Settings: {json.dumps(plan.settings, sort_keys=True)}",
        "",
        "Arms:",
        *arms_lines,
        "",
        f"Runs finished: {sum(len(s) for s in records.values())} of {len(options.arms) * len(options.seeds)}; "
        f"wall time of this launch {time.monotonic() - started:.0f} s, CPU time of its runs {cpu_s:.0f} s "
        f"(machine: {os.cpu_count()} cores).",
        "",
        "## Curves",
        "",
        "![curves](curves.png)",
        "",
        "Thin lines: seeds; thick: their mean (moving average of 5 steps). Accuracy, format, detail and endpoints",
        "are the fixed reward's components of every sampled response, whatever reward the arm trained on.",
        "",
        f"## First vs last {plan.last_k} steps (mean [min, max] over seeds)",
        "",
        "Over each arm's planning steps (a curriculum arm's planning stage), but VQA accuracy (its perception steps).",
        "",
        *table,
        "",
        "## Held-out evaluation of each arm's last checkpoint (`recipe.evaluate`, weighted accuracy %)",
        "",
        *held_out_table(records, warm),
        "",
        "## Time",
        "",
        *timing_lines(records),
        "",
    ]
    return _write(options.out / "report.md", "\n".join(lines))


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


# -- the command ---------------------------------------------------------------------------------------------------


def evaluate_warm_start(options: Options, plan: Plan) -> None:
    """The held-out evaluation of the warm-started model itself (once per results folder)."""
    final = options.out / "warm_start"
    if (final / "held_out.json").is_file() or not options.evaluate:
        return

    def build(folder: Path) -> None:
        summary = evaluate(
            str(plan.model_dir),
            plan.data_dir,
            folder / "eval",
            folder / "eval.log",
            int(plan.settings["max_response_length"]),
        )
        (folder / "held_out.json").write_text(json.dumps(held_out_numbers(summary), indent=2) + "\n")

    atomic_build(final, build, marker="held_out.json")


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    options = parse_args(argv)
    started = time.monotonic()
    options.out.mkdir(parents=True, exist_ok=True)
    print(f"[ablate] results in {options.out}", flush=True)
    with TreeCpu(os.getpid()) as cpu:
        plan = make_plan(options)
        evaluate_warm_start(options, plan)
        todo = [
            (arm, seed)
            for arm in options.arms
            for seed in options.seeds
            if not (options.out / "arms" / f"{arm}-seed{seed}" / "record.json").is_file()
        ]
        done = len(options.arms) * len(options.seeds) - len(todo)
        if done:
            print(f"[ablate] {done} finished runs kept; {len(todo)} to run", flush=True)
        total_steps = sum(sum(steps for _, steps in plan.stages[arm]) for arm, _ in todo)
        with tqdm(total=total_steps, unit="step", desc="ablation", dynamic_ncols=True) as bar:
            finished_steps = 0
            for arm, seed in todo:
                base = finished_steps

                def progress(arm: str, seed: int, step: int, total: int, base: int = base) -> None:
                    bar.set_postfix_str(f"{arm} seed {seed} step {step}/{total}")
                    bar.n = base + step
                    bar.refresh()

                bar.set_postfix_str(f"{arm} seed {seed}: starting")
                run_arm(arm, seed, options, plan, progress)
                finished_steps += sum(steps for _, steps in plan.stages[arm])
                bar.n = finished_steps
                bar.refresh()
                write_report(options, plan, started, cpu.seconds)
    report = write_report(options, plan, started, cpu.seconds)
    print(f"[ablate] report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
