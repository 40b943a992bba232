"""Training: the Trainer loop and device resolution (loop.py). The run around it (folders, status,
signals, resume, evaluation) is heartjobs.job's; training never imports evaluation."""
