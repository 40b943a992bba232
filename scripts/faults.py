"""The fault campaign (`make faults N=...`): queue workers killed at random moments, then drained, and the
runner's invariants checked after every iteration.

Each iteration queues the same two tiny jobs (one of them twice, as a duplicate submission), starts a
worker, and after a random delay sends one fault: SIGTERM or SIGINT to the worker, SIGKILL to the worker,
or SIGKILL to the worker's whole process group (worker and job together), or a second worker racing the
first over the same queue. Then a fresh worker drains the queue and these must hold:
- every queued entry ended in done/ or failed/ exactly once, and none failed;
- one finished version per configuration in this iteration, and no version without status.json;
- no run says "running" without a live process; no temp files left in a run folder;
- each finished generator is bit-identical to an uninterrupted reference run of the same job.
Prints what it did and the counts; exits 1 at the first broken invariant.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from heartjobs.checkpoint import load_generator
from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.job import run_job
from heartjobs.procs import process_alive
from heartjobs.rundir import RunDir, versions

JOBS = {
    "fa_gan": 'model = "gan"\n[train]\nepochs = 6\nbatch_size = 2\ncheckpoint_every = 1\nsample_every = 3\n',
    "fa_dcgan": 'model = "dcgan"\n[train]\nepochs = 3\nbatch_size = 2\ncheckpoint_every = 1\nsample_every = 3\n',
}
FAULTS = ("sigterm_worker", "sigint_worker", "sigkill_worker", "sigkill_group", "second_worker")


def write_job(folder: Path, name: str, prepared: Path, root: Path) -> Path:
    path = folder / f"{name}.toml"
    body = JOBS[name].replace("[train]\n", '[train]\ndevice = "cpu"\n')
    path.write_text(f'name = "{name}"\n{body}[data]\nprepared = "{prepared}"\n[eval]\nfid = false\n'
                    f'[output]\nroot = "{root}"\n')  # fmt: skip
    return path


def heartjobs(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "heartjobs", *map(str, args)], **popen)


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
        done = [r for r in runs if r.status().get("state") == "done"]
        assert len(done) == 1, f"iteration {iteration}: {name}: {len(done)} finished versions"
        for run in runs:
            status = run.status()
            assert status, f"iteration {iteration}: {run}: no status.json"
            assert status.get("state") != "running" or not process_alive(status), f"{run}: still running"
            temps = list(run.path.rglob(".*.tmp"))
            assert not temps or run.status().get("state") != "done", f"{run}: temp files left: {temps}"
        ours = load_generator(done[0].generator)[0].state_dict()
        theirs = load_generator(reference / "generator.pt")[0].state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), f"iteration {iteration}: {name}: weights differ"
        counts["versions"] += len(runs)
        counts["bit_identical"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=8.0, help="latest moment of the fault, seconds")
    args = parser.parse_args()
    rng = random.Random(args.seed)
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
        for iteration in range(1, args.n + 1):
            work = tmp / f"i{iteration:04d}"
            work.mkdir()
            root, queue = work / "artifacts", work / "queue"
            specs = {name: write_job(work, name, tmp / "prepared", root) for name in JOBS}
            entries = [specs["fa_gan"], specs["fa_dcgan"], specs["fa_gan"]]  # the last: a duplicate submission
            subprocess.run([sys.executable, "-m", "heartjobs", "enqueue", *map(str, entries), "--queue", str(queue)],
                           check=True, capture_output=True)  # fmt: skip
            fault = rng.choice(FAULTS)
            delay = rng.uniform(0.5, args.max_delay)
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            worker = heartjobs("worker", "--queue", queue, "--slot", f"faults-{iteration}-a", start_new_session=True,
                               **quiet)  # fmt: skip
            others = []
            time.sleep(delay)  # the fault's random moment: setup, training, a checkpoint write, the end
            if fault == "sigterm_worker":
                worker.send_signal(signal.SIGTERM)
            elif fault == "sigint_worker":
                worker.send_signal(signal.SIGINT)
            elif fault == "sigkill_worker":
                worker.kill()
            elif fault == "sigkill_group":
                os.killpg(worker.pid, signal.SIGKILL)
            else:  # a second worker races the first one over the same queue (and the duplicate entry)
                others.append(heartjobs("worker", "--queue", queue, "--slot", f"faults-{iteration}-b", **quiet))
            worker.wait()
            for proc in others:
                proc.wait()
            # what is left: recover the dead worker's job and drain with a fresh worker
            from heartjobs.jobqueue import Queue

            Queue(queue).recover_stale(stale_after=0)
            subprocess.run([sys.executable, "-m", "heartjobs", "worker", "--queue", str(queue), "--slot",
                            f"faults-{iteration}-drain"], check=True, capture_output=True)  # fmt: skip
            counts = check(iteration, queue, root, references, queued=len(entries))
            totals.update(counts)
            totals[fault] += 1
            print(f"iteration {iteration}: {fault} after {delay:.1f} s: ok ({dict(counts)})", flush=True)
            shutil.rmtree(work)
    print(f"faults: {args.n} iterations clean in {time.monotonic() - started:.0f} s: {dict(totals)}")


if __name__ == "__main__":
    main()
