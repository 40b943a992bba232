"""Formats: what a run leaves on disk and how it is read back: the run folder and its versions, status.json,
checkpoints and generator files, prepared sets, the environment record, and which measurement is best."""
