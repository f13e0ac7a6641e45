"""``python -m recipe.main_rewardmap``: verl's PPO entry point with RewardMap's data, rewards, stages and metrics.

Hydra over ``configs/rewardmap.yaml`` (which extends verl's ``ppo_trainer``). With no ``rewardmap.data_dir`` it
prepares the embedded synthetic curriculum in a cache folder. The pre-flight always runs first; ``--preflight``
(or ``rewardmap.preflight_only=true``) stops after it.

Where it trains: on a machine with a CUDA device, the configured model with vLLM. On a machine without one (and
not driving a Ray cluster: ``RAY_ADDRESS`` unset), and anywhere with ``--dry-run``, the config group
``dry_run=cpu`` is added: the same trainer on CPU with a tiny model (``recipe.cpu``), a few minutes end to end.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import ray
from omegaconf import DictConfig, OmegaConf, open_dict
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo

# Plain flags accepted before Hydra parses the command line.
CLI_FLAGS = {
    "--preflight": "rewardmap.preflight_only=true",
    "--tiny-model": "rewardmap.preflight_tiny_model=true",
    "--dry-run": "dry_run=cpu",
}
DRY_RUN_GROUP = "dry_run"
# Hydra flags that inspect the composition instead of running it: no automatic dry run for them.
HYDRA_INSPECTION_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i")
STAGE_FILES = ("torf.parquet", "counting.parquet", "counting_stops.parquet", "planning.parquet")


@ray.remote(num_cpus=1)
class RewardMapTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's v1 task runner, after registering the recipe's estimator and trainer mode in its own process."""

    def run(self, config: DictConfig) -> None:
        import recipe.advantage  # noqa: F401  (advantages are computed in this process)
        import recipe.trainer  # noqa: F401  (trainer mode "rewardmap": stage records and reward metrics)

        return super().run(config)


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
    out = Path(os.path.expanduser(str(settings.cache_dir))) / (
        f"synthetic-c{params.cities}-q{params.questions_per_city}"
        f"-{'+'.join(params.planning_templates)}-seed{params.seed}" + (f"-px{max_pixels}" if max_pixels else "")
    )
    if not (out / "manifest.json").is_file():  # the writer renames a complete folder into place, or nothing
        print(f"[rewardmap] preparing the embedded synthetic curriculum in {out}", flush=True)
        generate_dataset(out, params)
    return out


def resolve_data(config: DictConfig) -> None:
    """Fill ``rewardmap.data_dir`` (embedded default when unset) and list every stage file in ``train_files``."""
    with open_dict(config):
        if not config.rewardmap.data_dir:
            config.rewardmap.data_dir = str(prepare_default_data(config))
        files = [str(f) for stage in config.data.stages for f in stage.files]
        config.data.train_files = list(dict.fromkeys(files))
    # Resolve now, inside Hydra: ${hydra:...} in the experiment name cannot resolve in a Ray worker.
    OmegaConf.resolve(config)


@hydra.main(config_path="../configs", config_name="rewardmap", version_base=None)
def main(config: DictConfig) -> None:
    from recipe.preflight import run_preflight

    dry_run = config.rewardmap.get("cpu_run") is not None  # configs/dry_run/cpu.yaml is composed in
    resolve_data(config)
    if dry_run:
        from recipe.cpu.dry_run import prepare_dry_run

        prepare_dry_run(config)  # before the pre-flight, which loads the tiny model's processor
    report = run_preflight(config)
    print(report.render(), flush=True)
    if not report.ok:
        raise SystemExit("[rewardmap] pre-flight failed: fix the checks marked FAIL above before launching")
    if config.rewardmap.preflight_only:
        return
    if dry_run:
        from recipe.cpu.dry_run import run_dry_run

        run_dry_run(config, RewardMapTaskRunner)
        return
    if not cuda_available() and not os.environ.get("RAY_ADDRESS"):
        print("[rewardmap] no CUDA device here and no Ray cluster (RAY_ADDRESS): nothing to train on", flush=True)
        return
    run_ppo(config, task_runner_class=RewardMapTaskRunner)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def command_line(argv: list[str], *, has_cuda: bool, ray_cluster: bool) -> tuple[list[str], str | None]:
    """The Hydra command line for ``argv`` (plain flags translated) and why a dry run was added, if it was.

    The CPU dry run is added when ``--dry-run`` is given, or when the machine has no CUDA device and drives no
    Ray cluster, unless the command only runs the pre-flight, inspects the composition (``--cfg``, ``--help``)
    or chooses the ``dry_run`` group itself.
    """
    args = [CLI_FLAGS.get(arg, arg) for arg in argv]
    chosen = any(arg.lstrip("+~").split("=", 1)[0] == DRY_RUN_GROUP for arg in args)
    if "--dry-run" in argv:
        return args, "--dry-run"
    preflight_only = CLI_FLAGS["--preflight"] in args
    inspecting = any(arg in HYDRA_INSPECTION_FLAGS for arg in argv)
    if chosen or preflight_only or inspecting or has_cuda or ray_cluster:
        return args, None
    return [*args, f"{DRY_RUN_GROUP}=cpu"], "no CUDA device on this machine"


def cli() -> None:
    """Translate the recipe's plain flags into Hydra overrides (adding the dry run where it applies), run ``main``."""
    args, reason = command_line(
        sys.argv[1:], has_cuda=cuda_available(), ray_cluster=bool(os.environ.get("RAY_ADDRESS"))
    )
    if reason:
        from recipe.cpu.dry_run import announce

        announce(reason)
    sys.argv = [sys.argv[0], *args]
    main()


if __name__ == "__main__":
    cli()
