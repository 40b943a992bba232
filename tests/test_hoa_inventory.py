"""The Human Organ Atlas' hearts as heartjobs pins them (heartjobs.data.hoa.inventory, hearts.json): the pin holds
hoa-tools 2.0.0's heart records and the thesis' heart as published, a source puts a dataset where the bucket
or a mirror keeps it, and scripts/pin_hoa_inventory.py makes the pin from a wheel. Then the commands on top:
`data datasets`, the argument checks of `data fetch` (one line, exit 2, nothing written), a fetched set's
provenance in `data info` and in a run's env.json. (Reading and fetching volumes: tests of volume and fetch.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from heartjobs.data.hoa.inventory import (
    PUBLIC_SOURCE,
    SOURCE_ENV,
    THESIS_DATASET,
    dataset_url,
    datasets,
    find,
    parse_gcs_url,
    pin,
    resolve_source,
)
from heartjobs.errors import HeartjobsError

from .conftest import cli, one_line_error, write_spec

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "ucl-hip-ct-35a68e99feaae8932b1d44da0358940b"
THESIS_PATH = "LADAF-2020-27/heart/25.08um_complete-organ_bm05/"
THESIS_DOI = "10.15151/ESRF-DC-572189991"
# counted in hoa-tools 2.0.0's hoa_tools/data/metadata/metadata/*.json: 124 records of sample.organ "heart",
# 33 of them with voi "complete-organ" (three more whole-heart scans have voi "overview")
HEART_RECORDS, COMPLETE_HEARTS = 124, 33


def test_the_pin_holds_every_heart_record_of_hoa_tools_2_0_0_with_its_source_and_licence():
    header = pin()
    assert header["source"] == "hoa-tools 2.0.0 (BSD-3) bundled metadata" and header["licence"] == "CC BY 4.0"
    assert header["count"] == HEART_RECORDS and header["pinned"]
    assert len(datasets()) == len(datasets("heart")) == HEART_RECORDS
    complete = datasets("heart", complete=True)
    assert len(complete) == COMPLETE_HEARTS and all(d.voi == "complete-organ" for d in complete)
    assert len(datasets(complete=False)) == HEART_RECORDS - COMPLETE_HEARTS
    names = [d.name for d in datasets()]
    assert names == sorted(names) and len(set(names)) == len(names)
    for d in datasets():  # every record is one heartjobs can read: a format, the bucket, a folder
        assert d.store_format in ("n5", "zarr") and d.bucket == BUCKET and d.path.endswith("/")
        assert len(d.shape_xyz) == 3 and d.voxel_size_um > 0 and d.doi.startswith("10.15151/ESRF-DC-")


def test_the_thesis_heart_is_the_published_record():
    heart = find(THESIS_DATASET)
    assert heart.shape_xyz == (5792, 5792, 6613) and heart.voxel_size_um == 25.08
    assert (heart.store_format, heart.bucket, heart.path) == ("n5", BUCKET, THESIS_PATH)
    assert heart.organ == "heart" and heart.complete and heart.doi == THESIS_DOI
    assert heart.donor == {"id": "LADAF-2020-27", "age": 94, "sex": "F"}
    assert heart.scan["beamline"] == "BM05" and heart.scan["date"] == "2020-07-11"
    assert heart.citation.startswith("The Human Organ Atlas Collaboration, Claire Walsh, ")
    assert heart.citation.endswith(
        "Overview at 25.08um of the heart of donor LADAF-2020-27, scanned at ESRF on beamline BM05."
    )
    provenance = heart.provenance()
    assert provenance["name"] == THESIS_DATASET and provenance["doi"] == THESIS_DOI
    assert provenance["licence"] == "CC BY 4.0" and provenance["citation"] == heart.citation
    assert (provenance["organ"], provenance["voxel_size_um"], provenance["store_format"]) == ("heart", 25.08, "n5")
    assert provenance["donor"]["id"] == "LADAF-2020-27"
    # the held-out candidates the issue names: the closest match, and an OME-Zarr one
    assert find("LADAF-2021-17_heart_complete-organ_25.08um_bm05").store_format == "n5"
    assert find("S-20-28_heart_complete-organ_25.27um_bm05").store_format == "zarr"


def test_a_record_url_parses_into_format_bucket_and_folder_and_another_form_is_refused():
    url = f"zarr://gs://{BUCKET}/S-20-28/heart/25.27um_complete-organ_bm05.ome.zarr/"
    assert parse_gcs_url(url) == ("zarr", BUCKET, "S-20-28/heart/25.27um_complete-organ_bm05.ome.zarr/")
    assert parse_gcs_url(f"n5://gs://{BUCKET}/{THESIS_PATH}") == ("n5", BUCKET, THESIS_PATH)
    for bad in (f"gs://{BUCKET}/{THESIS_PATH}", f"n5://gs://{BUCKET}/", f"tiff://gs://{BUCKET}/{THESIS_PATH}"):
        with pytest.raises(ValueError, match="gcs_url"):
            parse_gcs_url(bad)


def test_the_public_source_names_the_bucket_and_a_mirror_keeps_the_bucket_paths_below_its_root(tmp_path):
    heart = find(THESIS_DATASET)
    public = f"https://storage.googleapis.com/{BUCKET}/{THESIS_PATH}"
    assert dataset_url(heart, resolve_source(None)) == public  # the default
    assert dataset_url(heart, resolve_source("https://storage.googleapis.com/")) == public
    mirror = "http://127.0.0.1:8123/hoa/"
    assert resolve_source(mirror) == "http://127.0.0.1:8123/hoa"
    assert dataset_url(heart, resolve_source(mirror)) == f"http://127.0.0.1:8123/hoa/{THESIS_PATH}"
    # the bucket's own URL is a mirror like any other: its paths are the bucket's
    assert dataset_url(heart, resolve_source(f"{PUBLIC_SOURCE}/{BUCKET}")) == public
    assert dataset_url(heart, resolve_source(str(tmp_path))) == f"{tmp_path}/{THESIS_PATH}"
    assert dataset_url(heart, resolve_source(f"file://{tmp_path}/")) == f"file://{tmp_path}/{THESIS_PATH}"


def test_a_relative_folder_becomes_absolute_and_the_environment_names_the_source(tmp_path, monkeypatch):
    (tmp_path / "mirror").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_source("mirror") == str(tmp_path / "mirror")
    monkeypatch.setenv(SOURCE_ENV, "http://mirror.example:8080/")
    assert resolve_source(None) == "http://mirror.example:8080"
    assert resolve_source("mirror") == str(tmp_path / "mirror")  # --source before the environment
    monkeypatch.setenv(SOURCE_ENV, "")
    assert resolve_source(None) == PUBLIC_SOURCE


@pytest.mark.parametrize(
    "source, says",
    [
        ("gs://bucket/path", "not a source heartjobs reads"),
        ("s3://bucket", "not a source heartjobs reads"),
        ("https:///no-host", "no host"),
        ("file://otherhost/data", "file:///PATH"),
        ("/nowhere/hoa-mirror", "no such folder"),
        ("file:///nowhere/hoa-mirror", "no such folder"),
    ],
)
def test_a_source_heartjobs_cannot_read_is_refused_by_name(source, says):
    with pytest.raises(HeartjobsError, match=says) as refused:
        resolve_source(source)
    assert str(refused.value).startswith(f"--source {source!r}: ") and "\n" not in str(refused.value)


def test_an_unknown_dataset_is_one_line_with_the_closest_name():
    with pytest.raises(HeartjobsError) as refused:
        find("LADAF-2020-27_heart_complete-organ_25.08um")
    assert f"(did you mean {THESIS_DATASET!r}?)" in str(refused.value)
    assert "`heartjobs data datasets --all`" in str(refused.value)


def _fake_wheel(path: Path) -> tuple[Path, dict]:
    """A hoa-tools wheel in miniature: its METADATA and two records, a heart and a lung."""
    heart = json.loads((ROOT / "heartjobs" / "data" / "hoa" / "hearts.json").read_text())["records"][0]
    full = {
        **heart,
        "sample": {**heart["sample"], "fixation_medium": "formalin"},
        "donor": {**heart["donor"], "medical_history": "not pinned"},
        "scan": {**heart["scan"], "energy": 93.0},
        "proposal": {"proposal_number": "md1252"},
        "registration": None,
        "citation": {**heart["citation"], "contributors": []},
        "metadata_version": "1.1",
    }
    lung = {**full, "name": "lung-record", "sample": {**full["sample"], "organ": "lung"}}
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("hoa_tools-9.9.9.dist-info/METADATA", "Metadata-Version: 2.4\nName: hoa-tools\nVersion: 9.9.9\n")
        for record in (full, lung):
            wheel.writestr(f"hoa_tools/data/metadata/metadata/{record['name']}.json", json.dumps(record))
    return path, heart


def test_the_pin_script_trims_a_wheel_s_heart_records_and_says_where_they_come_from(tmp_path):
    wheel, heart = _fake_wheel(tmp_path / "hoa_tools-9.9.9-py3-none-any.whl")
    script = [sys.executable, str(ROOT / "scripts" / "pin_hoa_inventory.py"), str(wheel), "--pinned", "2026-01-02"]
    made = subprocess.run([*script, "--out", str(tmp_path / "hearts.json")], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    pinned = json.loads((tmp_path / "hearts.json").read_text())
    assert pinned["source"] == "hoa-tools 9.9.9 (BSD-3) bundled metadata" and pinned["pinned"] == "2026-01-02"
    assert pinned["count"] == 1 and pinned["records"] == [heart]  # the lung left out, the rest trimmed away
    again = subprocess.run([*script, "--out", str(tmp_path / "again.json")], capture_output=True, text=True)
    assert again.returncode == 0 and (tmp_path / "again.json").read_bytes() == (tmp_path / "hearts.json").read_bytes()


# --- the commands ---


def test_data_datasets_lists_the_complete_hearts_and_all_lists_every_record():
    listed = cli("data", "datasets")
    assert listed.returncode == 0, listed.stderr
    title, *rows = listed.stdout.splitlines()  # not a terminal: a title and tab-separated rows
    assert title.startswith(f"{COMPLETE_HEARTS} complete hearts ") and "CC BY 4.0" in title
    assert len(rows) == COMPLETE_HEARTS
    thesis = next(row.split("\t") for row in rows if row.startswith(THESIS_DATASET + "\t"))
    assert thesis == [THESIS_DATASET, "25.08", "5792 x 5792 x 6613", "n5", "LADAF-2020-27 94 F", THESIS_DOI]
    every = cli("data", "datasets", "--organ", "heart", "--all")
    assert every.returncode == 0 and len(every.stdout.splitlines()) == 1 + HEART_RECORDS


def test_data_datasets_of_an_organ_not_pinned_is_one_line():
    one_line_error(cli("data", "datasets", "--organ", "lung"), "organ 'lung'", "only the Human Organ Atlas' heart")


@pytest.mark.parametrize(
    "options, says",
    [
        (["--size", "4"], "fetch: --size must be >= 8, got 4"),
        (["--every", "0"], "fetch: --every must be >= 1, got 0"),
        (["--level", "-1"], "fetch: --level must be >= 0, got -1"),
        (["--slices", "5:3"], "fetch: --slices: expected A:B with 0 <= A < B"),
        (["--slices=-1:3"], "fetch: --slices: expected A:B"),
        (["--slices", "7"], "fetch: --slices: expected A:B"),
        (["--slices", "a:b"], "fetch: --slices: expected A:B"),
        (["--source", "gs://somewhere"], "--source 'gs://somewhere': not a source heartjobs reads"),
        (["--source", "/nowhere/hoa"], "--source '/nowhere/hoa': no such folder"),
    ],
)
def test_data_fetch_refuses_bad_options_in_one_line_and_writes_nothing(tmp_path, options, says):
    out = tmp_path / "prepared" / "heart"
    one_line_error(cli("data", "fetch", THESIS_DATASET, "--out", out, *options), says)
    assert not (tmp_path / "prepared").exists()


def test_data_fetch_refuses_an_unknown_dataset_a_missing_out_and_a_bad_environment_source(tmp_path):
    out = tmp_path / "heart"
    one_line_error(cli("data", "fetch", "LADAF-2020-27_heart", "--out", out), "dataset 'LADAF-2020-27_heart'")
    one_line_error(cli("data", "fetch", THESIS_DATASET), "fetch: --out: required")
    missing = cli("data", "fetch", THESIS_DATASET, "--out", out, env={SOURCE_ENV: str(tmp_path / "no-mirror")})
    one_line_error(missing, f"{SOURCE_ENV} '{tmp_path / 'no-mirror'}': no such folder")
    assert sorted(tmp_path.iterdir()) == []


def _fetched_copy(prepared: Path, folder: Path) -> Path:
    """The phantom set as if `data fetch` had made it: its manifest with the provenance fetch records."""
    copy = shutil.copytree(prepared, folder / "fetched")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["provenance"] = {
        **find(THESIS_DATASET).provenance(),
        "level": 1,
        "level_shape": [3307, 2896, 2896],
        "block_size": [128, 128, 128],
        "source": PUBLIC_SOURCE,
        "slices": [[2 * i, 2 * i + 2] for i in range(manifest["count"])],
    }
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_data_info_shows_where_a_fetched_set_came_from_and_how_to_cite_it(tmp_path, prepared32):
    info = cli("data", "info", _fetched_copy(prepared32, tmp_path), env={"COLUMNS": "400"})
    assert info.returncode == 0, info.stderr
    lines: dict[str, str] = {}
    key = ""
    for line in info.stdout.splitlines():  # a cell wider than the console goes on in the rows below it
        if line.count("│") == 3:
            name, value = (cell.strip() for cell in line.split("│")[1:3])
            key = name or key
            lines[key] = f"{lines[key]} {value}" if not name else value
    assert lines["dataset"] == THESIS_DATASET
    assert lines["sample"] == "heart (complete-organ), 25.08 um; donor LADAF-2020-27 94 F; scanned 2020-07-11 on BM05"
    assert lines["doi"] == f"https://doi.org/{THESIS_DOI}" and lines["licence"] == "CC BY 4.0"
    assert lines["citation"] == find(THESIS_DATASET).citation
    assert lines["level"] == "1 of the n5 pyramid, shape 3307 x 2896 x 2896, blocks 128 x 128 x 128"
    assert lines["fetched from"] == PUBLIC_SOURCE
    plain = cli("data", "info", prepared32, env={"COLUMNS": "400"})  # prepared from slices: no such rows
    assert plain.returncode == 0 and "dataset" not in plain.stdout and "licence" not in plain.stdout


def test_a_run_records_the_data_it_trained_on_in_env_json_and_the_report_cites_a_fetched_set(tmp_path, prepared32):
    from heartjobs.runner.lifecycle import run_job

    fetched = _fetched_copy(prepared32, tmp_path)
    tiny = {"epochs": 1, "batch_size": 4, "sample_every": 1, "checkpoint_every": 1, "device": "cpu"}
    run = run_job(write_spec(tmp_path, "on_the_atlas", "gan", fetched, **tiny))
    data = json.loads((run / "env.json").read_text())["data"]
    manifest = json.loads((fetched / "manifest.json").read_text())
    assert data == {
        "prepared": str(fetched),
        "content_hash": manifest["content_hash"],
        "provenance": manifest["provenance"],
        "phantom": manifest["phantom"],  # the set under the copy was prepared from the session's phantom
        "image_size": 32,
    }
    plain = run_job(write_spec(tmp_path, "on_slices", "gan", prepared32, **tiny))
    data = json.loads((plain / "env.json").read_text())["data"]
    assert data["prepared"] == str(prepared32) and data["provenance"] is None and data["content_hash"]

    # and the report says what each set is, and how to cite the Atlas' heart
    assert cli("report", tmp_path / "artifacts").returncode == 0
    sources = {
        s["prepared"]: s for s in json.loads((tmp_path / "artifacts" / "summary.json").read_text())["prepared_sets"]
    }
    atlas = sources[str(fetched)]
    assert atlas["jobs"] == ["on_the_atlas"] and atlas["dataset"]["doi"] == THESIS_DOI
    assert sources[str(prepared32)]["jobs"] == ["on_slices"] and "dataset" not in sources[str(prepared32)]
    md = (tmp_path / "artifacts" / "summary.md").read_text()
    assert "## Data" in md and f"doi:{THESIS_DOI}, licence CC BY 4.0" in md
    page = (tmp_path / "artifacts" / "report.html").read_text()
    assert "<h2>Data</h2>" in page and f"doi:{THESIS_DOI}, licence CC BY 4.0" in page


def test_data_info_escapes_control_characters_a_manifest_s_provenance_holds(tmp_path, prepared32):
    fetched = _fetched_copy(prepared32, tmp_path)
    manifest = json.loads((fetched / "manifest.json").read_text())
    manifest["provenance"]["citation"] = "\x1b[2J\x1b[31mcleared\x07"
    (fetched / "manifest.json").write_text(json.dumps(manifest))
    info = cli("data", "info", fetched, env={"COLUMNS": "400"})
    assert info.returncode == 0, info.stderr
    assert "\x1b" not in info.stdout and "\x07" not in info.stdout and "\\x1b[2J\\x1b[31mcleared" in info.stdout
