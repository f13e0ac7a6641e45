"""RewardMap rewards and ReasonMap metrics: pure Python, total on any model output.

``compute_score`` is verl's custom reward function (``reward_fns.score``); ``reward_fns.benchmark`` computes the
benchmark metrics; ``reward_fns.gold.gold_response`` writes a correct answer for a ground truth.
"""

from reward_fns.score import MODES, SCORE_KEYS, RewardOptions, ScoreResult, compute_score

__all__ = ["MODES", "SCORE_KEYS", "RewardOptions", "ScoreResult", "compute_score"]
