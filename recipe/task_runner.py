"""The Ray task runner the recipe hands to verl's ``run_ppo``: verl's v1 runner plus the recipe's registrations.

verl looks up advantage estimators and trainer modes in registries that are per process, and computes advantages
in this Ray actor, so the recipe's estimator (``recipe.advantage``) and trainer mode (``recipe.trainer``) are
registered here. Kept apart from the entry point, which must start without importing verl or Ray.
"""

from __future__ import annotations

import ray
from omegaconf import DictConfig
from verl.trainer.main_ppo import TaskRunnerV1


@ray.remote(num_cpus=1)
class RewardMapTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's v1 task runner, after registering the recipe's estimator and trainer mode in its own process."""

    def run(self, config: DictConfig) -> None:
        from recipe.advantage import register_estimator
        from recipe.trainer import register_trainer_mode

        register_estimator()  # advantages are computed in this process
        register_trainer_mode()  # trainer mode "rewardmap": stage records, reward metrics, dynamic sampling

        return super().run(config)
