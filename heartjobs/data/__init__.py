"""The data layer: the synthetic phantom, slice decoding, preparation into a training set, and its loader."""
