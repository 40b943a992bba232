"""What ran a job: library versions, device, host, git commit and command line, and the data it trained on
(a run's env.json)."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from heartjobs import __version__
from heartjobs.store.prepared import read_manifest
from heartjobs.store.status import now_iso
from heartjobs.system import cpus


def environment(device: str, prepared: Path | None = None) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    # a checkout's commit, or, inside the Docker image (no .git), the one it was built from
    commit = os.environ.get("HEARTJOBS_GIT_COMMIT") or None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        commit = result.stdout.strip() if result.returncode == 0 else commit
    return {
        "heartjobs": __version__,
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda and device.startswith("cuda") else None,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpus_allotted": "{} ({})".format(*cpus.allotted_cpus()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git_commit": commit,
        "command": sys.argv,
        "time": now_iso(),
        **({"data": data_record(prepared)} if prepared is not None else {}),
    }


def data_record(prepared: Path) -> dict:
    """The prepared set a run trains on: its folder, its content_hash, and where its images came from when
    its manifest says so (`data fetch` records the dataset, its DOI, citation and licence, the level and the
    source as `provenance`; a set prepared from slices has none; one prepared from a phantom, `phantom`)."""
    manifest = read_manifest(Path(prepared)) or {}
    shape = manifest.get("shape")
    return {
        "prepared": str(prepared),
        "content_hash": manifest.get("content_hash"),
        "provenance": manifest.get("provenance"),
        # what the report's protocol line names ("heart phantom, 64 px"): the phantom `data phantom` made,
        # if the set was prepared from one, and the image size
        "phantom": manifest.get("phantom"),
        "image_size": shape[-1] if isinstance(shape, list) and shape and isinstance(shape[-1], int) else None,
    }
