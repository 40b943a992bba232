"""The report against run folders, spec files and names made elsewhere (issue 28, items 3, 4, 8 and 15):
report.html holds no element or attribute that a file name, seed or folder name put there; summary.csv's
text cells cannot become spreadsheet formulas and summary.md's cannot break its table or carry HTML; a
foreign or partial run folder is named in one warning line per file while the rest of the report is
written (exit 0); and job folders never collide with the report's own files. Run folders are built by
hand with tests/test_report.py's helpers, as those tests build them."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from heartjobs.report.summary import HEADER, write_report

from . import test_report
from .conftest import cli, one_line_error, write_spec
from .test_report import _run

specs = test_report.specs  # the fixture that makes resolved spec records, as tests/test_report.py's tests use

HOSTILE_GRID = "epoch_9999<img src=x onerror=alert(1)>.png"


class _Elements(HTMLParser):
    """Every (tag, attribute) pair of a page, the attributes' values, and its text."""

    def __init__(self):
        super().__init__()
        self.pairs: set[tuple[str, str | None]] = set()
        self.attributes: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.pairs.add((tag, None))
        for name, value in attrs:
            self.pairs.add((tag, name))
            self.attributes.append((tag, name, value))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def _parsed(page: Path) -> _Elements:
    parser = _Elements()
    parser.feed(page.read_text())
    parser.close()
    return parser


def _study(artifacts: Path, specs, *, job: str, grid: str, lr: object) -> None:
    """Two measured runs of one model (one with an odd lr, which names its configuration), each with a
    sample grid named `grid`; the first job's folder is named `job`."""
    record = specs("gan_default", "gan")
    record["spec"]["name"] = job  # a folder name that no spec of ours would make
    odd = specs("gan_odd", "gan")
    odd["spec"]["train"]["lr"] = lr
    for made in (_run(artifacts, record, fids=[250.0] * 3), _run(artifacts, odd, fids=[240.0] * 3)):
        (made / "samples" / "epoch_0002.png").rename(made / "samples" / grid)


def test_hostile_names_add_no_element_or_attribute_to_report_html(tmp_path, specs):
    benign = tmp_path / "benign"
    _study(benign, specs, job="gan_default", grid="epoch_0002.png", lr=0.0001)
    hostile = tmp_path / 'art<b onmouseover="alert(1)">'
    _study(hostile, specs, job='gan"><svg onload=alert(1)>', grid=HOSTILE_GRID, lr="<i onclick=alert(1)>")
    seeded = specs("gan_seeded", "gan")
    seeded["spec"]["train"]["seed"] = "<img src=x onerror=alert(2)>"  # not a seed: that run is skipped
    _run(hostile, seeded, fids=[230.0] * 3)
    write_report(benign)
    write_report(hostile)

    made, page = _parsed(benign / "report.html"), _parsed(hostile / "report.html")
    assert page.pairs <= made.pairs, page.pairs - made.pairs
    assert not [a for a in page.attributes if a[1].startswith("on")]
    assert "svg" not in {tag for tag, _ in page.pairs}
    for tag, name, value in page.attributes:  # every link and image points at a file of the study
        if name in ("src", "href"):
            assert (hostile / unquote(value)).exists(), (tag, value)
            assert ":" not in value, value
    text = "".join(page.text)
    # the hostile values are there, as text
    assert "epoch_9999<img src=x onerror=alert(1)>" in text and 'gan"><svg onload=alert(1)>' in text
    assert "lr = <i onclick=alert(1)>" in text and 'art<b onmouseover="alert(1)">' in text
    grids = [v for tag, name, v in page.attributes if tag == "img" and name == "src" and "/samples/" in v]
    assert len(grids) == 2 and all(unquote(v).endswith(HOSTILE_GRID) for v in grids)


def test_fidelity_diversity_and_memorisation_values_from_elsewhere_are_checked_and_escaped(tmp_path, specs):
    from .test_report import one_question

    # a benign study: a measured run with every number and its memorisation figure
    benign = tmp_path / "benign"
    made = _run(benign, specs("gan_default", "gan"), fids=[250.0] * 3, **one_question(figure="memorisation_pairs.png"))
    (made / "memorisation_pairs.png").write_bytes((made / "real.png").read_bytes())
    write_report(benign)

    hostile = tmp_path / "hostile"
    fields = one_question(memorised=("pixels",), figure="../../../outside.png")
    fields["prdc"]["network"] = "<script>alert(1)</script>"
    fields["memorisation"]["spaces"]["pixels"]["rule"] = "<img src=x onerror=alert(1)>"
    fields["memorisation"]["spaces"]["<b onclick=alert(1)>"] = {"memorised": True}  # no space's name: not shown
    bad = _run(hostile, specs("gan_default", "gan"), fids=[250.0] * 3, **fields)
    (hostile / "outside.png").write_bytes((bad / "real.png").read_bytes())
    data = json.loads((bad / "fid.json").read_text())
    data["prdc"]["recall"]["mean"] = float("nan")  # JSON's NaN, which Python's reader takes
    data["ms_ssim"]["ratio"]["mean"] = "abc"
    data["prdc"]["coverage"]["mean"] = float("inf")
    data["prdc_radiomics"]["recall"]["mean"] = True  # a bool is no number
    (bad / "fid.json").write_text(json.dumps(data))
    linked = _run(hostile, specs("gan_odd", "gan", lr=0.0001), fids=[240.0] * 3, **one_question(figure="pairs.png"))
    (linked / "pairs.png").symlink_to(hostile / "outside.png")  # a link heartjobs did not make: not followed
    result = cli("report", hostile)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr

    rows = {row["job"]: row for row in json.loads((hostile / "summary.json").read_text())["rows"]}
    row = rows["gan_default"]
    assert row["recall"] is row["coverage"] is row["ms_ssim_ratio"] is None and row["precision"] == 0.7
    assert row["recall_radiomics"] is None and row["coverage_radiomics"] == 0.75
    assert row["memorised"] is True and row["memorised_spaces"] == "pixels" and row["memorisation_figure"] is None
    assert rows["gan_odd"]["memorisation_figure"] is None and rows["gan_odd"]["precision"] == 0.7
    warnings = result.stderr.strip().splitlines()
    [line] = [w for w in warnings if "/gan_default/v0001/fid.json" in w]
    for said in ("prdc: recall is not a finite number", "prdc: coverage is not", "ms_ssim: ms_ssim_ratio is not",
                 "prdc_radiomics: recall_radiomics is not a finite number",
                 "memorisation: figure is not a .png path inside the run folder"):  # fmt: skip
        assert said in line, line
    [line] = [w for w in warnings if "/gan_odd/v0001/fid.json" in w]
    assert "memorisation: figure pairs.png is reached through a symbolic link" in line

    made, page = _parsed(benign / "report.html"), _parsed(hostile / "report.html")
    assert page.pairs <= made.pairs, page.pairs - made.pairs
    assert not [a for a in page.attributes if a[1].startswith("on")]
    for _, name, value in page.attributes:
        if name in ("src", "href"):
            assert (hostile / unquote(value)).resolve().is_relative_to(hostile.resolve()), value
            assert "outside.png" not in value and "pairs.png" not in value, value
    text = "".join(page.text)
    assert "<script>alert(1)</script>'s feature space" in text and "<img src=x onerror=alert(1)>" in text
    md = (hostile / "summary.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md and "<b onclick" not in md


def _table_cells(line: str) -> list[str]:
    """A markdown table row's cells: split at each | that no backslash escapes."""
    cells, cell, chars = [], "", iter(line.strip()[1:-1])
    for char in chars:
        if char == "\\":
            cell += char + next(chars, "")
        elif char == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += char
    return [*cells, cell]


FORMULAS = ["=HYPERLINK(x)", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
MARKDOWN = ["a|b", "two\nlines", "<img src=x onerror=alert(1)>", "ends\\", "[link](javascript:alert(1))"]


def test_summary_csv_and_md_cells_from_names_stay_inert(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    # a measured run whose folder starts like a formula, with a negative KID (a number, and stays one)
    record = specs("gan_default", "gan")
    record["spec"]["name"] = "=1+1"
    _run(artifacts, record, fids=[-3000.0] * 3)
    jobs = tmp_path / "specs"
    jobs.mkdir()
    for name in FORMULAS + MARKDOWN:  # specs that can't be read count by their file's name
        (jobs / f"{name}.toml").write_text("not = [a spec\n")
    result = cli("report", artifacts, "--jobs", jobs)
    assert result.returncode == 0, result.stderr

    with open(artifacts / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    jobs_read = [row["job"] for row in table]
    assert sorted(jobs_read[:-1]) == sorted([f"'{name}" for name in FORMULAS] + MARKDOWN) and jobs_read[-1] == "'=1+1"
    measured = table[-1]
    assert float(measured["kid_mean"]) < 0 and measured["kid_mean"].startswith("-")  # a number, no quote
    assert float(measured["fid_mean"]) == -3000.0
    text = (artifacts / "summary.csv").read_text()
    assert f",{measured['kid_mean']}," in text  # unquoted: a spreadsheet reads it as a number
    for line in text.split("\r\n")[1:-1]:  # the csv module ends a row with \r\n
        assert re.match(r'^"[^=+\-@\t\r]', line), line  # every job cell quoted, none starts a formula

    md = (artifacts / "summary.md").read_text()
    lines = [line for line in md.split("\n## ")[0].splitlines() if line.startswith("|")]  # the runs' table
    assert len(lines) == 2 + len(FORMULAS) + len(MARKDOWN) + 1  # header, rule, one line per job
    assert all(len(_table_cells(line)) == len(HEADER) for line in lines)
    assert "<img" not in md and "](" not in md
    assert "| a\\|b |" in md and "| two lines |" in md and "| ends\\\\ |" in md


# A damage per file that a run folder from elsewhere (or one cut short) may hold, the field it names, and
# what the report makes of it.
DAMAGES = {
    "no_fid_std": ("fid.json", lambda d: d.pop("fid_std"), "fid_std", "counted as not measured"),
    "no_n_real": ("fid.json", lambda d: d.pop("n_real"), "n_real", "counted as not measured"),
    "kid_text": ("fid.json", lambda d: d.update(kid_mean="abc"), "kid_mean", "left out"),
    "frd_text": ("fid.json", lambda d: d["frd"].update(mean="abc"), "frd: mean", "left out"),
    "train_list": ("resolved.json", lambda d: d["spec"].update(train=[1]), "spec.train", "run skipped"),
    "model_list": ("resolved.json", lambda d: d["spec"].update(model=["gan"]), "spec.model", "run skipped"),
}


def test_a_foreign_or_partial_run_is_named_in_one_line_and_the_rest_is_reported(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("good", "wgan"), fids=[250.0] * 3)
    for job, (name, damage, _, _) in DAMAGES.items():
        path = _run(artifacts, specs(job, "gan"), fids=[260.0] * 3) / name
        data = json.loads(path.read_text())
        damage(data)
        path.write_text(json.dumps(data))
    losses = _run(artifacts, specs("seconds_text", "gan"), fids=[260.0] * 3) / "losses.jsonl"
    first = losses.read_text().splitlines()[0]
    losses.write_text(first + "\n" + json.dumps({"epoch": 2, "d_loss": 0.5, "seconds": "abc"}) + "\n")

    # a value that reads fine but is no number of ours: its configuration's label is text in the figures
    odd = specs("dollar", "gan")
    odd["spec"]["train"]["lr"] = "$\\foo^{$"  # mathtext that matplotlib cannot parse
    _run(artifacts, odd, fids=[255.0] * 3)

    result = cli("report", artifacts)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == len(DAMAGES) + 1 and all(w.startswith("warning: ") for w in warnings), warnings
    for job, (name, _, field, consequence) in DAMAGES.items():
        [line] = [w for w in warnings if f"/{job}/v0001/{name}: " in w]
        assert f" {field}" in line and line.endswith(consequence), line
    [line] = [w for w in warnings if "/seconds_text/v0001/losses.jsonl: line 2: seconds: " in w]

    summary = json.loads((artifacts / "summary.json").read_text())
    assert summary["warnings"] == [w.removeprefix("warning: ") for w in warnings]
    rows = {row["job"]: row for row in summary["rows"]}
    assert rows["good"]["fid_mean"] == 250.0 and rows["good"]["state"] == "done"
    assert rows["no_fid_std"]["fid_mean"] is rows["no_n_real"]["fid_mean"] is None
    assert rows["kid_text"]["fid_mean"] == 260.0 and rows["kid_text"]["kid_mean"] is None
    assert rows["frd_text"]["fid_mean"] == 260.0 and rows["frd_text"]["frd_mean"] is None
    assert rows["train_list"]["state"] == rows["model_list"]["state"] == "unreadable"
    assert rows["seconds_text"]["epochs"] == 1 and rows["seconds_text"]["fid_mean"] == 260.0
    for name in ("summary.md", "summary.csv", "report.html", "report_best_grids.png", "report_losses_gan.png"):
        assert (artifacts / name).is_file(), name


def test_a_folder_name_with_control_characters_reaches_the_terminal_escaped(tmp_path, specs):
    artifacts = tmp_path / "artifacts\x1b[31m"  # what the report prints about its own outputs names it too
    fid = _run(artifacts, specs("good", "gan"), fids=[260.0] * 3) / "fid.json"
    fid.write_text(json.dumps({**json.loads(fid.read_text()), "kid_mean": "abc"}))
    (artifacts / "good").rename(artifacts / "a\x1b[2Jb\u202e")  # clear the screen; reverse what follows
    result = cli("report", artifacts)
    assert result.returncode == 0 and "\x1b" not in result.stderr + result.stdout and "\u202e" not in result.stderr
    assert "a\\x1b[2Jb\\u202e/v0001/fid.json: kid_mean" in result.stderr, result.stderr


def test_a_job_named_like_a_report_file_is_refused_at_validation(tmp_path, prepared32, specs):
    from .conftest import write_spec

    for name in ("summary.md", "summary.csv", "summary.json", "report.html", "report_losses_gan.png"):
        path = write_spec(tmp_path, name, "gan", prepared32)
        result = cli("validate", path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        [line] = [line for line in result.stderr.splitlines() if str(path) in line]
        assert f"name: {name} is reserved" in line, line
    # the reserved names cover every file the report writes (its outputs are named in one place)
    from heartjobs.store.rundir import is_report_output

    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("dcgan_lr0.0001", "dcgan", lr=0.0001), fids=[220.0, 221.0])
    _run(artifacts, specs("dcgan_lr0.0004", "dcgan", lr=0.0004), fids=[248.0, 247.0])
    _, written = write_report(artifacts)
    assert len(written) == 8 and all(is_report_output(path.name) for path in written), written


def test_a_folder_where_the_report_writes_a_file_is_one_line_and_nothing_is_written(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    record = specs("gan_default", "gan")
    record["spec"]["name"] = "summary.md"  # a job folder from before such names were refused
    _run(artifacts, record, fids=[250.0] * 3)
    result = cli("report", artifacts)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"{artifacts / 'summary.md'}: a folder where `heartjobs report` writes its file" in line
    assert sorted(p.name for p in artifacts.iterdir()) == ["summary.md"]  # nothing written


def test_a_job_named_like_the_ladders_folder_is_refused_at_validation(tmp_path, prepared32):
    spec = write_spec(tmp_path, "ladder", "gan", prepared32, epochs=1, device="cpu")
    one_line_error(cli("validate", spec), f"{spec}: name: ladder is reserved: the validity ladder's folder")
