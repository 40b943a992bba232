"""Job specs: strict validation with one-line errors, thesis defaults, the spec hash, validate/show."""

from __future__ import annotations

import json

import pytest

from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.errors import HeartjobsError
from heartjobs.spec import load_spec

from .conftest import run_cli


def _spec(tmp_path, text: str, name="job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _minimal(prepared, model="wgan", extra=""):
    return f'name = "j"\nmodel = "{model}"\n[data]\nprepared = "{prepared}"\n[train]\n{extra}\n'


def test_minimal_spec_resolves_to_the_thesis_defaults(tmp_path, prepared32):
    wgan = load_spec(_spec(tmp_path, _minimal(prepared32, "wgan", "latent_dim = 200")))
    t = wgan.train
    assert (t.optimizer, t.lr, t.n_critic, t.clip_value, t.betas) == ("rmsprop", 5e-5, 5, 0.01, None)
    assert (t.latent_dim, t.batch_size, t.epochs, t.batchnorm_eps, t.device) == (200, 64, 200, 0.8, "auto")
    assert (wgan.data.size, wgan.data.channels, wgan.data.count) == (32, 1, 12)
    for model in ("gan", "dcgan"):
        t = load_spec(_spec(tmp_path, _minimal(prepared32, model))).train
        assert (t.optimizer, t.lr, t.betas, t.latent_dim, t.n_critic) == ("adam", 2e-4, (0.5, 0.999), 100, None)


def test_spec_hash_is_stable_and_tracks_what_matters(tmp_path, prepared32):
    base = load_spec(_spec(tmp_path, _minimal(prepared32, "gan")))
    again = load_spec(_spec(tmp_path, _minimal(prepared32, "gan", "epochs = 200\nseed = 0"), "same.toml"))
    assert base.spec_hash == again.spec_hash  # defaults spelled out change nothing
    bookkeeping = load_spec(_spec(tmp_path, _minimal(prepared32, "gan", "sample_every = 3"), "b.toml"))
    assert bookkeeping.spec_hash == base.spec_hash
    other = load_spec(_spec(tmp_path, _minimal(prepared32, "gan", "lr = 0.0001"), "lr.toml"))
    assert other.spec_hash != base.spec_hash


def test_a_run_recorded_before_the_frd_keys_keeps_its_identity(tmp_path, prepared32):
    from heartjobs.spec import ResolvedSpec, configuration_differences

    spec = load_spec(_spec(tmp_path, _minimal(prepared32, "gan")))
    recorded = spec.model_dump(mode="json")
    for key in ("frd", "frd_n", "save_images"):  # what resolved.json held before FRD existed
        del recorded["eval"][key]
    assert ResolvedSpec.model_validate(recorded).spec_hash == spec.spec_hash
    assert configuration_differences(recorded, spec) == []
    # a spec that asks for something else than those defaults is another configuration, and says why
    fewer = load_spec(_spec(tmp_path, _minimal(prepared32, "gan", "[eval]\nfrd_n = 100"), "frd.toml"))
    assert fewer.spec_hash != spec.spec_hash
    assert configuration_differences(recorded, fewer) == ["eval.frd_n: (none) -> 100"]


BAD_SPECS = [
    # (text after the valid header, or a whole file with {prepared}, expected message fragment)
    ("lr = 0", "train.lr: Input should be greater than 0"),
    ("batch_size = 1", "train.batch_size: Input should be greater than or equal to 2"),
    ("epochs = 0", "train.epochs: Input should be greater than or equal to 1"),
    ("latent_dims = 200", "train.latent_dims: unknown key (did you mean 'latent_dim'?)"),
    ("epochs = 'ten'", "train.epochs: Input should be a valid integer"),
    ("device = 'tpu'", "train.device: Input should be 'auto', 'cpu' or 'cuda'"),
    ("betas = [0.5, 1.5]", "train.betas: both betas must be in [0, 1)"),
    ("[eval]\nn_generated = 1", "eval.n_generated: Input should be greater than or equal to 2"),
    ("[eval]\ndims = 100", "eval.dims: Input should be 64, 192, 768 or 2048"),
    ("[eval]\nnormalise = 'fixed'", "eval.normalise: unknown key (did you mean 'normalize'?)"),
    ("betas = [0.5, 0.9]", "train.betas: applies to Adam (gan, dcgan); wgan uses RMSprop"),
    (
        'name = "x"\nmodel = "gan"\n[data]\nprepared = "{prepared}"\n[train]\nn_critic = 2\n',
        "train.n_critic: applies to wgan only",
    ),
    (
        'name = "x"\nmodel = "gann"\n[data]\nprepared = "{prepared}"\n',
        "model: Input should be 'gan', 'wgan' or 'dcgan'",
    ),
    ('name = "x"\nmodel = "gan"\n[dta]\nprepared = "{prepared}"\n', "dta: unknown key (did you mean 'data'?)"),
    ('name = "x"\nmodel = "gan"\n', "data: required key is missing"),
    ('name = "a/b"\nmodel = "gan"\n[data]\nprepared = "{prepared}"\n', "name: use letters, digits"),
    (
        'name = "x"\nmodel = "gan"\n[data\nprepared = 1\n',
        "TOML syntax error: Expected ']' at the end of a table declaration (at line 3, column 6)",
    ),
    (
        'name = "x"\nmodel = "gan"\n[data]\nprepared = "/nonexistent/set"\n',
        "data.prepared: /nonexistent/set: no prepared set here",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_SPECS)
def test_bad_specs_give_one_line_errors_naming_file_and_field(tmp_path, prepared32, body, message):
    text = body.format(prepared=prepared32) if body.startswith("name") else _minimal(prepared32, "wgan", body)
    path = _spec(tmp_path, text)
    with pytest.raises(HeartjobsError) as info:
        load_spec(path)
    lines = str(info.value).splitlines()
    assert any(line.startswith(f"{path}: ") and message in line for line in lines), lines


def test_image_size_must_be_a_power_of_two(tmp_path, phantom_dir):
    odd = tmp_path / "p24"
    prepare(phantom_dir, odd, PrepareParams(size=24), workers=1)
    with pytest.raises(HeartjobsError, match=r"data.prepared: image size 24 must be a power of two >= 16"):
        load_spec(_spec(tmp_path, _minimal(odd, "gan")))


def test_validate_reports_every_bad_spec_and_show_prints_the_resolved_spec(tmp_path, prepared32):
    # measurable here too (validate also checks that): untrained weights, no download needed
    good = _spec(tmp_path, _minimal(prepared32, "wgan", "latent_dim = 200\n[eval]\nweights = 'untrained'"), "good.toml")
    bad1 = _spec(tmp_path, _minimal(prepared32, "wgan", "lr = -1"), "bad1.toml")
    bad2 = _spec(tmp_path, "name = 3\n", "bad2.toml")
    result = run_cli("validate", good, bad1, bad2)
    assert result.returncode == 2
    assert f"ok: {good}" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert any(str(bad1) in e and "train.lr" in e for e in errors)
    assert any(str(bad2) in e and "name" in e for e in errors)
    assert errors[-1] == "error: 2 of 3 specs are invalid"
    assert "Traceback" not in result.stderr

    shown = run_cli("show", good)
    assert shown.returncode == 0, shown.stderr
    resolved = json.loads(shown.stdout)
    assert resolved["train"]["latent_dim"] == 200 and resolved["train"]["n_critic"] == 5
    assert resolved["spec_hash"] == load_spec(good).spec_hash
