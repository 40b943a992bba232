"""The data layer: the synthetic phantom, slice decoding, preparation into a training set (whose format
and reader are heartjobs.store.prepared), and which sets a list of job specs needs."""
