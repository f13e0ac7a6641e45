"""RewardMap reward manager for verl 0.9.1's reward loop: one trajectory in, one RewardMap reward out.

Select it (it runs inside verl's ``RewardLoopWorker`` Ray actors, so it is loaded by path, not registered)::

    reward.reward_manager.source=importlib
    reward.reward_manager.module.path=pkg://recipe.reward_manager
    reward.reward_manager.name=RewardMapRewardManager

Scoring options live in ``reward.reward_kwargs`` (a free-form dict verl hands to every manager; add it with
``+reward.reward_kwargs.mode=released`` on a command line whose yaml lacks it). Every key is optional::

    reward.reward_kwargs.mode             fixed | released | sparse       (default fixed)
    reward.reward_kwargs.alpha            detail-reward factor          (default 0.5)
    reward.reward_kwargs.map_weights      {easy: 1.0, middle: 1.2, hard: 1.5} (the default)
    reward.reward_kwargs.transfer_weight  question (transfer) weight    (default 0.5)
    reward.reward_kwargs.format_reward    format-reward size            (default 1.0)

Unknown keys are rejected when the manager is built, so a typo cannot silently fall back to a default.
``reward.custom_reward_function`` is not used: this manager always scores with ``reward_fns.compute_score``.

Every sample returns the same numeric ``reward_extra_info`` keys (``EXTRA_INFO_KEYS``), which verl forwards to
the trainer and ``recipe.metrics`` aggregates per step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from reward_fns import MODES, SCORE_KEYS
from reward_fns import compute_score as rewardmap_compute_score
from reward_fns.ground_truth import MAP_DIFFICULTIES, QUESTION_TYPES, GroundTruth
from reward_fns.weights import check_map_weights

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

REWARD_KWARGS = ("mode", "alpha", "map_weights", "transfer_weight", "format_reward")
# The extra-info keys of every sample, all floats; -1 marks "unknown" for the id-like ones.
EXTRA_INFO_KEYS = (
    *SCORE_KEYS,
    "stage",  # extra_info.plan_stage: index of the curriculum stage that served the sample
    "question_type_id",  # index into reward_fns.ground_truth.QUESTION_TYPES
    "map_difficulty_id",  # 0 easy, 1 middle, 2 hard
    "question_transfer_count",
    "reward_error",  # 1.0 when scoring raised (a bug, logged); the reward is then 0
)


def reward_kwargs_from_config(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Read and check ``reward.reward_kwargs`` as plain Python values (None values dropped: defaults apply).

    Raises ValueError for an unknown key, mode, a non-numeric factor or incomplete map weights: compute_score
    would raise on every sample for the last two, so they fail here, before any rollout.
    """
    reward_cfg = config.get("reward") or {}
    raw = reward_cfg.get("reward_kwargs") or {}
    kwargs = OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else dict(raw)
    unknown = sorted(set(kwargs) - set(REWARD_KWARGS))
    if unknown:
        raise ValueError(f"reward.reward_kwargs: unknown keys {unknown}; known: {list(REWARD_KWARGS)}")
    mode = kwargs.get("mode", "fixed")
    if mode not in MODES:
        raise ValueError(f"reward.reward_kwargs.mode: {mode!r} is not one of {MODES}")
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    for key in ("alpha", "transfer_weight", "format_reward"):
        if key in kwargs and (isinstance(kwargs[key], bool) or not isinstance(kwargs[key], (int, float))):
            raise ValueError(f"reward.reward_kwargs.{key}: must be a number, got {kwargs[key]!r}")
    if "map_weights" in kwargs:
        check_map_weights(kwargs["map_weights"])
    return kwargs


class RewardMapRewardManager(RewardManagerBase):
    """Decode a response, score it with ``reward_fns.compute_score``, return the score and numeric extra info.

    ``compute_score`` (verl's default, or a ``reward.custom_reward_function``) is accepted for the constructor
    contract but not used: the RewardMap reward and its options are this manager's whole purpose.
    """

    def __init__(
        self,
        config: DictConfig,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
    ) -> None:
        super().__init__(config, tokenizer, compute_score)
        self.score_fn = rewardmap_compute_score
        self.score_kwargs = reward_kwargs_from_config(config)
        self.reward_router_address = reward_router_address
        self.reward_model_tokenizer = reward_model_tokenizer
        custom = (config.get("reward") or {}).get("custom_reward_function") or {}
        if custom.get("path"):
            logger.warning("reward.custom_reward_function.path is ignored by RewardMapRewardManager")

    def decode(self, response_ids: Any) -> str:
        """Token ids to text; any decoding failure (ids out of vocabulary, odd bytes) yields ''."""
        try:
            text = self.tokenizer.decode(response_ids, skip_special_tokens=True)
        except Exception:  # a model output must never crash training
            logger.warning("could not decode a response; scoring it as empty", exc_info=True)
            return ""
        return text if isinstance(text, str) else ""

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        """Score the last trajectory of ``data``; compute_score runs inline (microseconds, pure Python)."""
        item = data[-1:][0]  # multi-output agent loops: the reward is for the last sequence, as in verl
        response_ids = item.batch["responses"]
        if "attention_mask" in item.batch.keys():
            valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
            response_ids = response_ids[:valid_length]
        solution = self.decode(response_ids)

        non_tensor = item.non_tensor_batch
        data_source = str(non_tensor.get("data_source", ""))
        reward_model = non_tensor.get("reward_model") or {}
        ground_truth = reward_model.get("ground_truth", "") if isinstance(reward_model, Mapping) else ""
        extra_info = non_tensor.get("extra_info")
        extra_info = dict(extra_info) if isinstance(extra_info, Mapping) else {}

        info = dict.fromkeys(EXTRA_INFO_KEYS, 0.0)
        try:
            result = self.score_fn(data_source, solution, ground_truth, extra_info, **self.score_kwargs)
            for key in SCORE_KEYS:
                info[key] = float(result.get(key, 0.0))
        except Exception:  # total on responses; raises only for a bad ground truth (a data bug): logged, counted
            logger.error("compute_score raised for data_source=%r; reward set to 0", data_source, exc_info=True)
            info.update(dict.fromkeys(SCORE_KEYS, 0.0), reward_error=1.0)
        info.update(sample_facts(extra_info, ground_truth))
        return {"reward_score": info["score"], "reward_extra_info": info}


def sample_facts(extra_info: Mapping[str, Any], ground_truth: str) -> dict[str, float]:
    """Stage, question type, map difficulty and transfer count of a sample as numbers (-1 when unknown).

    Read from ``extra_info`` (the schema's flat keys) and, where a key is missing, from the ground truth.
    """
    qtype, difficulty, transfers = (
        extra_info.get("question_type"),
        extra_info.get("map_difficulty"),
        extra_info.get("question_transfer_count"),
    )
    if qtype is None or difficulty is None or transfers is None:
        try:
            gt = GroundTruth.from_json(ground_truth)
            qtype = gt.question_type if qtype is None else qtype
            difficulty = gt.map_difficulty if difficulty is None else difficulty
            transfers = gt.question_transfer_count if transfers is None else transfers
        except (TypeError, ValueError):
            pass
    return {
        "stage": _as_float(extra_info.get("plan_stage"), default=-1.0),
        "question_type_id": float(QUESTION_TYPES.index(qtype)) if qtype in QUESTION_TYPES else -1.0,
        "map_difficulty_id": float(MAP_DIFFICULTIES.index(difficulty)) if difficulty in MAP_DIFFICULTIES else -1.0,
        "question_transfer_count": _as_float(transfers, default=-1.0),
    }


def _as_float(value: Any, *, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default
