"""The argument types the commands share: numbers with a lower bound, refused by argparse with its usage line.
Their names are what argparse prints for text that is no number ("invalid _positive_int value: 'x'"), so
they keep them."""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


positive_int, positive_float, count = _positive_int, _positive_float, _count
