"""Training: the recipe (config), the loop, the nested KD loss, checkpoints, the top-k teacher cache and the
cost estimate."""
