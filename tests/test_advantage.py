"""The ``grpo_batch_scale`` estimator through verl's own compute_advantage: difficulty weights survive it.

Two prompts with the same outcomes, one weighted 1.5: plain GRPO (std-normalised per group) gives them equal
advantages, the recipe's estimator gives advantages exactly 1.5 times larger for the weighted prompt.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from verl import DataProto
from verl.trainer.ppo.core_algos import AdvantageEstimator, get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import compute_advantage

from recipe.advantage import ADV_ESTIMATOR_NAME, compute_grpo_batch_scale_advantage, register_estimator

RESPONSE_LENGTH = 6


@pytest.fixture(autouse=True, scope="module")
def _registered() -> None:
    register_estimator()  # as the task runner does


def _batch(rewards: list[float], uids: list[str], lengths: list[int] | None = None) -> DataProto:
    """Outcome rewards on each response's last valid token, as verl's reward loop writes them."""
    lengths = lengths or [RESPONSE_LENGTH - (i % 3) for i in range(len(rewards))]
    mask = torch.zeros((len(rewards), RESPONSE_LENGTH))
    scores = torch.zeros((len(rewards), RESPONSE_LENGTH))
    for row, (reward, length) in enumerate(zip(rewards, lengths, strict=True)):
        mask[row, :length] = 1
        scores[row, length - 1] = reward
    return DataProto.from_dict(
        tensors={"token_level_rewards": scores, "response_mask": mask},
        non_tensors={"uid": np.array(uids, dtype=object)},
    )


def _advantages(data: DataProto, estimator, **kwargs) -> torch.Tensor:
    """Per-sample advantage (first response token) via verl.trainer.ppo.ray_trainer.compute_advantage."""
    out = compute_advantage(data, adv_estimator=estimator, config=None, **kwargs)
    return out.batch["advantages"][:, 0]


OUTCOMES = [10.0, 0.0, 0.0, 10.0, 2.0, 0.0]  # one prompt's rollouts: right, wrong, partial credit
WEIGHT = 1.5


def _two_prompts() -> DataProto:
    rewards = OUTCOMES + [WEIGHT * r for r in OUTCOMES]
    return _batch(rewards, ["easy"] * len(OUTCOMES) + ["hard"] * len(OUTCOMES))


def test_registered_by_its_call() -> None:
    register_estimator()
    register_estimator()  # idempotent: the task runner may register in a process that already has it
    assert get_adv_estimator_fn(ADV_ESTIMATOR_NAME) is compute_grpo_batch_scale_advantage


def test_weight_survives_batch_scale_but_cancels_in_grpo() -> None:
    n = len(OUTCOMES)
    ours = _advantages(_two_prompts(), ADV_ESTIMATOR_NAME)
    assert ours[:n].abs().sum() > 0
    assert torch.allclose(ours[n:], WEIGHT * ours[:n], rtol=1e-5, atol=1e-6)

    grpo = _advantages(_two_prompts(), AdvantageEstimator.GRPO, norm_adv_by_std_in_grpo=True)
    assert torch.allclose(grpo[n:], grpo[:n], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(grpo[n:], WEIGHT * grpo[:n], rtol=1e-3)


def test_values_and_output_contract() -> None:
    """Group mean subtracted, one pooled within-group std divides all; masked like verl's grpo estimator."""
    data = _two_prompts()
    rewards = data.batch["token_level_rewards"].sum(-1)
    out = compute_advantage(data, adv_estimator=ADV_ESTIMATOR_NAME, config=None)
    advantages, returns, mask = out.batch["advantages"], out.batch["returns"], out.batch["response_mask"]
    assert advantages.shape == mask.shape and torch.equal(advantages, returns)
    assert torch.all(advantages[mask == 0] == 0)
    # constant over each response's valid tokens
    per_sample = advantages[:, 0]
    assert torch.allclose(advantages, per_sample[:, None] * mask)

    n = len(OUTCOMES)
    groups = [rewards[:n], rewards[n:]]
    centred = torch.cat([g - g.mean() for g in groups])
    pooled = torch.sqrt((centred**2).sum() / sum(len(g) - 1 for g in groups))
    assert torch.allclose(per_sample, centred / (pooled + 1e-6), rtol=1e-5, atol=1e-6)
    # unbiased pooled scale: the centred advantages' sum of squares equals the degrees of freedom
    assert (per_sample**2).sum().item() == pytest.approx(len(rewards) - len(groups), rel=1e-4)


def test_singletons_and_constant_groups_as_verl_grpo() -> None:
    """A single-sample group keeps its reward (mean 0, scale 1); an all-constant batch gets zero advantages."""
    data = _batch([3.0, 5.0, 5.0, 5.0, 7.0], ["solo", "flat", "flat", "flat", "other-solo"])
    ours = _advantages(data, ADV_ESTIMATOR_NAME)
    grpo = _advantages(_batch([3.0, 5.0, 5.0, 5.0, 7.0], ["solo", "flat", "flat", "flat", "other-solo"]), "grpo")
    assert torch.allclose(ours, grpo, atol=1e-5)
    assert ours.tolist() == pytest.approx([3.0, 0.0, 0.0, 0.0, 7.0], abs=1e-5)

    flat = _advantages(_batch([4.0] * 4 + [9.0] * 4, ["a"] * 4 + ["b"] * 4), ADV_ESTIMATOR_NAME)
    assert torch.all(flat == 0)


def test_v1_trainer_route() -> None:
    """The v1 trainer calls compute_advantage_for_multi_trajectories, which hands non-GRPO estimators through."""
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    data = _two_prompts()
    keys = [f"{uid}_{i}_0" for i, uid in enumerate(data.non_tensor_batch["uid"])]
    out = compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, adv_estimator=ADV_ESTIMATOR_NAME, norm_adv_by_std_in_grpo=True, config=None
    )
    n = len(OUTCOMES)
    advantages = out.batch["advantages"][:, 0]
    assert torch.allclose(advantages[n:], WEIGHT * advantages[:n], rtol=1e-5, atol=1e-6)


def test_padding_of_a_partial_batch_leaves_the_advantages_unchanged() -> None:
    """verl pads a partial batch (dynamic sampling) with response-less samples of one extra uid and reward 0
    (``upsample_batch_to_divisible_size``); they must not add to the batch scale."""
    real = _two_prompts()
    pads = 4
    rewards = OUTCOMES + [WEIGHT * r for r in OUTCOMES] + [0.0] * pads
    uids = ["easy"] * len(OUTCOMES) + ["hard"] * len(OUTCOMES) + ["pad0"] * pads
    lengths = [RESPONSE_LENGTH - (i % 3) for i in range(2 * len(OUTCOMES))] + [0] * pads
    padded = _advantages(_batch(rewards, uids, lengths), ADV_ESTIMATOR_NAME)
    assert torch.allclose(padded[: 2 * len(OUTCOMES)], _advantages(real, ADV_ESTIMATOR_NAME))
    assert torch.equal(padded[2 * len(OUTCOMES) :], torch.zeros(pads))
