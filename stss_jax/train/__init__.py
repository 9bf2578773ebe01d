"""Training: train state, optimiser, steps, loop, checkpoints, sharding."""
