"""make demo: its jobs (jobs/demo) and its step-by-step script (scripts/demo.sh), run for real at a small size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
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
        assert f"{spec.train.epochs} epochs" in line["what"], (path.name, line["what"])
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
    # where prepare-data.sh finds the demo's set, a small one (it makes the 200-slice one only when missing)
    generate(tmp_path / "slices", PhantomParams(slices=24, size=64, seed=3, kind="heart"), workers=1)
    prepare(tmp_path / "slices", tmp_path / "data" / "prepared" / "heart64", PrepareParams(size=32), workers=1)
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
    (jobs / "wgan.toml").write_text(  # no "# demo:" line: the step says its time is not known
        'name = "demo_wgan"\nmodel = "wgan"\n[data]\nprepared = "data/prepared/heart64"\n'
        '[train]\nepochs = 1\ndevice = "cpu"\n[eval]\nmeasure = false\n[output]\nroot = "artifacts/demo"\n'
    )
    result = _demo(tmp_path, LADDER_OPTIONS="--weights untrained --dims 64 --n 10 --metrics fid")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    announced = re.findall(r"^\[(\d)/5\] (.*)$", out, re.MULTILINE)
    titles = [text for n, text in announced if not text.startswith("done in")]
    assert [t.split(":")[0].split(" (")[0] for t in titles] == [
        "data",
        "validity ladder",
        "job gan",
        "job wgan",
        "report",
    ]
    assert "job gan: GAN, 2 epochs (about 5 s on 2 cores)" in titles
    assert "job wgan (its time not measured: the spec has no '# demo: WHAT; TIME' line)" in titles
    assert len(re.findall(r"^\[\d/5\] done in \d+ s; \d+ min \d\d s so far$", out, re.MULTILINE)) == 5
    # the set that was there is used, not made again; every job has its run; the report's link is last
    assert not (tmp_path / "data" / "heart-phantom").exists()
    assert (tmp_path / "artifacts" / "demo" / "demo_gan" / "v0001" / "fid.json").is_file()
    assert (tmp_path / "artifacts" / "demo" / "ladder" / "ladder.json").is_file()
    assert out.splitlines()[-2].startswith("report: file://") and out.splitlines()[-2].endswith("report.html")


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
