"""The one parallel map (data preparation, FRD's features): in order, inline for one worker, else over
spawned processes that a process starts once and reuses."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import partial
from itertools import islice

from heartjobs.system.cpus import allotted_cpus
from heartjobs.system.launching import die_with_parent

# The pool this process has started for each initializer, with its size. Starting one costs each of its
# processes a Python start and the imports of its work (pyradiomics, SimpleITK: about 1.5 s on 2 cores);
# the validity ladder extracts radiomic features ten times and a measurement once per repeat, so a pool
# is started once and reused until the process exits (concurrent.futures joins it then). Its processes
# die with this process, however it dies (_start_pool_process).
_pools: dict[Callable[[], None] | None, tuple[int, ProcessPoolExecutor]] = {}


def worker_count(requested: int | None, items: int) -> int:
    """How many processes to use: as requested (default: the CPUs this process was given, see
    cpus.allotted_cpus), never more than there is work."""
    return max(1, min(requested or allotted_cpus()[0], items))


def _start_pool_process(parent: int, initializer: Callable[[], None] | None) -> None:
    """In each pool process: be killed when the process that started it dies (a SIGKILL, the OOM killer),
    instead of waiting on its queue forever; then the caller's own initializer."""
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)
    if initializer is not None:
        initializer()


def _pool(workers: int, initializer: Callable[[], None] | None, fresh: bool = False) -> ProcessPoolExecutor:
    size, pool = _pools.get(initializer, (0, None))
    if pool is None or fresh or size != workers:
        if pool is not None:  # one pool per initializer: the old one's processes go
            pool.shutdown(wait=False, cancel_futures=True)
        start = partial(_start_pool_process, os.getpid(), initializer)
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=start)
        _pools[initializer] = (workers, pool)
    return pool


def _apply(fn: Callable, chunk: list) -> list:
    return [fn(item) for item in chunk]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    if size < 1:
        raise ValueError(f"chunksize must be >= 1, got {size}")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@contextmanager
def ordered_map(
    workers: int, chunksize: int = 1, initializer: Callable[[], None] | None = None
) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """A map whose results come in the items' order: the builtin map for one worker, else this process's
    pool of `workers` spawned processes (functions and items must pickle; `initializer` runs once in each
    process). A result is let go once it is read. Leaving early (an error, Ctrl-C) cancels the work not yet
    started and waits for what is running (it may be writing into a folder the caller then removes); the
    pool stays for the next map, or is replaced if a process of it died."""
    if workers <= 1:
        yield map
        return
    maps: list[deque[Future]] = []  # each map's futures not yet read

    def pmap(fn: Callable, items: Iterable) -> Iterator:
        chunks = list(_chunks(items, chunksize))
        try:
            pool = _pool(workers, initializer)
            pending = deque(pool.submit(_apply, fn, chunk) for chunk in chunks)
        except BrokenProcessPool:  # broken by an earlier map (a process killed): start a fresh one
            pool = _pool(workers, initializer, fresh=True)
            pending = deque(pool.submit(_apply, fn, chunk) for chunk in chunks)
        maps.append(pending)
        while pending:
            yield from pending.popleft().result()

    try:
        yield pmap
    except BaseException:
        left = [future for pending in maps for future in pending]
        for future in left:
            future.cancel()
        wait(left)
        raise
    finally:
        for pending in maps:  # a map not read to the end: what has not started never will
            for future in pending:
                future.cancel()
