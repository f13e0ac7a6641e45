"""The RewardMap paper's Qwen2.5-VL-7B results (arXiv 2510.02240), printed beside ours so a run reads against them.

All are weighted accuracies in percent: ReasonMap short and long with the appendix weights 1 + 0.5 x (question
level + map level), ReasonMap-Plus with map weights 1.0 / 1.5 / 2.0. They were produced with the released
per-question rules (the released code's slips included); the code that weighted the ReasonMap accuracies is not
released. Compare them with this recipe's ``released`` rows (``appendix_weighted_accuracy`` for ReasonMap).
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_RULES = "released"


@dataclass(frozen=True)
class PaperRow:
    name: str
    reasonmap_short: float
    reasonmap_long: float
    reasonmap_plus: float


QWEN25_VL_7B_ROWS = (
    PaperRow("base model", 13.28, 7.12, 44.21),
    PaperRow("RL on ReasonMap only", 26.22, 26.04, 44.64),
    PaperRow("SFT then RL", 28.82, 30.38, 60.53),
    PaperRow("RewardMap", 31.51, 31.77, 74.25),
)
