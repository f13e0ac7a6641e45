"""RewardMap rewards and ReasonMap metrics: pure Python, total on any model output."""
