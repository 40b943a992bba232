"""Orchestration: one run's lifecycle (version, status, signals, resume, train, measure, record) and its
TensorBoard event log."""
