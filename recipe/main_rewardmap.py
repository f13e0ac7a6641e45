"""``python -m recipe.main_rewardmap``: verl's PPO entry point with RewardMap's data, rewards, stages and metrics.

Hydra over ``configs/rewardmap.yaml`` (which extends verl's ``ppo_trainer``). With no ``rewardmap.data_dir`` it
prepares the embedded synthetic curriculum in a cache folder. The pre-flight always runs first; ``--preflight``
(or ``rewardmap.preflight_only=true``) stops after it, and so does a machine without a CUDA device.
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
CLI_FLAGS = {"--preflight": "rewardmap.preflight_only=true", "--tiny-model": "rewardmap.preflight_tiny_model=true"}
STAGE_FILES = ("torf.parquet", "counting.parquet", "counting_stops.parquet", "planning.parquet")


@ray.remote(num_cpus=1)
class RewardMapTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's v1 task runner, after registering the recipe's estimator and trainer mode in its own process."""

    def run(self, config: DictConfig) -> None:
        import recipe.advantage  # noqa: F401  (advantages are computed in this process)
        import recipe.trainer  # noqa: F401  (trainer mode "rewardmap": stage records and reward metrics)

        return super().run(config)


def prepare_default_data(config: DictConfig) -> Path:
    """The embedded default: a synthetic curriculum in the cache folder, generated once per (cities, seed)."""
    from data_prep.synthetic import SyntheticParams, generate_dataset

    settings = config.rewardmap
    params = SyntheticParams(
        cities=int(settings.synthetic_cities),
        seed=int(settings.synthetic_seed),
        questions_per_city=int(settings.synthetic_questions_per_city),
        planning_templates=tuple(str(t) for t in settings.synthetic_planning_templates),
    )
    out = Path(os.path.expanduser(str(settings.cache_dir))) / (
        f"synthetic-c{params.cities}-q{params.questions_per_city}"
        f"-{'+'.join(params.planning_templates)}-seed{params.seed}"
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

    resolve_data(config)
    report = run_preflight(config)
    print(report.render(), flush=True)
    if not report.ok:
        raise SystemExit("[rewardmap] pre-flight failed: fix the checks marked FAIL above before launching")
    if config.rewardmap.preflight_only:
        return
    import torch

    if not torch.cuda.is_available():
        print("[rewardmap] no CUDA device here: stopped after the pre-flight (launch/ has the GPU scripts)")
        return
    run_ppo(config, task_runner_class=RewardMapTaskRunner)


def cli() -> None:
    """Translate the recipe's plain flags into Hydra overrides, then run ``main``."""
    sys.argv = [CLI_FLAGS.get(arg, arg) for arg in sys.argv]
    main()


if __name__ == "__main__":
    cli()
