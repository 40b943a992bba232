"""The one parallel map (data preparation, FRD's features): in order, inline for one worker, else over
spawned processes that a process starts once and reuses."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from itertools import islice

from heartjobs.procs import allotted_cpus

# The pools this process has started, by (workers, initializer). Starting one costs each of its processes
# a Python start and the imports of its work (pyradiomics, SimpleITK: about 1.5 s on 2 cores); the
# validity ladder extracts radiomic features ten times and a measurement once per repeat, so they are
# started once and reused until the process exits (concurrent.futures joins them then).
_pools: dict[tuple[int, Callable[[], None] | None], ProcessPoolExecutor] = {}


def worker_count(requested: int | None, items: int) -> int:
    """How many processes to use: as requested (default: the CPUs this process was given, see
    procs.allotted_cpus), never more than there is work."""
    return max(1, min(requested or allotted_cpus()[0], items))


def _pool(workers: int, initializer: Callable[[], None] | None, fresh: bool = False) -> ProcessPoolExecutor:
    key = (workers, initializer)
    if fresh or key not in _pools:
        _pools[key] = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer)
    return _pools[key]


def _apply(fn: Callable, chunk: list) -> list:
    return [fn(item) for item in chunk]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@contextmanager
def ordered_map(
    workers: int, chunksize: int = 1, initializer: Callable[[], None] | None = None
) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """A map whose results come in the items' order: the builtin map for one worker, else this process's
    pool of `workers` spawned processes (functions and items must pickle; `initializer` runs once in each
    process, so it is part of which pool). Leaving early (an error, Ctrl-C) cancels the work not yet
    started instead of waiting for it; the pool stays for the next map, or is replaced if a process of it
    died (killed, out of memory)."""
    if workers <= 1:
        yield map
        return
    submitted: list[Future] = []

    def pmap(fn: Callable, items: Iterable) -> Iterator:
        chunks = list(_chunks(items, chunksize))
        try:
            futures = [_pool(workers, initializer).submit(_apply, fn, chunk) for chunk in chunks]
        except BrokenProcessPool:  # broken by an earlier map: start a fresh one
            futures = [_pool(workers, initializer, fresh=True).submit(_apply, fn, chunk) for chunk in chunks]
        submitted.extend(futures)
        for future in futures:
            yield from future.result()

    try:
        yield pmap
    finally:
        for future in submitted:
            future.cancel()  # only what has not started; a running chunk ends in the background
