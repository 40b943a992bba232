"""Files and folders heartjobs writes where the user did not ask it to (issue 28, items 16 and 17): `data
phantom` replaces a file beside its folder (the contact sheet's place) only with --force, and a folder that
is the current one or holds it is refused up front, for `data phantom` and `data prepare` alike; an empty
HOME (or XDG_CACHE_HOME, TORCH_HOME) is not taken for a folder, so nothing lands in /.cache or under the
current folder: a one-line refusal before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from heartjobs.errors import HeartjobsError
from heartjobs.evaluation import cache
from heartjobs.evaluation.weights import hub_path

from .conftest import cli, one_line_error, write_spec

TINY = ("--slices", "2", "--size", "32", "--workers", "1")


def test_a_file_where_the_contact_sheet_goes_is_replaced_only_with_force(tmp_path):
    sheet = tmp_path / "ph_contact_sheet.png"
    sheet.write_bytes(b"the user's own picture")
    refused = cli("data", "phantom", "--out", "ph", *TINY, cwd=tmp_path)
    one_line_error(refused, "ph_contact_sheet.png: exists", "--force")
    assert sheet.read_bytes() == b"the user's own picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ph_contact_sheet.png"]  # no slices were made

    forced = cli("data", "phantom", "--out", "ph", *TINY, "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert sheet.read_bytes().startswith(b"\x89PNG") and len(list((tmp_path / "ph").glob("*.jp2"))) == 2


def test_a_folder_where_the_contact_sheet_goes_is_refused_even_with_force(tmp_path):
    (tmp_path / "ph_contact_sheet.png").mkdir()
    result = cli("data", "phantom", "--out", "ph", *TINY, "--force", cwd=tmp_path)
    one_line_error(result, "ph_contact_sheet.png: a folder where the phantom's contact sheet goes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ph_contact_sheet.png"]


@pytest.mark.parametrize("out", [".", ".."])
def test_the_current_folder_or_one_above_it_is_refused_as_out_before_any_work(tmp_path, phantom_dir, out):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    for command in (["phantom", "--out", out, *TINY, "--force"], ["prepare", phantom_dir, "--out", out, "--force"]):
        result = cli("data", *command, cwd=work)
        one_line_error(result, f"{out}: the current folder, or a folder holding it, can't be replaced")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # no staging folder, no contact sheet
        assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]


def test_an_empty_home_gives_the_cache_no_place_and_is_refused_before_a_run(tmp_path, prepared32, monkeypatch):
    monkeypatch.delenv("HEARTJOBS_CACHE")
    monkeypatch.setenv("HOME", "")
    with pytest.raises(HeartjobsError, match="HOME is set but empty, so heartjobs' cache has no place; set HOME or"):
        cache.cache_dir()
    existed = Path("/.cache/heartjobs").exists()
    spec = write_spec(tmp_path, "measured", "gan", prepared32, eval={"weights": "untrained"}, epochs=1, device="cpu")
    one_line_error(cli("run", spec, cwd=tmp_path), "HOME is set but empty", "HEARTJOBS_CACHE")
    validated = cli("validate", spec, cwd=tmp_path)  # a line per bad spec, then how many were bad
    assert validated.returncode == 2 and validated.stderr.startswith("error: HOME is set but empty")
    assert not (tmp_path / "artifacts").exists()  # refused before a version was claimed
    assert Path("/.cache/heartjobs").exists() == existed

    monkeypatch.setenv("HEARTJOBS_CACHE", str(tmp_path / "cache"))  # the way out the error names
    assert cache.cache_dir() == tmp_path / "cache"
    monkeypatch.setenv("HOME", str(tmp_path))  # and unset, or set: as before
    monkeypatch.delenv("HEARTJOBS_CACHE")
    assert cache.cache_dir() == tmp_path / ".cache" / "heartjobs"


@pytest.mark.parametrize("variable", ["HOME", "XDG_CACHE_HOME", "TORCH_HOME"])
def test_an_empty_variable_torch_hub_would_take_its_folder_from_is_refused(tmp_path, monkeypatch, variable):
    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub_path().is_relative_to(tmp_path / ".cache" / "torch" / "hub")
    monkeypatch.setenv(variable, "")
    with pytest.raises(HeartjobsError, match=f"{variable} is set but empty, so torch.hub's folder"):
        hub_path()
