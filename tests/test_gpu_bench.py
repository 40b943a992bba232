"""bench/gpu_bench.py at toy sizes on the CPU: every phase runs and the JSON holds every figure (so the GPU
benchmark never rots between the runs on a GPU box)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _numbers(value, path: str = ""):
    """Every number in a JSON value, with where it is."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_gpu_bench_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_bench.json"
    done = subprocess.run(
        [sys.executable, "bench/gpu_bench.py", "--allow-cpu", "--tiny", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for title in ("Training throughput", "Speed switches", "FID, heartjobs", "FID, thesis route", "Projection"):
        assert title in done.stdout, title

    results = json.loads(out.read_text())
    assert results["complete"] is True
    assert results["device"]["kind"] in ("cpu", "cuda") and results["device"]["torch"]
    assert results["weights"]["kind"] in ("standard", "untrained")
    for where, number in _numbers(results):
        assert math.isfinite(number) and number >= 0, where
    gpu = results["device"]["kind"] == "cuda"
    assert set(results["phases_s"]) == {"setup", "training", "fid", "thesis_fid", "switches"}
    assert all(_positive(v) for v in results["phases_s"].values())

    # every (model, batch size, latent dim) of the thesis' 21 jobs, both routes over the same images
    rows = results["training"]
    assert {r["model"] for r in rows} == {"gan", "wgan", "dcgan"}
    assert sum(len(r["jobs"]) for r in rows) == 21
    assert len({(r["model"], r["batch_size"], r["latent_dim"]) for r in rows}) == len(rows) == 15
    for r in rows:
        assert r["precision"] == {"tf32": "convolutions", "compile": False, "bf16": False}
        assert r["thesis"]["images"] == r["heartjobs"]["images"] > 0
        for route in ("thesis", "heartjobs"):
            assert _positive(r[route]["images_per_s"]) and _positive(r[route]["seconds"]), (r["model"], route)
            assert _positive(r[route]["peak_gpu_mib"]) if gpu else r[route]["peak_gpu_mib"] is None
        assert _positive(r["ratio"])
        keeping = r["heartjobs"]["bookkeeping"]
        assert _positive(keeping["checkpoint_s"]) and _positive(keeping["checkpoint_mib"])
        assert _positive(keeping["samples_s"])

    fid = results["fid"]
    for key in ("heartjobs_cold", "heartjobs_cached"):
        assert _positive(fid[key]["seconds"]) and _positive(fid[key]["fid_mean"]), key
    assert fid["heartjobs_cold"]["real_statistics_cached"] is False
    assert fid["heartjobs_cached"]["real_statistics_cached"] is True
    assert fid["heartjobs_cached"]["fid_mean"] == fid["heartjobs_cold"]["fid_mean"]  # same images, same statistics
    assert _positive(fid["kid_repeat_s"])
    thesis = fid["thesis_repeat"]
    for key in ("generate_and_save_s", "cli_s", "fid"):
        assert _positive(thesis[key]), key

    settings = results["switches"]["settings"]
    # --tiny leaves torch.compile out (minutes on a CPU)
    assert set(settings) == {"thesis_exact", "tf32", "bf16", "phase_conv"}
    for name, run in settings.items():
        assert "error" not in run, (name, run.get("error"))
        assert _positive(run["images_per_s"]) and _positive(run["fid"]), name
    assert all(_positive(settings[name]["ratio"]) for name in ("tf32", "bf16", "phase_conv"))

    projection = results["projection"]
    assert len(projection["jobs"]) == 21
    for row in projection["jobs"]:
        for key in ("heartjobs_train_s", "heartjobs_eval_s", "thesis_train_s", "thesis_eval_s"):
            assert _positive(row[key]), (row["job"], key)
    for key in ("heartjobs_s", "thesis_s", "ratio", "heartjobs_train_s", "thesis_train_s"):
        assert _positive(projection["totals"][key]), key
