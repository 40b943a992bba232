"""Orchestration: the study report of an artifacts folder: its summary (summary.md/.csv/.json), the
configurations over seeds and their statistics, the figures and the HTML page."""
