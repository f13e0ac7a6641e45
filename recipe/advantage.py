"""GRPO with one batch-level scale, so RewardMap's difficulty weights survive into the advantages.

``register_estimator()`` registers ``algorithm.adv_estimator=grpo_batch_scale`` in verl's estimator registry. The
registry is per process, and verl computes advantages in its TaskRunner Ray actor (``TaskRunnerV1.run`` ->
``PPOTrainer._compute_advantage``), so ``recipe.task_runner`` calls it there, not only in the driver.

Why: plain GRPO divides each group by its own std, so a weight shared by all rollouts of one prompt (the
paper's W_difficulty) cancels. Here every group is centred on its own mean (GRPO's baseline) and the whole
batch is divided by ONE number, so a prompt weighted 1.5 gets advantages 1.5 times larger than the same
outcome pattern weighted 1.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

ADV_ESTIMATOR_NAME = "grpo_batch_scale"


def compute_grpo_batch_scale_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome advantages: (reward - group mean) / pooled within-group std of the batch.

    The scale is the pooled within-group standard deviation, sqrt(sum of squared deviations from each
    group's mean / sum of (group size - 1)) over groups of two or more; for equal group sizes this is the
    root mean of the groups' (unbiased) variances. Chosen over the std of all rewards because differences
    between group means (easy prompts all right, hard ones all wrong, different weights) carry no signal
    under a group baseline and would only shrink every advantage; chosen over the mean of group stds
    because it is the RMS of the centred rewards themselves, so the batch's advantages have unit RMS as in
    GRPO and step sizes tuned for GRPO carry over.

    Edge cases as verl's GRPO: a single-sample group has mean 0 and scale 1 (advantage = its reward); a batch
    whose groups are all constant has scale 0 and gets 0 advantages (0 / (0 + epsilon)). Samples without a
    response token (verl's padding of a partial batch, ``trainer/ppo/padding_utils.py``
    ``upsample_batch_to_divisible_size``: one extra group of zero rewards) count in no group: they would add
    degrees of freedom without deviation and shrink the scale of the real groups.
    Same contract as verl's grpo estimator: returns (advantages, returns), both (bs, response_length),
    masked by ``response_mask``. ``config`` and extra keyword arguments (e.g. reward_baselines) are unused.
    """
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        _, inverse = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
        group = torch.as_tensor(inverse.reshape(-1), dtype=torch.long, device=scores.device)
        n_groups = int(group.max().item()) + 1 if group.numel() else 0

        real = (response_mask.sum(dim=-1) > 0).to(scores.dtype)  # padding samples have no response token
        counts = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device).scatter_add_(0, group, real)
        sums = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device).scatter_add_(0, group, scores * real)
        multi = (counts[group] > 1) & (real > 0)
        mean = torch.where(multi, sums[group] / counts[group], torch.zeros_like(scores))
        centred = scores - mean

        dof = (counts[counts > 1] - 1).sum()
        if dof > 0:
            scale = torch.sqrt((centred[multi] ** 2).sum() / dof)
        else:
            scale = torch.zeros((), dtype=scores.dtype, device=scores.device)
        advantages = torch.where(multi, centred / (scale + epsilon), scores)
        advantages = advantages.unsqueeze(-1) * response_mask
    return advantages, advantages


def register_estimator() -> None:
    """Register ``grpo_batch_scale`` in this process's verl estimator registry (idempotent)."""
    register_adv_est(ADV_ESTIMATOR_NAME)(compute_grpo_batch_scale_advantage)
