"""The fault campaign (`make faults N=...`): queue workers killed at random moments, then drained, and the
runner's invariants checked after every iteration.

Each iteration queues the same two tiny jobs (one of them twice, as a duplicate submission; the other
measures FID, so faults land in evaluation too), starts a worker (every other iteration with --overlap 1, so
that faults land in a measurement running beside the next job's training too), and at a random moment (setup, training,
a checkpoint write, FID, between jobs) sends one fault: SIGTERM or SIGINT to the worker; SIGKILL to the
worker; SIGKILL to the worker's whole process group (worker and job together); SIGTERM or SIGKILL to the
job's own process from outside the worker; SIGKILL to the job's process while one of its checkpoints is
being written (by the background writer, while training goes on: at the first temporary checkpoint file
seen after the random moment, so mid-write or just after); a second worker racing the first over the same
queue; or a user's `heartjobs run --resume` of a queued job racing the worker. The first iteration's fault
is always the SIGKILL mid-write, so that every campaign (CI's `make faults N=3` too) has one; the others are
drawn at random. Then a fresh worker drains the queue and these must hold:
- every queued entry ended in done/ or failed/ exactly once, and none failed;
- one finished version per configuration in this iteration, and no version without status.json;
- no run says "running" without a live process; no temp files left in a run folder;
- each finished generator is bit-identical to an uninterrupted reference run of the same job.
Prints what it did and the counts; exits 1 at the first broken invariant. --parallel K runs K iterations
at once (each with its own queue, artifacts and worker slots): the same faults, and more of them per hour
on a machine whose cores a single iteration leaves idle.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import torch

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.queue.folders import Queue
from heartjobs.runner.lifecycle import run_job
from heartjobs.store.checkpoint import load_generator
from heartjobs.store.rundir import RunDir, versions
from heartjobs.system.liveness import process_alive

JOBS = {
    "fa_gan": 'model = "gan"\n[train]\nepochs = 6\nbatch_size = 2\ncheckpoint_every = 1\nsample_every = 3\n',
    "fa_dcgan": 'model = "dcgan"\n[train]\nepochs = 3\nbatch_size = 2\ncheckpoint_every = 1\nsample_every = 3\n',
}
EVAL = {  # fa_dcgan is measured: FID and KID with untrained Inception weights (no download), small and quick
    "fa_gan": "measure = false\n",
    "fa_dcgan": 'weights = "untrained"\ndims = 64\nn_generated = 16\nrepeats = 2\nfrd = false\n',
}
FAULTS = (
    "sigterm_worker",
    "sigint_worker",
    "sigkill_worker",
    "sigkill_group",
    "sigterm_run",
    "sigkill_run",
    "sigkill_run_writing",
    "second_worker",
    "concurrent_resume",
)
WRITE_POLL_S = 0.0005  # how often sigkill_run_writing looks for a checkpoint being written (catches each one)
USER_RESUME_WAIT_S = "5"  # how long the user's --resume waits for a running version before it gives up (75)


def write_job(folder: Path, name: str, prepared: Path, root: Path) -> Path:
    path = folder / f"{name}.toml"
    body = JOBS[name].replace("[train]\n", '[train]\ndevice = "cpu"\n')
    path.write_text(f'name = "{name}"\n{body}[data]\nprepared = "{prepared}"\n[eval]\n{EVAL[name]}'
                    f'[output]\nroot = "{root}"\n')  # fmt: skip
    return path


def heartjobs(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "heartjobs", *map(str, args)], **popen)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a worker's `heartjobs run`), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def kill_mid_write(worker: subprocess.Popen, root: Path) -> str:
    """SIGKILL the worker's job process the moment a checkpoint of this iteration is being written (its
    temporary file exists); what happened, for the iteration's line."""
    while worker.poll() is None:
        writing = [p.name for p in root.glob("*/v*/checkpoints/.epoch_*.tmp")]
        if writing:
            runs = children(worker.pid)
            for pid in runs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return f" (writing {writing[0]}: {'killed' if runs else 'no run to signal'})"
        time.sleep(WRITE_POLL_S)
    return " (no checkpoint written after the delay: nothing killed)"


def check(iteration: int, queue: Path, root: Path, references: dict[str, Path], queued: int) -> Counter:
    counts: Counter = Counter()
    finished = {state: sorted((queue / state).glob("*.json")) for state in ("done", "failed")}
    leftover = [p.name for state in ("pending", "running") for p in (queue / state).glob("*.toml")]
    assert not leftover, f"iteration {iteration}: entries left in the queue: {leftover}"
    assert not finished["failed"], f"iteration {iteration}: failed: {[p.name for p in finished['failed']]}"
    assert len(finished["done"]) == queued, f"iteration {iteration}: {len(finished['done'])} of {queued} done"
    counts["entries_done"] += len(finished["done"])
    for name, reference in references.items():
        runs = [RunDir(v) for v in versions(root / name)]
        done = [r for r in runs if r.status().state == "done"]
        assert len(done) == 1, f"iteration {iteration}: {name}: {len(done)} finished versions"
        for run in runs:
            status = run.status()
            assert status.state is not None, f"iteration {iteration}: {run}: no status.json"
            assert status.state != "running" or not process_alive(status.process()), f"{run}: still running"
            temps = list(run.path.rglob(".*.tmp"))
            assert not temps or run.status().state != "done", f"{run}: temp files left: {temps}"
        ours = load_generator(done[0].generator)[0].state_dict()
        theirs = load_generator(reference / "generator.pt")[0].state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), f"iteration {iteration}: {name}: weights differ"
        if (reference / "fid.json").is_file():
            assert (done[0].path / "fid.json").is_file(), f"iteration {iteration}: {name}: measured, no fid.json"
            counts["measured"] += 1
        counts["versions"] += len(runs)
        counts["bit_identical"] += 1
    return counts


def one_iteration(
    iteration: int, seed: int, tmp: Path, references: dict[str, Path], max_delay: float
) -> tuple[str, str, Counter]:
    """Queue, fault, drain, check: one iteration in a folder of its own; returns what it did."""
    rng = random.Random(f"{seed}-{iteration}")  # the same faults for the same seed, however many run at once
    work = tmp / f"i{iteration:04d}"
    work.mkdir()
    root, queue = work / "artifacts", work / "queue"
    specs = {name: write_job(work, name, tmp / "prepared", root) for name in JOBS}
    entries = [specs["fa_gan"], specs["fa_dcgan"], specs["fa_gan"]]  # the last: a duplicate submission
    subprocess.run([sys.executable, "-m", "heartjobs", "enqueue", *map(str, entries), "--queue", str(queue)],
                   check=True, capture_output=True)  # fmt: skip
    fault = rng.choice(FAULTS)
    if iteration == 1:  # every campaign, CI's short one included, kills a job in a background write
        fault = "sigkill_run_writing"
    delay = rng.uniform(0.5, max_delay)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    overlap = str(iteration % 2)  # odd iterations measure fa_dcgan while the next job trains
    worker = heartjobs("worker", "--queue", queue, "--slot", f"faults-{iteration}-a", "--overlap", overlap,
                       start_new_session=True, **quiet)  # fmt: skip
    others, outcome = [], ""
    time.sleep(delay)  # the fault's random moment: setup, training, a checkpoint write, FID, the end
    if fault in ("sigterm_run", "sigkill_run"):  # the job's own process, from outside the worker
        runs = children(worker.pid)
        for pid in runs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if fault == "sigterm_run" else signal.SIGKILL)
        outcome = "" if runs else " (between jobs: no run to signal)"
    elif fault == "sigkill_run_writing":
        outcome = kill_mid_write(worker, root)
    elif fault == "sigterm_worker":
        worker.send_signal(signal.SIGTERM)
    elif fault == "sigint_worker":
        worker.send_signal(signal.SIGINT)
    elif fault == "sigkill_worker":
        worker.kill()
    elif fault == "sigkill_group":
        os.killpg(worker.pid, signal.SIGKILL)
    elif fault == "second_worker":  # races the first one over the same queue (and the duplicate entry)
        others.append(heartjobs("worker", "--queue", queue, "--slot", f"faults-{iteration}-b", "--overlap", overlap,
                                **quiet))  # fmt: skip
    else:  # a user resumes a queued job while the worker may be running it: one trains it, once
        env = {**os.environ, "HEARTJOBS_RESUME_WAIT_S": USER_RESUME_WAIT_S}
        others.append(heartjobs("run", specs["fa_gan"], "--resume", env=env, **quiet))
    worker.wait()
    for proc in others:
        proc.wait()
        assert proc.returncode in (0, 75), f"iteration {iteration}: {fault}: exit {proc.returncode}"
        outcome += f" (the other process: exit {proc.returncode})"
    # what is left: recover the dead worker's job and drain with a fresh worker
    Queue(queue).recover_stale(stale_after=0)
    subprocess.run([sys.executable, "-m", "heartjobs", "worker", "--queue", str(queue), "--slot",
                    f"faults-{iteration}-drain", "--overlap", overlap], check=True, capture_output=True)  # fmt: skip
    counts = check(iteration, queue, root, references, queued=len(entries))
    shutil.rmtree(work)
    line = f"iteration {iteration}: {fault} after {delay:.1f} s, overlap {overlap}{outcome}: ok ({dict(counts)})"
    return fault, line, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=8.0, help="latest moment of the fault, seconds")
    parser.add_argument(
        "--parallel", type=int, default=1, help="iterations at once, each with its own queue, artifacts and slots"
    )
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="heartjobs-faults-") as tmp:
        tmp = Path(tmp)
        os.environ["HEARTJOBS_CACHE"] = str(tmp / "cache")
        generate(tmp / "phantom", PhantomParams(slices=12, size=64, seed=1), workers=1)
        prepare(tmp / "phantom", tmp / "prepared", PrepareParams(size=32), workers=1)
        references = {}
        for name in JOBS:
            references[name] = run_job(write_job(tmp, name, tmp / "prepared", tmp / "reference"))
        totals: Counter = Counter()
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            running = [
                pool.submit(one_iteration, i, args.seed, tmp, references, args.max_delay) for i in range(1, args.n + 1)
            ]
            try:
                for future in as_completed(running):
                    fault, line, counts = future.result()  # the first broken invariant ends the campaign
                    totals.update(counts)
                    totals[fault] += 1
                    print(line, flush=True)
            except BaseException:
                for future in running:
                    future.cancel()
                raise
    print(f"faults: {args.n} iterations clean in {time.monotonic() - started:.0f} s: {dict(totals)}")


if __name__ == "__main__":
    main()
