"""Hostile job specs and sweeps (issue 28, items 6, 9, 12 and 19): a file nested a thousand levels deep, values
that validate but break later, a sweep's [base] that is no table, and lax types. Each is one line naming the
file and the field, exit code 2, nothing written; a queue entry of them fails alone and the worker goes on;
values just inside the bounds run."""

from __future__ import annotations

import json

import pytest

from heartjobs.queue.folders import Queue
from heartjobs.spec.loading import load_spec, parse_spec
from heartjobs.spec.schema import MAX_SEED, MAX_WIDTH

from .conftest import cli, one_line_error, write_spec

QUICK = {"epochs": 1, "batch_size": 4, "device": "cpu"}
# Each about a kilobyte, each past Python's recursion limit where it is read or walked: arrays (TOML's
# parser recurses), inline tables (so does it), dotted keys (it does not, but every reader of the result does).
DEEP = {
    "arrays": "a = " + "[" * 500 + "]" * 500 + "\n",
    "inline tables": "a = " + "{b = " * 400 + "1" + "}" * 400 + "\n",
    "dotted keys": "[" + ".".join(["a"] * 1500) + "]\nb = 1\n",
}


def _spec_text(prepared, tmp_path, extra: str = "", model: str = "gan") -> str:
    """A spec with its artifacts under tmp_path and `extra` (TOML tables) added; [output] may be among them."""
    output = "[output]\n" + ("" if "root =" in extra else f'root = "{tmp_path / "artifacts"}"\n')
    if extra.startswith("[output]\n"):
        output, extra = output + extra.removeprefix("[output]\n"), ""
    return f'name = "j"\nmodel = "{model}"\n[data]\nprepared = "{prepared}"\n{output}{extra}\n'


# Item 6: deep nesting


@pytest.mark.parametrize("deep", DEEP.values(), ids=DEEP.keys())
@pytest.mark.parametrize("command", ["validate", "show", "run", "enqueue", "data needs", "sweep", "report --jobs"])
def test_a_spec_nested_a_thousand_levels_deep_is_one_line_in_every_command(tmp_path, prepared32, deep, command):
    folder = tmp_path / "specs"
    folder.mkdir()
    path = folder / ("deep.sweep.toml" if command == "sweep" else "deep.toml")
    path.write_text(_spec_text(prepared32, tmp_path) + deep)
    args = {
        "enqueue": ["enqueue", path, "--queue", tmp_path / "q"],
        "data needs": ["data", "needs", path],
        "report --jobs": ["report", tmp_path / "artifacts", "--jobs", folder],
        "sweep": ["sweep", path, "--out", tmp_path / "jobs"],
    }.get(command, [command, path])
    if command == "report --jobs":  # an unreadable spec counts as a missing job, by its file name
        (tmp_path / "artifacts").mkdir()
        result = cli(*args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert "deep" in result.stdout
        return
    result = cli(*args)
    assert "nested more than 32 levels deep" in one_line_error(result, f"error: {path}: ")
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "jobs").exists()
    assert Queue(tmp_path / "q").entries("pending") == []


def test_a_deep_queue_entry_fails_alone_and_the_job_behind_it_runs(tmp_path, prepared32):
    queue = Queue(tmp_path / "q")
    deep = tmp_path / "deep.toml"
    deep.write_text(_spec_text(prepared32, tmp_path) + DEEP["arrays"])
    queue.add(deep)  # as a file dropped into pending/ (enqueue refuses it)
    queue.add(write_spec(tmp_path, "good", "gan", prepared32, **QUICK))

    result = cli("worker", "--queue", queue.root, "--slot", "test-hostile-spec")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert [e.name for e in queue.entries("failed")] == ["deep"]
    assert [e.name for e in queue.entries("done")] == ["good"]
    failed = json.loads((queue.root / "failed" / "000001_deep.json").read_text())
    assert "\n" not in failed["error"] and "nested more than 32 levels deep" in failed["error"]

    # queue status reads a running entry's spec: one that deep is listed all the same
    (queue.root / "running" / "000003_deep.toml").write_bytes(deep.read_bytes())
    status = cli("queue", "status", "--queue", queue.root)
    assert status.returncode == 0 and "000003_deep.toml" in status.stdout, status.stderr


def test_queue_records_nested_a_thousand_levels_deep_read_as_damaged(tmp_path):
    # the JSON beside a queue entry (how it ended, its worker's heartbeat) is read as absent, not a crash
    queue = Queue(tmp_path / "q").ensure()
    deep_json = "[" * 5000 + "]" * 5000
    (queue.root / "failed" / "000001_a.toml").write_text("")
    (queue.root / "failed" / "000001_a.json").write_text(deep_json)
    (queue.root / "running" / "000002_b.toml").write_text("")
    (queue.root / "running" / "000002_b.worker.json").write_text('{"pid": ' + deep_json + "}")
    status = cli("queue", "status", "--queue", queue.root)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    assert "000001_a.toml" in status.stdout and "000002_b.toml" in status.stdout


# Item 9: values that validate but break later


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("[train]\nlatent_dim = 9223372036854775807", "train.latent_dim: Input should be less than or equal to 16384"),
        ("[architecture]\nhidden = [128, 9223372036854775807]", "architecture.hidden.1: Input should be less than"),
        ("[architecture]\nwidth = 9223372036854775800", "architecture.width: Input should be less than"),
        ("[train]\nseed = 18446744073709551616", "train.seed: Input should be less than or equal to 92233720368547758"),
        ("[train]\nseed = -1", "train.seed: Input should be greater than or equal to 0"),
        ("[eval]\nseed = 1e23", "eval.seed: Input should be a valid integer"),
        ("[eval]\nseed = 9223372036854775808", "eval.seed: Input should be less than or equal to"),
        ("[train]\nlr = inf", "train.lr: Input should be a finite number"),
        ("[train]\nlr = nan", "train.lr: Input should be a finite number"),
        ("[train]\nlr = 1e30", "train.lr: Input should be less than or equal to 1"),
        ("[train]\nbatchnorm_eps = inf", "train.batchnorm_eps: Input should be a finite number"),
        ("[train]\nepochs = 9223372036854775807", "train.epochs: Input should be less than or equal to 2147483647"),
        ("[train]\nbatch_size = 9223372036854775807", "train.batch_size: Input should be less than or equal to"),
        ("[eval]\nn_generated = 1099511627776", "eval.n_generated: Input should be less than or equal to 1048576"),
        ("[eval.during]\nn_generated = 1099511627776", "eval.during.n_generated: Input should be less than"),
        ('[output]\nroot = "art\\u0000ifacts"', "output.root: a path without control characters"),
        ('[eval]\nweights = "my\\nweights.pt"', "eval.weights: a path without control characters"),
    ],
)  # fmt: skip
def test_a_value_the_code_cannot_use_is_refused_at_validation(tmp_path, prepared32, extra, field):
    path = tmp_path / "job.toml"
    model = "dcgan" if "width" in extra else "gan"
    path.write_text(_spec_text(prepared32, tmp_path, extra, model))
    for command in ("validate", "show", "run"):
        assert field in one_line_error(cli(command, path, cwd=tmp_path), f"error: {path}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml"]  # no version claimed, none failed


def test_a_nul_in_the_prepared_path_is_one_line(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(_spec_text("/data\\u0000/set", tmp_path))
    assert "data.prepared: a path without control characters" in one_line_error(
        cli("validate", path), f"error: {path}: "
    )


def test_values_at_the_bounds_run(tmp_path, prepared32):
    # the largest seeds train (the trainer's streams use seed + 1 .. seed + 5) and the widest networks build
    path = write_spec(tmp_path, "edge", "gan", prepared32, seed=MAX_SEED, **QUICK)
    text = path.read_text().replace("[eval]\n", f"[eval]\nseed = {MAX_SEED}\n")
    path.write_text(text + f"[architecture]\nhidden = [{MAX_WIDTH}]\n")
    shown = cli("show", path)
    assert shown.returncode == 0, shown.stderr
    path.write_text(text)
    ran = cli("run", path)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    assert json.loads((tmp_path / "artifacts" / "edge" / "v0001" / "status.json").read_text())["state"] == "done"


def test_a_sweep_with_seeds_beyond_the_bound_writes_nothing(tmp_path, prepared32):
    sweep = tmp_path / "s.sweep.toml"
    sweep.write_text(
        f'seeds = [0, 1180591620717411303424]\n[base.data]\nprepared = "{prepared32}"\n[[group]]\nmodel = "gan"\n'
    )
    result = cli("sweep", sweep, "--out", tmp_path / "jobs")
    assert (
        one_line_error(result, f"error: {sweep}: ")
        == f"error: {sweep}: seeds.1: Input should be less than or equal to {MAX_SEED}"
    )
    assert not (tmp_path / "jobs").exists()


# Item 12: a sweep's [base] holds tables


@pytest.mark.parametrize("line", ['name = "x"', 'model = "gan"', "train = 3"])
def test_a_value_that_is_no_table_in_a_sweeps_base_is_one_line(tmp_path, line):
    sweep = tmp_path / "s.sweep.toml"
    sweep.write_text(f"[base]\n{line}\n[[group]]\nmodel = 'gan'\n")
    result = cli("sweep", sweep, "--out", tmp_path / "jobs")
    key = line.split()[0]
    assert one_line_error(result, f"error: {sweep}: ").startswith(
        f"error: {sweep}: base.{key}: not a table; [base] holds the spec's"
    )
    assert not (tmp_path / "jobs").exists()


# Item 19: strict types


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('[train]\nepochs = "1"', "train.epochs: Input should be a valid integer (got '1')"),
        ("[train]\nepochs = 1.0", "train.epochs: Input should be a valid integer (got 1.0)"),
        ('[train]\nlr = "0.001"', "train.lr: Input should be a valid number (got '0.001')"),
        ('[train]\nbetas = ["0.5", 0.999]', "train.betas.0: Input should be a valid number (got '0.5')"),
        ("[train]\nseed = true", "train.seed: Input should be a valid integer (got True)"),
        ('[train]\ncompile = "false"', "train.compile: Input should be a valid boolean (got 'false')"),
        ('[train]\ntf32 = "true"', "train.tf32: true, false or \"convolutions\" (got 'true')"),
        ('[eval]\nn_generated = "16"', "eval.n_generated: Input should be a valid integer (got '16')"),
        ("[eval]\nkid = 1", "eval.kid: Input should be a valid boolean (got 1)"),
        ("[architecture]\nhidden = [128.0]", "architecture.hidden.0: Input should be a valid integer (got 128.0)"),
        ('[output]\ntensorboard = "yes"', "output.tensorboard: Input should be a valid boolean (got 'yes')"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_refused_not_converted(tmp_path, prepared32, extra, field):
    path = tmp_path / "job.toml"
    path.write_text(_spec_text(prepared32, tmp_path, extra))
    assert one_line_error(cli("validate", path), f"error: {path}: ") == f"error: {path}: {field}"


def test_an_integer_is_a_float_and_the_spec_hash_is_the_same(tmp_path, prepared32):
    as_int = tmp_path / "int.toml"
    as_int.write_text(_spec_text(prepared32, tmp_path, "[train]\nlr = 1\nclip_value = 2", model="wgan"))
    as_float = tmp_path / "float.toml"
    as_float.write_text(_spec_text(prepared32, tmp_path, "[train]\nlr = 1.0\nclip_value = 2.0", model="wgan"))
    assert parse_spec(as_int).train.lr == 1.0
    assert load_spec(as_int).spec_hash == load_spec(as_float).spec_hash


def test_one_augment_policy_spelled_two_ways_in_a_sweep_is_one_job(tmp_path, prepared32):
    sweep = tmp_path / "s.sweep.toml"
    sweep.write_text(
        f'[base.data]\nprepared = "{prepared32}"\n[base.train]\naugment = "translation , cutout"\n'
        '[[group]]\nmodel = "gan"\n[group.vary]\naugment = ["translation, cutout", "translation,cutout", "cutout"]\n'
        '[[group]]\nmodel = "dcgan"\n[group.vary]\naugment = [" cutout", "cutout"]\n'
    )
    result = cli("sweep", sweep, "--out", tmp_path / "jobs")
    assert result.returncode == 0, result.stderr
    # the base's policy, however spelled, is the default; one spelling of a policy is one job
    written = sorted(p.name for p in (tmp_path / "jobs").iterdir())
    assert written == ["dcgan_augcutout.toml", "dcgan_default.toml", "gan_augcutout.toml", "gan_default.toml"]
