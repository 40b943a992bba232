"""Evaluation: FID and KID from pytorch-fid's Inception features, with cached real statistics."""
