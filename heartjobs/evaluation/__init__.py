"""Evaluation: metrics computed from a generator and a prepared set, returned, never written here
(inception.py: FID and KID from pytorch-fid's Inception features; statistics.py: the distances;
weights.py: which Inception weights), and records.py, which puts a result into a run folder.
Evaluation never imports training (tests/test_layers.py keeps it so)."""
