"""Per-step training metrics of the RewardMap reward, which verl 0.9.1 does not log (only validation gets them).

``reward_metrics`` is a pure function of one step's batch: the reward manager's numeric extra info
(``recipe.reward_manager.REWARD_EXTRA_INFO_KEYS``), the token-level scores and the GRPO group ids. Names, all under
``rewardmap/`` (``<dim>`` is ``type``, ``stage`` or ``map``)::

    rewardmap/reward/<component>/mean   score, acc, format, detail, weight (score = the trained reward)
    rewardmap/reward/error_rate          fraction of samples whose scoring raised or timed out (should stay 0)
    rewardmap/reward/timeout_rate        fraction of samples whose scoring exceeded reward.timeout (counted in
                                         error_rate too)
    rewardmap/acc/<dim>=<value>          accuracy (mean acc) of the samples with that value
    rewardmap/format/<dim>=<value>       format rate (fraction with a positive format reward)
    rewardmap/score/<dim>=<value>        mean trained reward
    rewardmap/count/<dim>=<value>        number of samples
    rewardmap/stage                      current curriculum stage (most common plan_stage of the batch)
    rewardmap/groups/all_equal_frac      fraction of GRPO groups (same uid, two or more samples) whose
                                         rewards are all equal: no learning signal under a group baseline
    rewardmap/groups/count               number of such groups
    rewardmap/rollout/vision_tokens      image/video placeholder tokens sampled in the step's responses (must be
                                         0: ``vision_tokens_sampled``)

Values: ``type=planning|TorF1|...``, ``map=easy|middle|hard``, ``stage=<name>`` when stage names are given,
else ``stage=<index>``; ``unknown`` for samples without the fact (-1 in the extra info).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reward_fns.ground_truth import MAP_DIFFICULTIES, QUESTION_TYPES
from reward_fns.score import SCORE_KEYS

PREFIX = "rewardmap"
EQUAL_ATOL = 1e-6
# Breakdown dimension -> (extra-info key, names by id or None for stage names supplied by the caller).
DIMENSIONS: dict[str, tuple[str, Sequence[str] | None]] = {
    "type": ("question_type_id", QUESTION_TYPES),
    "stage": ("stage", None),
    "map": ("map_difficulty_id", MAP_DIFFICULTIES),
}

RewardInputs = tuple[Mapping[str, Any], Any, Sequence[Any]]


def reward_metrics(batch: RewardInputs, *, stage_names: Sequence[str] | None = None) -> dict[str, float]:
    """Metrics of one training step (names in the module docstring) from (infos, scores, uids).

    ``infos``: extra-info key -> per-sample values; ``scores``: per-sample rewards, or token-level scores
    (bs, length) summed per row, or None to use ``infos["score"]``; ``uids``: GRPO group id per sample.
    ``stage_names[i]`` names stage index i in the metric names.
    """
    infos, scores, uids = _unpack(batch)
    n = len(uids)
    columns = {key: np.asarray(values, dtype=np.float64).reshape(-1) for key, values in infos.items()}
    if scores is None:
        scores = columns.get("score", np.zeros(n))
    columns["score"] = scores = _per_sample(scores)
    if n == 0:
        return {}

    metrics: dict[str, float] = {}
    for key in SCORE_KEYS:
        if key in columns:
            metrics[f"{PREFIX}/reward/{key}/mean"] = float(columns[key].mean())
    if "reward_error" in columns:
        metrics[f"{PREFIX}/reward/error_rate"] = float((columns["reward_error"] > 0).mean())
    if "reward_timeout" in columns:
        metrics[f"{PREFIX}/reward/timeout_rate"] = float((columns["reward_timeout"] > 0).mean())

    for dim, (key, names) in DIMENSIONS.items():
        if key not in columns:
            continue
        names = stage_names if dim == "stage" else names
        ids = columns[key].astype(np.int64)
        for value in np.unique(ids):
            name = _name(int(value), names)
            mask = ids == value
            metrics[f"{PREFIX}/count/{dim}={name}"] = float(mask.sum())
            metrics[f"{PREFIX}/score/{dim}={name}"] = float(scores[mask].mean())
            if "acc" in columns:
                metrics[f"{PREFIX}/acc/{dim}={name}"] = float(columns["acc"][mask].mean())
            if "format" in columns:
                metrics[f"{PREFIX}/format/{dim}={name}"] = float((columns["format"][mask] > 0).mean())

    if "stage" in columns:
        values, counts = np.unique(columns["stage"].astype(np.int64), return_counts=True)
        metrics[f"{PREFIX}/stage"] = float(values[counts == counts.max()].max())  # ties: the later stage

    equal, groups = all_equal_groups(scores, uids)
    metrics[f"{PREFIX}/groups/count"] = float(groups)
    metrics[f"{PREFIX}/groups/all_equal_frac"] = equal / groups if groups else 0.0
    return metrics


def all_equal_groups(scores: Sequence[float], uids: Sequence[Any]) -> tuple[int, int]:
    """(groups whose rewards are all equal, groups) over GRPO groups of two or more samples."""
    by_uid: dict[str, list[float]] = {}
    for uid, score in zip(uids, scores, strict=True):
        by_uid.setdefault(str(uid), []).append(float(score))
    groups = [values for values in by_uid.values() if len(values) > 1]
    equal = sum(max(values) - min(values) <= EQUAL_ATOL for values in groups)
    return equal, len(groups)


def _unpack(batch: RewardInputs) -> tuple[dict[str, Any], Any, list[Any]]:
    """(infos, scores or None, uids) from an (infos, scores, uids) tuple."""
    infos, scores, uids = batch
    return dict(infos), scores, list(uids)


def _per_sample(scores: Any) -> np.ndarray:
    """Per-sample rewards from a vector or from token-level scores (summed over the response)."""
    if hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    array = np.asarray(scores, dtype=np.float64)
    return array.sum(axis=-1) if array.ndim > 1 else array.reshape(-1)


def _name(value: int, names: Sequence[str] | None) -> str:
    if value < 0:
        return "unknown"
    if names is not None and value < len(names):
        return str(names[value])
    return str(value)


# Qwen2.5-VL's vision placeholders: the tokens that stand for an image's or a video's patches. A rollout must never
# sample one (verl masks them in vLLM's logits: ``verl/workers/rollout/utils.py`` ``get_vision_placeholder_token_ids``;
# the CPU transformers backend suppresses these and the vision start/end markers too): a response holding one breaks
# the pairing of placeholders with ``image_grid_thw`` (M-RoPE positions, the embedding merge). The start/end markers
# pair with nothing and are left to the model, as verl leaves them.
VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>")


def vision_token_ids(tokenizer: Any) -> list[int]:
    """Ids of ``VISION_TOKENS`` in ``tokenizer``'s vocabulary (those it has)."""
    vocab = tokenizer.get_vocab()
    return sorted(int(vocab[token]) for token in VISION_TOKENS if token in vocab)


def vision_tokens_sampled(responses: Sequence[Any], vision_ids: Sequence[int]) -> int:
    """How many of the responses' tokens are vision placeholders.

    >>> vision_tokens_sampled([[5, 151655, 7], [151655, 151655]], [151652, 151655])
    3
    """
    banned = {int(i) for i in vision_ids}
    return sum(int(token) in banned for response in responses for token in np.asarray(response).reshape(-1))
