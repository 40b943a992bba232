"""Orchestration: job specs submitted to Slurm (or run locally) as submitit arrays, and their states."""
