"""The one parallel map (heartjobs.data.pool) on real spawned processes: results in order, one pool reused
by later maps, the work not yet started cancelled and the running work waited for when a map is left
early, a pool whose process was killed replaced, and pool processes that die with the process that
started them however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heartjobs.data.pool import ordered_map
from heartjobs.system.liveness import pid_running

from .conftest import wait_for


def _pid_of_worker(item: int) -> tuple[int, int]:
    return item, os.getpid()


def _fail_on_three(item: int) -> int:
    if item == 3:
        raise ValueError("three")
    return item


def _slow_marked(item: tuple[Path, int]) -> int:
    folder, i = item
    (folder / f"started_{i}").touch()
    time.sleep(0.3)
    (folder / f"finished_{i}").touch()
    return i


def _kill_self(item: int) -> int:
    if item == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def test_results_come_in_order_from_one_pool_reused_by_the_next_map():
    with ordered_map(2, chunksize=3) as pmap:
        first = list(pmap(_pid_of_worker, range(20)))
    with ordered_map(2) as pmap:
        second = list(pmap(_pid_of_worker, range(20, 30)))
    assert [i for i, _ in first + second] == list(range(30))
    workers = {pid for _, pid in first}
    assert os.getpid() not in workers and 1 <= len(workers) <= 2
    assert {pid for _, pid in second} <= workers  # the same processes: not started again


def test_an_error_reaches_the_caller_and_the_pool_goes_on():
    with pytest.raises(ValueError, match="three"), ordered_map(2) as pmap:
        list(pmap(_fail_on_three, range(8)))
    with ordered_map(2) as pmap:
        assert list(pmap(_fail_on_three, [0, 1, 2])) == [0, 1, 2]


def test_leaving_early_cancels_what_has_not_started_and_waits_for_what_runs(tmp_path):
    items = [(tmp_path, i) for i in range(12)]
    with pytest.raises(KeyboardInterrupt), ordered_map(2) as pmap:
        for _ in pmap(_slow_marked, items):
            raise KeyboardInterrupt  # Ctrl-C after the first result
    started = {p.name.split("_")[1] for p in tmp_path.glob("started_*")}
    finished = {p.name.split("_")[1] for p in tmp_path.glob("finished_*")}
    assert started == finished  # nothing still running once the map is left (a folder may be removed now)
    assert len(started) < len(items)  # and the rest never started
    with ordered_map(2) as pmap:  # the pool's queue is empty: a later map runs at once, nothing left over
        assert list(pmap(_pid_of_worker, [0]))[0][0] == 0
    assert {p.name for p in tmp_path.glob("started_*")} == {f"started_{i}" for i in started}


def test_a_pool_whose_process_was_killed_is_replaced():
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool), ordered_map(2) as pmap:
        list(pmap(_kill_self, range(4)))
    with ordered_map(2) as pmap:
        assert [i for i, _ in pmap(_pid_of_worker, range(4))] == [0, 1, 2, 3]


def test_pool_processes_die_with_the_process_that_started_them(tmp_path):
    # a process with a pool, idle after one map, killed by SIGKILL (no atexit, no shutdown): its pool's
    # processes must not wait on their queue forever
    code = (
        "import sys, time\nfrom heartjobs.data.pool import ordered_map\nfrom tests.test_pool import _pid_of_worker\n"
        "with ordered_map(2) as pmap:\n    pids = {pid for _, pid in pmap(_pid_of_worker, range(8))}\n"
        "print(*pids, flush=True)\ntime.sleep(120)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    workers = [int(pid) for pid in owner.stdout.readline().split()]
    assert workers and all(pid_running(pid) for pid in workers)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    owner.stdout.close()
    wait_for(lambda: not any(pid_running(pid) for pid in workers), timeout=30)
