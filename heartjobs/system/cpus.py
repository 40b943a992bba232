"""The CPUs a job may use: the fewest of its Slurm allocation, its container's CPU quota and its affinity,
and torch and its libraries kept to them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def allotted_cpus() -> tuple[int, str]:
    """How many CPUs this process may use, and what said so: the fewest of the Slurm allocation
    (SLURM_CPUS_PER_TASK, else SLURM_CPUS_ON_NODE), the container's CPU quota (cgroup v2 cpu.max or v1
    cpu.cfs_quota_us, rounded up) and the CPUs it may run on (its affinity)."""
    found = [(len(os.sched_getaffinity(0)), "CPU affinity")]
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        if (value := os.environ.get(name, "")).isdigit() and int(value) > 0:
            found.append((int(value), name))
            break
    if (quota := _cgroup_cpu_quota()) is not None:
        found.append((quota, "cgroup CPU quota"))
    return min(found)


def _cgroup_cpu_quota(root: Path = Path("/")) -> int | None:
    """The tightest CPU quota on this process's cgroup and those above it, in whole CPUs (rounded up), or
    None when none is set. cgroup v2: cpu.max ("max 100000" or "200000 100000") from the process's own
    cgroup up to the root; v1: cpu.cfs_quota_us / cpu.cfs_period_us likewise in the cpu controller's
    hierarchy. `root` is for tests (a fake /proc and /sys tree)."""
    import math

    quotas: list[int] = []
    with contextlib.suppress(OSError):
        for line in (root / "proc/self/cgroup").read_text().splitlines():
            _, controllers, own = line.split(":", 2)
            if controllers == "":
                mount, read = root / "sys/fs/cgroup", _cgroup_v2_quota
            elif "cpu" in controllers.split(","):
                mount, read = root / "sys/fs/cgroup" / controllers, _cgroup_v1_quota
                if not mount.is_dir():  # mounted under one of the controller names only
                    mount = root / "sys/fs/cgroup/cpu"
            else:
                continue
            folder = Path(own.lstrip("/"))
            for level in [folder, *folder.parents]:  # in a container the own path may not exist: skipped
                with contextlib.suppress(OSError, ValueError, IndexError, ZeroDivisionError):
                    if (cpus := read(mount / level)) is not None:
                        quotas.append(math.ceil(cpus))
    return max(1, min(quotas)) if quotas else None


def _cgroup_v2_quota(folder: Path) -> float | None:
    quota, period = (folder / "cpu.max").read_text().split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _cgroup_v1_quota(folder: Path) -> float | None:
    quota = int((folder / "cpu.cfs_quota_us").read_text())
    return None if quota < 0 else quota / int((folder / "cpu.cfs_period_us").read_text())


def use_allotted_cpus() -> None:
    """Set torch's intra-op threads to the CPUs this process was given (unless OMP_NUM_THREADS says how
    many): torch starts one per core of the machine, and two 1-CPU Slurm tasks on a 2-core node then ran
    25 times slower than with one thread each."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    cpus, _ = allotted_cpus()
    if cpus < torch.get_num_threads():
        torch.set_num_threads(cpus)
