"""RewardMap reward manager for verl 0.9.1's reward loop: verl's naive manager scoring with ``reward_fns``.

Select it (it runs inside verl's ``RewardLoopWorker`` Ray actors, so it is loaded by path, not registered)::

    reward.reward_manager.source=importlib
    reward.reward_manager.module.path=pkg://recipe.reward_manager
    reward.reward_manager.name=RewardMapRewardManager

Scoring options live in ``reward.reward_kwargs`` (a free-form dict verl hands to every manager; add it with
``+reward.reward_kwargs.mode=released`` on a command line whose yaml lacks it). Every key is optional and checked
as ``reward_fns.RewardOptions`` when the manager is built, so a typo, a string, a boolean, nan or inf fails at
start-up with the key named instead of silently falling back to a default or giving nan rewards::

    reward.reward_kwargs.mode             fixed | released | sparse       (default fixed)
    reward.reward_kwargs.alpha            detail-reward factor, >= 0      (default 0.5)
    reward.reward_kwargs.map_weights      {easy: 1.0, middle: 1.2, hard: 1.5} (the default), each > 0
    reward.reward_kwargs.transfer_weight  question (transfer) weight, >= 0 (default 0.5)
    reward.reward_kwargs.format_reward    format-reward size, >= 0        (default 1.0)

``reward.custom_reward_function`` is not used: this manager always scores with ``reward_fns.compute_score``.

``reward.timeout`` (seconds, the key verl 0.9.1's rate-limited reward-loop manager reads) bounds each sample: a
sample whose scoring has not finished by then gets reward 0, ``reward_timeout=1`` and ``reward_error=1`` (counted in
``rewardmap/reward/timeout_rate`` and ``error_rate``), and the step goes on. verl's per-sample ``compute_score_timeout``
(upstream PR #6673) is in its legacy driver-side naive manager only (``workers/reward_manager/naive.py:29``,
SIGALRM, main thread), not in the reward-loop naive manager this one extends (``experimental/reward_loop/
reward_manager/naive.py:75``), which awaits its score function in the event loop's thread pool with no bound.
null or 0: unbounded.

Every sample returns the same numeric ``reward_extra_info`` keys (``REWARD_EXTRA_INFO_KEYS``), which verl forwards to
the trainer and ``recipe.step_metrics`` aggregates per step.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from verl import DataProto
from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

from reward_fns import SCORE_KEYS, RewardOptions
from reward_fns import compute_score as rewardmap_compute_score
from reward_fns.benchmark import VALIDATION_KEYS
from reward_fns.benchmark import validation_metrics as benchmark_validation_metrics
from reward_fns.ground_truth import MAP_DIFFICULTIES, QUESTION_TYPES, GroundTruth
from reward_fns.question_context import question_context

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

# The benchmark-metric keys (VALIDATION_KEYS: ReasonMap accuracy, map score and weighted-accuracy
# parts, ReasonMap-Plus accuracy, under the released and fixed rules) a validation sample (one served by the plain,
# non-curriculum dataset: extra_info.plan_stage_name == recipe.dataset.VALIDATION_STAGE_NAME) carries, computed by
# RewardMapRewardManager.validation_metrics. Every sample carries them so that the key set is the same for every
# sample, as verl requires. In a validation sample a key that does not apply (a VQA key on a planning question) is
# None, which verl's validation averaging drops, so val-aux/<data_source>/<key>/mean@N is the benchmark number itself;
# a training sample has NaN for every one of them, so its extra-info columns stay float64 as verl's reward loop and
# TransferQueue expect (training metrics never read these keys).

# The extra-info keys of every sample: floats (-1 marks "unknown" for the id-like ones), the validation keys floats
# or None.
REWARD_EXTRA_INFO_KEYS = (
    *SCORE_KEYS,
    "stage",  # extra_info.plan_stage: index of the curriculum stage that served the sample (the dataset's fact)
    "question_type_id",  # index into reward_fns.ground_truth.QUESTION_TYPES (from the ground truth)
    "map_difficulty_id",  # index into MAP_DIFFICULTIES: 0 easy, 1 middle, 2 hard (from the ground truth)
    "question_transfer_count",  # from the ground truth
    "reward_error",  # 1.0 when scoring raised (a data bug, logged) or timed out; the reward is then 0
    "reward_timeout",  # 1.0 when scoring did not finish within reward.timeout seconds (logged); the reward is then 0
    *VALIDATION_KEYS,
)
_MAX_STAGE = 2**31  # a stage index beyond this is junk (and would overflow the metrics' int64 cast)


def reward_kwargs_from_config(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """``reward.reward_kwargs`` checked as ``RewardOptions``: the keys given (None values dropped: defaults apply)
    with their checked values. ValueError names the key ("reward.reward_kwargs.alpha: ...")."""
    reward_cfg = config.get("reward") or {}
    raw = reward_cfg.get("reward_kwargs") or {}
    kwargs = OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else dict(raw)
    options = RewardOptions.from_kwargs(kwargs, where="reward.reward_kwargs.")
    given = {key: getattr(options, key) for key, value in kwargs.items() if value is not None}
    if "map_weights" in given:
        given["map_weights"] = dict(given["map_weights"])
    return given


def reward_timeout_from_config(config: DictConfig | Mapping[str, Any]) -> float | None:
    """``reward.timeout`` in seconds, or None (unbounded) when it is null or 0; ValueError names the key otherwise.

    >>> reward_timeout_from_config({"reward": {"timeout": 30}}), reward_timeout_from_config({"reward": {}})
    (30.0, None)
    """
    value = (config.get("reward") or {}).get("timeout")
    if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"reward.timeout: {value!r} is not a number of seconds >= 0 (null or 0: unbounded)")
    return float(value)


class RewardMapRewardManager(NaiveRewardManager):
    """verl's naive reward manager (decoding, the score-function call in its executor, the result layout) with
    ``reward_fns.compute_score`` and the checked ``reward.reward_kwargs`` as its score function.

    What it adds, because verl's naive manager cannot carry it:

    - the scoring options: naive calls its score function without options, so the manager binds the checked
      ``reward.reward_kwargs`` (``score_kwargs``) into the function it hands to naive;
    - per-sample facts for the metrics (``REWARD_EXTRA_INFO_KEYS``), the same keys for every sample: naive forwards only
      what the score function returns, so the function returns them;
    - error containment: naive lets any exception through (a row without ``reward_model``, an invalid ground truth,
      a tokenizer failure), which fails the whole training step. Here the sample gets reward 0 and
      ``reward_error=1`` (logged), inside the score function for scoring errors and around naive's ``run_single``
      for everything before it;
    - a time bound: naive waits for its score function forever, so one slow sample stalls the whole step. Here
      naive's ``run_single`` runs under ``reward.timeout`` (``asyncio.wait_for``); past it the sample gets 0 and
      ``reward_timeout=1``. Python cannot stop the worker thread still scoring it: that thread finishes (or hangs)
      on its own, holding one of the event loop's executor threads;
    - rows whose ``extra_info`` is missing or None: naive writes ``num_turns`` into ``extra_info`` in place, which
      fails on None and edits the batch's own row, so it gets a fresh dict copy;
    - the validation-metrics extension point (``validation_metrics``, keys ``VALIDATION_KEYS``).

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
        self.score_kwargs = reward_kwargs_from_config(config)  # first: a bad option fails before anything else
        self.timeout = reward_timeout_from_config(config)
        _validation_stage_name()  # its one-time import (seconds under load) must not count against a sample's timeout
        self.score_fn = rewardmap_compute_score
        super().__init__(config, tokenizer, self.score_sample, reward_router_address, reward_model_tokenizer)
        custom = (config.get("reward") or {}).get("custom_reward_function") or {}
        if custom.get("path"):
            logger.warning("reward.custom_reward_function.path is ignored by RewardMapRewardManager")

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        """Naive's ``run_single`` on the last trajectory, with a private ``extra_info``, within ``reward.timeout``; 0
        and reward_error=1 if it raises before the score function (which contains its own errors) or times out
        (reward_timeout=1 too)."""
        data = data[-1:]  # multi-output agent loops: the reward is for the last sequence, as in verl
        extra_info = data[0].non_tensor_batch.get("extra_info")
        private = np.empty(1, dtype=object)
        private[0] = dict(extra_info) if isinstance(extra_info, Mapping) else {}
        data.non_tensor_batch["extra_info"] = private
        timed_out = False
        try:
            return await asyncio.wait_for(super().run_single(data), timeout=self.timeout)
        except asyncio.TimeoutError:  # a slow sample must not stall the step: logged, counted in timeout_rate
            logger.error("scoring a sample took over reward.timeout=%ss; reward set to 0", self.timeout)
            timed_out = True
        except Exception:  # a data bug must not kill training: logged, counted in rewardmap/reward/error_rate
            logger.error("scoring a sample failed before compute_score; reward set to 0", exc_info=True)
        reward_model = data[0].non_tensor_batch.get("reward_model")
        ground_truth = reward_model.get("ground_truth") if isinstance(reward_model, Mapping) else None
        info = self.sample_info(None, ground_truth, private[0], "")
        info["reward_timeout"] = 1.0 if timed_out else 0.0
        return {"reward_score": info["score"], "reward_extra_info": info}

    def score_sample(
        self, data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, **_: Any
    ) -> dict[str, float]:
        """The score function naive calls: ``reward_fns.compute_score`` with the options, plus the sample's facts
        and (validation samples) benchmark metrics; ``REWARD_EXTRA_INFO_KEYS`` in that order, every value a finite float
        except the validation keys (NaN in a training sample, None where one does not apply to a validation sample)."""
        extra_info = extra_info if isinstance(extra_info, Mapping) else {}
        scores = None
        try:
            result = self.score_fn(data_source, solution_str, ground_truth, extra_info, **self.score_kwargs)
            scores = {key: float(result[key]) for key in SCORE_KEYS}
            if not all(math.isfinite(value) for value in scores.values()):
                raise ValueError(f"non-finite reward components {scores}")
        except Exception:  # total on responses; raises only for a bad ground truth (a data bug): logged, counted
            logger.error("compute_score raised for data_source=%r; reward set to 0", data_source, exc_info=True)
            scores = None
        return self.sample_info(scores, ground_truth, extra_info, solution_str)

    def sample_info(
        self, scores: Mapping[str, float] | None, ground_truth: Any, extra_info: Mapping[str, Any], solution_str: str
    ) -> dict[str, float | None]:
        """The extra-info dict of one sample: the scores (zeros and reward_error=1 when None), the facts, and the
        validation metrics of a validation sample (NaN for every validation key elsewhere)."""
        info: dict[str, float | None] = dict.fromkeys(REWARD_EXTRA_INFO_KEYS, 0.0)
        info.update(dict.fromkeys(VALIDATION_KEYS, math.nan))
        if scores is None:
            info["reward_error"] = 1.0
        else:
            info.update(scores)
        info.update(sample_facts(ground_truth, extra_info))
        if VALIDATION_KEYS and is_validation_sample(extra_info):
            try:
                metrics = self.validation_metrics(solution_str, ground_truth, extra_info)
                info.update({key: _finite_or_none(metrics.get(key)) for key in VALIDATION_KEYS})
            except Exception:  # a bad ground truth (a data bug): logged, counted; the metrics are dropped
                logger.error("validation metrics raised; they are None for this sample", exc_info=True)
                info.update(dict.fromkeys(VALIDATION_KEYS))
                info["reward_error"] = 1.0
        return info

    def validation_metrics(
        self, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any]
    ) -> dict[str, float | None]:
        """The benchmark metrics of one validation sample, keyed by ``VALIDATION_KEYS`` (verl logs them as
        ``val-aux/<data_source>/<key>/mean@N``): ``reward_fns.benchmark.validation_metrics``."""
        return benchmark_validation_metrics(ground_truth, solution_str)


def _finite_or_none(value: Any) -> float | None:
    """A metric value as verl's validation averaging takes it: a finite float, else None (dropped)."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def sample_facts(ground_truth: Any, extra_info: Mapping[str, Any]) -> dict[str, float]:
    """Stage, question type, map difficulty and transfer count of a sample as numbers (-1 when unknown).

    Everything but the stage comes from the ground truth (what the reward scored, even where ``extra_info``
    disagrees); the stage is ``extra_info.plan_stage`` (only the dataset knows it) when it is a finite integer
    from -1 up, else -1.
    """
    gt = _ground_truth(ground_truth)
    return {
        "stage": _stage(extra_info.get("plan_stage")),
        "question_type_id": float(QUESTION_TYPES.index(gt.question_type)) if gt else -1.0,
        "map_difficulty_id": float(MAP_DIFFICULTIES.index(gt.map_difficulty)) if gt else -1.0,
        "question_transfer_count": float(gt.question_transfer_count) if gt else -1.0,
    }


def is_validation_sample(extra_info: Mapping[str, Any]) -> bool:
    """Whether the plain (validation) dataset served the sample (``recipe.dataset`` marks its stage name)."""
    return extra_info.get("plan_stage_name") == _validation_stage_name()


@functools.cache
def _validation_stage_name() -> str:
    from recipe.dataset import VALIDATION_STAGE_NAME  # when first needed: it imports verl's dataset stack (~1 s)

    return VALIDATION_STAGE_NAME


def _ground_truth(value: Any) -> GroundTruth | None:
    try:
        if isinstance(value, GroundTruth):
            return value
        return GroundTruth.from_json(value) if isinstance(value, str) else question_context(value).gt
    except ValueError:
        return None


def _stage(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return -1.0
    try:
        stage = float(value)
    except OverflowError:
        return -1.0
    integral = math.isfinite(stage) and stage == int(stage)
    return stage if integral and -1 <= stage < _MAX_STAGE else -1.0
