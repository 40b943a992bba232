"""Processes: this machine's CPUs and devices, liveness, stop signals, locks, and starting `heartjobs run`."""
