"""The one parallel map (data preparation, FRD's features): in order, inline for one worker, else over
spawned processes."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from heartjobs.procs import allotted_cpus


def worker_count(requested: int | None, items: int) -> int:
    """How many processes to use: as requested (default: the CPUs this process was given, see
    procs.allotted_cpus), never more than there is work."""
    return max(1, min(requested or allotted_cpus()[0], items))


@contextmanager
def ordered_map(
    workers: int, chunksize: int = 1, initializer: Callable[[], None] | None = None
) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """A map whose results come in the items' order: the builtin map for one worker, else a pool of
    spawned processes (functions and items must pickle; `initializer` runs once in each). Leaving early
    (an error, Ctrl-C) cancels the work not yet started instead of waiting for it."""
    if workers <= 1:
        yield map
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer)
    try:
        yield lambda fn, items: pool.map(fn, items, chunksize=chunksize)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
