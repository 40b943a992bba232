"""Training: the loop (loop.py), checkpoints (checkpoint.py) and the run lifecycle (run.py)."""
