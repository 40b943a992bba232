"""Job specs: strict validation with one-line errors, thesis defaults, the spec hash, validate/show."""

from __future__ import annotations

import json

import pytest

from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.errors import HeartjobsError
from heartjobs.spec.loading import load_spec
from heartjobs.spec.schema import ResolvedSpec

from .conftest import cli


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
    from heartjobs.spec.identity import configuration_differences
    from heartjobs.spec.schema import ResolvedSpec

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


# Spec hashes computed by the code before [architecture], augment and gp_lambda existed (commit 744d290), with
# the prepared set's facts fixed (256 px, 1 channel, 3307 images, content hash 0...0): a spec that doesn't use
# them must keep its identity, so its runs still resume and count as finished.
PINNED = {
    'name = "j"\nmodel = "gan"\n[data]\nprepared = "p"\n': "0c1d0794574c4334",
    'name = "j"\nmodel = "wgan"\n[data]\nprepared = "p"\n': "5e05eb2457552be6",
    'name = "j"\nmodel = "dcgan"\n[data]\nprepared = "p"\n': "e9234cb8e4676302",
    # jobs/gan_default.toml and jobs/wgan_lr0.0001.toml (the thesis protocol)
    'name = "gan_default"\nmodel = "gan"\n[data]\nprepared = "p"\n[train]\ntf32 = "convolutions"\n'
    '[eval]\nnormalize = "per_image_minmax"\n': "39737670ed541d05",
    'name = "wgan_lr0.0001"\nmodel = "wgan"\n[data]\nprepared = "p"\n[train]\ntf32 = "convolutions"\n'
    'lr = 0.0001\n[eval]\nnormalize = "per_image_minmax"\n': "fca159dada954855",
    'name = "smoke_dcgan"\nmodel = "dcgan"\n[data]\nprepared = "p"\n[train]\nepochs = 3\nbatch_size = 16\n'
    'batchnorm_eps = 1e-5\n[eval]\nweights = "untrained"\ndims = 192\nfrd_n = 100\n': "e08b03876b68bfcb",
}


@pytest.fixture
def fixed_data(monkeypatch):
    """Every prepared set resolves to the same facts, whatever its path (for hashes pinned across machines)."""
    from types import SimpleNamespace

    from heartjobs.store.prepared import PreparedSet

    facts = SimpleNamespace(size=256, channels=1, count=3307, content_hash="0" * 64)
    monkeypatch.setattr(PreparedSet, "open", staticmethod(lambda path: facts))


@pytest.mark.parametrize("text", list(PINNED))
def test_a_spec_without_the_new_knobs_hashes_as_before_them(tmp_path, fixed_data, text):
    spec = load_spec(_spec(tmp_path, text))
    assert spec.spec_hash == PINNED[text]
    # the knobs spelled out at their defaults are the same configuration
    if spec.model in ("gan", "wgan"):
        again = text + "[architecture]\nhidden = [128, 256, 512, 1024]\n"
    else:
        again = text + "[architecture]\nwidth = 128\n"
    again = again.replace("[data]", "[train]\naugment = 'none'\n[data]") if "[train]" not in text else again
    assert load_spec(_spec(tmp_path, again, "again.toml")).spec_hash == PINNED[text]


def test_the_new_models_resolve_to_their_papers_defaults(tmp_path, prepared32):
    gp = load_spec(_spec(tmp_path, _minimal(prepared32, "wgan_gp"))).train
    assert (gp.optimizer, gp.lr, gp.betas, gp.n_critic, gp.gp_lambda, gp.clip_value) == (
        "adam",
        1e-4,
        (0.0, 0.9),
        5,
        10.0,
        None,
    )
    sn = load_spec(_spec(tmp_path, _minimal(prepared32, "sngan"))).train
    assert (sn.optimizer, sn.lr, sn.betas, sn.n_critic, sn.gp_lambda) == ("adam", 2e-4, (0.0, 0.9), None, None)
    assert sn.augment == gp.augment == "none" and sn.batchnorm_eps == 0.8


def test_architecture_knobs_resolve_and_count_in_the_hash(tmp_path, prepared32):
    base = load_spec(_spec(tmp_path, _minimal(prepared32, "gan")))
    assert (base.architecture.hidden, base.architecture.width) == ((128, 256, 512, 1024), None)
    narrow = load_spec(_spec(tmp_path, _minimal(prepared32, "gan") + "[architecture]\nhidden = [64, 128]\n", "n.toml"))
    assert narrow.architecture.hidden == (64, 128) and narrow.spec_hash != base.spec_hash
    deeper = load_spec(
        _spec(tmp_path, _minimal(prepared32, "gan") + "[architecture]\nhidden = [64, 128, 256]\n", "d.toml")
    )
    assert len({base.spec_hash, narrow.spec_hash, deeper.spec_hash}) == 3
    conv = load_spec(_spec(tmp_path, _minimal(prepared32, "dcgan")))
    assert (conv.architecture.hidden, conv.architecture.width) == (None, 128)
    wide = load_spec(_spec(tmp_path, _minimal(prepared32, "dcgan") + "[architecture]\nwidth = 64\n", "w.toml"))
    assert wide.architecture.width == 64 and wide.spec_hash != conv.spec_hash
    from heartjobs.spec.identity import configuration_differences

    assert configuration_differences(base.model_dump(mode="json"), narrow) == [
        "architecture.hidden: (none) -> [64, 128]"
    ]
    augmented = load_spec(_spec(tmp_path, _minimal(prepared32, "gan", "augment = 'translation, cutout'"), "a.toml"))
    assert augmented.train.augment == "translation,cutout" and augmented.spec_hash != base.spec_hash
    assert configuration_differences(base.model_dump(mode="json"), augmented) == [
        "train.augment: (none) -> translation,cutout"
    ]


def test_a_run_recorded_before_the_new_knobs_keeps_its_identity(tmp_path, prepared32):
    from heartjobs.spec.identity import configuration_differences
    from heartjobs.spec.schema import ResolvedSpec

    for model in ("wgan", "dcgan"):
        spec = load_spec(_spec(tmp_path, _minimal(prepared32, model)))
        recorded = spec.model_dump(mode="json")
        del recorded["architecture"], recorded["train"]["augment"], recorded["train"]["gp_lambda"]
        del recorded["train"]["phase_conv"]
        assert ResolvedSpec.model_validate(recorded).spec_hash == spec.spec_hash
        assert configuration_differences(recorded, spec) == []


def test_model_as_a_table_says_where_the_knobs_go(tmp_path, prepared32):
    path = _spec(tmp_path, _minimal(prepared32, "gan") + "[model]\nhidden = [64]\n")
    with pytest.raises(HeartjobsError, match=r"the networks' knobs go in \[architecture\]"):
        load_spec(path)


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
    (
        "betas = [0.5, 0.9]",
        "train.betas: applies to gan, dcgan, wgan_gp, sngan, stylegan2, not wgan (it trains with RMSprop)",
    ),
    (
        'name = "x"\nmodel = "gan"\n[data]\nprepared = "{prepared}"\n[train]\nn_critic = 2\n',
        "train.n_critic: applies to wgan, wgan_gp, not gan",
    ),
    (
        'name = "x"\nmodel = "gann"\n[data]\nprepared = "{prepared}"\n',
        "model: Input should be 'gan', 'wgan' or 'dcgan'",
    ),
    ('name = "x"\nmodel = "gan"\n[dta]\nprepared = "{prepared}"\n', "dta: unknown key (did you mean 'data'?)"),
    # beyond the thesis: the new keys and [architecture]
    (
        "augment = 'translation,flip'",
        "train.augment: unknown augmentation 'flip'; use none, ada or translation, cutout, brightness, contrast",
    ),
    ("augment = 'cutuot'", "train.augment: unknown augmentation 'cutuot' (did you mean 'cutout'?)"),
    ("augment = 'none,cutout'", 'train.augment: "none" stands alone'),
    ("augment = 'cutout,cutout'", "train.augment: name each augmentation once"),
    ("gp_lambda = 10", "train.gp_lambda: applies to wgan_gp, not wgan"),
    (
        "phase_conv = true",
        "train.phase_conv: applies to dcgan (nearest x2 upsampling then a 3x3 convolution), not wgan",
    ),
    (
        'name = "x"\nmodel = "sngan"\n[data]\nprepared = "{prepared}"\n[train]\nphase_conv = true\n',
        "train.phase_conv: applies to dcgan (nearest x2 upsampling then a 3x3 convolution), not sngan",
    ),
    ("phase_conv = 1", "train.phase_conv: Input should be a valid boolean"),
    (
        'name = "x"\nmodel = "sngan2"\n[data]\nprepared = "{prepared}"\n',
        "model: Input should be 'gan', 'wgan' or 'dcgan' (the thesis' models), or 'wgan_gp', 'sngan' or "
        "'stylegan2' (beyond them) (did you mean 'sngan'?)",
    ),
    ("[architecture]\nhidden = []", "architecture.hidden: Tuple should have at least 1 item"),
    ("[architecture]\nhidden = [64, 0]", "architecture.hidden.1: Input should be greater than 0"),
    ("[architecture]\nwidth = 64", "architecture.width: applies to dcgan, sngan, not wgan"),
    ("[architecture]\nhiden = [64]", "architecture.hiden: unknown key (did you mean 'hidden'?)"),
    (
        'name = "x"\nmodel = "dcgan"\n[data]\nprepared = "{prepared}"\n[architecture]\nwidth = 12\n',
        "architecture.width: Input should be a multiple of 8",
    ),
    (
        'name = "x"\nmodel = "sngan"\n[data]\nprepared = "{prepared}"\n[architecture]\nhidden = [64]\n',
        "architecture.hidden: applies to gan, wgan, wgan_gp, not sngan",
    ),
    (
        'name = "x"\nmodel = "sngan"\n[data]\nprepared = "{prepared}"\n[train]\nn_critic = 2\n',
        "train.n_critic: applies to wgan, wgan_gp, not sngan",
    ),
    (
        'name = "x"\nmodel = "wgan_gp"\n[data]\nprepared = "{prepared}"\n[train]\nclip_value = 0.01\n',
        "train.clip_value: applies to wgan, not wgan_gp",
    ),
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
    result = cli("validate", good, bad1, bad2)
    assert result.returncode == 2
    assert f"ok: {good}" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert any(str(bad1) in e and "train.lr" in e for e in errors)
    assert any(str(bad2) in e and "name" in e for e in errors)
    assert errors[-1] == "error: 2 of 3 specs are invalid"
    assert "Traceback" not in result.stderr

    shown = cli("show", good)
    assert shown.returncode == 0, shown.stderr
    resolved = json.loads(shown.stdout)
    assert resolved["train"]["latent_dim"] == 200 and resolved["train"]["n_critic"] == 5
    assert resolved["spec_hash"] == load_spec(good).spec_hash


def test_show_prints_the_networks_parameter_counts_at_the_sets_size(tmp_path, prepared32):
    from heartjobs.models import build_models, count_parameters

    for model, architecture, counted in (
        ("wgan", "", ("wgan", {})),
        ("wgan_gp", "[architecture]\nhidden = [64, 128]\n", ("wgan_gp", {"hidden": (64, 128)})),
        ("sngan", "[architecture]\nwidth = 32\n", ("sngan", {"width": 32})),
    ):
        spec = tmp_path / f"{model}.toml"
        spec.write_text(f'name = "{model}"\nmodel = "{model}"\n[data]\nprepared = "{prepared32}"\n{architecture}')
        shown = cli("show", spec)
        assert shown.returncode == 0, shown.stderr
        name, knobs = counted
        generator, discriminator = build_models(name, 32, 1, 100, **knobs)
        expected = {"generator": count_parameters(generator), "discriminator": count_parameters(discriminator)}
        assert json.loads(shown.stdout)["parameters"] == expected, model


def test_eval_measure_keeps_its_first_name_fid_and_the_hash_of_specs_that_used_it(tmp_path, prepared32):
    # [eval] measure was called fid: both spellings are the same spec (and hash), and one spec says it once
    specs = {}
    for key in ("measure", "fid"):
        path = tmp_path / f"{key}.toml"
        path.write_text(f'name = "x"\nmodel = "gan"\n[data]\nprepared = "{prepared32}"\n[eval]\n{key} = false\n')
        specs[key] = load_spec(path)
    assert specs["measure"] == specs["fid"] and not specs["fid"].eval.measure
    assert specs["fid"].hash_payload()["eval"]["fid"] is False and "measure" not in specs["fid"].hash_payload()["eval"]
    # a resolved spec recorded before the rename (spec.json of an older run) reads back to the same hash
    recorded = specs["measure"].model_dump(mode="json")
    recorded["eval"]["fid"] = recorded["eval"].pop("measure")
    assert ResolvedSpec.model_validate(recorded).spec_hash == specs["measure"].spec_hash
    both = tmp_path / "both.toml"
    both.write_text(f'name = "x"\nmodel = "gan"\n[data]\nprepared = "{prepared32}"\n[eval]\nfid = false\nmeasure = 1\n')
    with pytest.raises(HeartjobsError, match=r"both.toml: eval: say `measure` \(or its first name, `fid`\), not both"):
        load_spec(both)


def test_every_committed_job_and_variant_keeps_the_spec_hash_it_had_before_the_model_registry():
    # the hashes e34f3fa computed (tests/fixtures/spec_hashes.json): a run folder recorded then resumes and
    # is "already finished" under this code only if its configuration hashes the same
    from pathlib import Path

    from heartjobs.spec.loading import resolve_with
    from heartjobs.spec.schema import JobSpec, ResolvedData

    recorded = json.loads((Path(__file__).parent / "fixtures" / "spec_hashes.json").read_text())
    assert len(recorded["specs"]) > 300
    changed = []
    for entry in recorded["specs"]:
        spec = JobSpec.model_validate(entry["spec"])
        facts = {key: recorded[key] for key in ("content_hash", "count", "channels")}
        data = ResolvedData(prepared=spec.data.prepared, size=entry["size"], **facts)
        if resolve_with(spec, data, Path(entry["label"])).spec_hash != entry["spec_hash"]:
            changed.append(entry["label"])
    assert not changed, changed
