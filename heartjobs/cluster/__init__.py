"""Orchestration: job specs submitted to Slurm (or run locally) as submitit arrays, and their states.

options (how to submit), task (the array task), submit (planning, submitting, submission.json),
states (the scheduler's states of the tasks, status, waiting).
"""

# Pickles of submitted tasks made before heartjobs.cluster was a package name heartjobs.cluster.SpecTask;
# a pending or requeued task of such a submission must still start
from heartjobs.cluster.task import SpecTask

__all__ = ["SpecTask"]
