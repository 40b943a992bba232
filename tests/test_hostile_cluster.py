"""Submissions and their options as an attacker would shape them (issue 28, items 2 and 5): a submissions
folder from elsewhere is read without unpickling anything in it (a result pickle's payload never runs,
neither for `submit --status` nor for a plain `submit`, which reads the earlier submissions), and an option
that reaches the Slurm batch script is refused in one line when it holds a newline or another control
character, before anything is written or submitted."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import pytest
from submitit.core.utils import JobPaths, cloudpickle_dump

from heartjobs import atomic
from heartjobs.spec.loading import load_spec
from heartjobs.store.rundir import claim_version, versions

from .conftest import cli, write_spec
from .test_cluster import _fake_slurm

QUICK = {"epochs": 2, "batch_size": 4, "device": "cpu"}


class _WritesMarker:
    """A pickle payload: unpickling it opens (creates) the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _crafted_submission(root: Path, spec_hash: str, marker: Path) -> list[str]:
    """A local submission "from this host" whose tasks' controllers are gone (this process's pid with
    another start time), each with a result file: a payload behind submitit's "success" tag, a payload as
    the whole pickle, and a genuine error result. Returns the job ids."""
    folder = claim_version(root)
    logs = folder / "logs"
    logs.mkdir()
    results = {
        "a": pickle.dumps(("success", _WritesMarker(marker))),
        "b": pickle.dumps(_WritesMarker(marker)),
    }
    tasks = []
    for index, job_id in enumerate((f"{os.getpid()}", f"{os.getpid()}_1", f"{os.getpid()}_2")):
        paths = JobPaths(logs, job_id, 0)
        if index < 2:
            paths.result_pickle.write_bytes(results["ab"[index]])
        else:
            cloudpickle_dump(("error", "Traceback: the task failed"), paths.result_pickle)  # as submitit writes it
        tasks.append(
            {
                "index": index,
                "job": f"job{index}",
                "job_id": job_id,
                "pid_started": -1,
                "spec_hash": spec_hash,
                "stdout": str(paths.stdout),
                "run_root": str(root / "no-runs"),
            }
        )
    record = {"executor": "local", "host": socket.gethostname(), "created": "2026-01-01T00:00:00+00:00"}
    atomic.write_json(folder / "submission.json", {**record, "tasks": tasks})
    return [task["job_id"] for task in tasks]


def test_a_result_pickle_in_a_submissions_folder_is_never_unpickled(tmp_path, prepared32):
    spec_path = write_spec(tmp_path, "held", "gan", prepared32, **QUICK)
    spec = load_spec(spec_path)
    finished = claim_version(spec.run_root)  # so that a plain submit has nothing to start
    atomic.write_json(finished / "resolved.json", {"spec_hash": spec.spec_hash})
    atomic.write_json(finished / "status.json", {"state": "done"})
    root = tmp_path / "submissions"
    marker = tmp_path / "payload-ran"
    job_ids = _crafted_submission(root, spec.spec_hash, marker)

    status = cli("submit", "--status", "--folder", root, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert not marker.exists()
    states = {line.split("\t")[2]: line.split("\t")[3] for line in status.stdout.strip().splitlines()[1:]}
    # the state is read from the tag submitit writes, as data; a pickle that is not (tag, ...) is no result
    assert states == {job_ids[0]: "COMPLETED", job_ids[1]: "INTERRUPTED", job_ids[2]: "FAILED"}

    again = cli("submit", spec_path, "--executor", "local", "--gpus-per-job", "0", "--folder", root, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert not marker.exists()
    assert "already finished in" in again.stdout and "nothing to submit" in again.stdout
    assert versions(root) == [root / "v0001"]


OPTIONS = [
    ("--partition", "gpu\ntouch {marker}\n#"),
    ("--account", "lab\ntouch {marker}"),
    ("--qos", "normal\rtouch {marker}"),
    ("--sbatch", "constraint=a100\ntouch {marker}"),
    ("--sbatch", "exclusive\x1b]0;x\x07"),
    ("--setup", "module load apptainer\ntouch {marker}"),
    ("--time", "10\n"),
    ("--folder", "subs\ntouch {marker}"),
]


@pytest.mark.parametrize(("option", "value"), OPTIONS, ids=[f"{o}-{i}" for i, (o, _) in enumerate(OPTIONS)])
def test_a_control_character_in_an_option_of_the_batch_script_is_refused_in_one_line(
    tmp_path, prepared32, option, value
):
    spec = write_spec(tmp_path, "job", "gan", prepared32, **QUICK)
    env = _fake_slurm(tmp_path)  # sbatch keeps the script it was given
    marker = tmp_path / "injected"
    value = value.format(marker=marker)
    folder = [] if option == "--folder" else ["--folder", tmp_path / "submissions"]
    slurm = ("--executor", "slurm", "--gpus-per-job", "0")
    result = cli("submit", spec, *slurm, option, value, *folder, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}: ") and "control character" in lines[0], lines
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sbatch_script.sh").exists()  # nothing submitted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "job.toml"]  # nothing written
