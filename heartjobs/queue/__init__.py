"""Orchestration: the directory queue of job specs and the worker that runs them one at a time."""
