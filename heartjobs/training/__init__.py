"""Training: the Trainer loop and device resolution (loop.py), DiffAugment (augment.py) and WGAN-GP's
gradient penalty (penalty.py). The run around it (folders, status, signals, resume, evaluation) is
heartjobs.runner.lifecycle's; training never imports evaluation."""
