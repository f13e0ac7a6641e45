"""RewardMap's verl 0.9.1 integration; README.md "How the recipe plugs into verl" lists every hook into verl."""
