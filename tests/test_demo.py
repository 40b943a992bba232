"""make demo: its jobs (jobs/demo) and its step-by-step script (scripts/demo.sh), run for real at a small size."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from heartjobs.spec.loading import parse_spec

ROOT = Path(__file__).resolve().parents[1]
DEMO_LINE = re.compile(r"^# demo: (?P<what>[^;]+); about (?P<time>.+) on 2 cores$", re.MULTILINE)


def test_each_demo_job_trains_on_the_heart_phantom_and_says_what_it_is_and_how_long_it_takes():
    specs = sorted((ROOT / "jobs" / "demo").glob("*.toml"))
    assert {parse_spec(path).model for path in specs} == {"gan", "wgan", "dcgan"}
    for path in specs:
        spec = parse_spec(path)
        line = DEMO_LINE.search(path.read_text())
        assert line, f"{path.name}: no '# demo: WHAT; about TIME on 2 cores' line"
        # the line the demo prints names the epochs the spec trains
        assert re.search(rf"\b{spec.train.epochs} epochs\b", line["what"]), (path.name, line["what"])
        assert str(spec.data.prepared) == "data/prepared/heart64" and str(spec.output.root) == "artifacts/demo"
        # measured as the demo's ladder runs: untrained Inception at 192-d, FRD on 100 images a repeat
        assert (spec.eval.weights, spec.eval.dims, spec.eval.frd_n) == ("untrained", 192, 100)


def _demo(cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        cwd=cwd,
        env={**os.environ, "BIN": str(Path(sys.executable).parent), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_demo_announces_each_step_with_its_expected_time_and_ends_with_the_report_link(tmp_path):
    jobs = tmp_path / "jobs" / "demo"
    jobs.mkdir(parents=True)
    (jobs / "gan.toml").write_text(
        "# demo: GAN, 2 epochs; about 5 s on 2 cores\n"
        'name = "demo_gan"\nmodel = "gan"\n[data]\nprepared = "data/prepared/heart64"\n'
        '[train]\nepochs = 2\ndevice = "cpu"\n'
        '[eval]\nweights = "untrained"\nn_generated = 20\nrepeats = 1\ndims = 64\nbatch_size = 10\n'
        "kid_subset_size = 10\nfrd = false\nms_ssim_pairs = 20\n"
        '[output]\nroot = "artifacts/demo"\n'
    )
    # no "# demo:" line: the step says its time is not known; a device this machine lacks: the job fails
    (jobs / "wgan.toml").write_text(
        'name = "demo_wgan"\nmodel = "wgan"\n[data]\nprepared = "data/prepared/heart64"\n'
        '[train]\nepochs = 1\ndevice = "cuda"\n[eval]\nmeasure = false\n[output]\nroot = "artifacts/demo"\n'
    )
    (jobs / "more.sweep.toml").write_text("not a job spec: a sweep file, left out\n")
    result = _demo(
        tmp_path, INSTALL="echo installing", LADDER_OPTIONS="--weights untrained --dims 64 --n 10 --metrics fid"
    )
    # the failed job fails the demo, after the report
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == "error: 1 demo job(s) failed; their logs are in queue/demo/failed/"
    out = result.stdout
    announced = re.findall(r"^\[(\d)/6\] (.*)$", out, re.MULTILINE)
    titles = [text for n, text in announced if not text.startswith("done in")]
    assert [t.split(":")[0].split(" (")[0] for t in titles] == [
        "install",
        "data",
        "validity ladder",
        "job gan",
        "job wgan",
        "report",
    ]
    assert "installing" in out.split("[1/6] install")[1].split("[1/6] done")[0]
    assert "job gan: GAN, 2 epochs (about 5 s on 2 cores)" in titles
    assert "job wgan (its time not measured: the spec has no '# demo: WHAT; TIME' line)" in titles
    assert len(re.findall(r"^\[\d/6\] done in \d+ s; \d+ min \d\d s so far$", out, re.MULTILINE)) == 6
    # the demo's set was made (prepare-data.sh: the heart phantom at 256 px, prepared at 64 px) and recorded as
    # a phantom; every job has its run; the report's link is its last line
    manifest = json.loads((tmp_path / "data" / "prepared" / "heart64" / "manifest.json").read_text())
    assert manifest["phantom"]["kind"] == "heart" and manifest["shape"] == [200, 1, 64, 64]
    assert (tmp_path / "artifacts" / "demo" / "demo_gan" / "v0001" / "fid.json").is_file()
    assert (tmp_path / "artifacts" / "demo" / "ladder" / "ladder.json").is_file()
    report = out.split("[6/6] report")[1]
    assert "heart phantom, 64 px" in report
    assert report.splitlines()[-2].startswith("report: file://") and report.splitlines()[-2].endswith("report.html")


def test_the_demo_refuses_jobs_on_two_sets_before_any_work(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for name, prepared in (("a", "data/prepared/heart64"), ("b", "data/prepared/phantom64")):
        (jobs / f"{name}.toml").write_text(f'name = "{name}"\nmodel = "gan"\n[data]\nprepared = "{prepared}"\n')
    result = _demo(tmp_path, DEMO_JOBS=str(jobs))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {jobs}: the demo's jobs must train on one prepared set, not data/prepared/heart64 "
        "data/prepared/phantom64"
    ]
    assert not (tmp_path / "data").exists() and not (tmp_path / "artifacts").exists()
