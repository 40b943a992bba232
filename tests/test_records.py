"""Records on disk (heartjobs.records): every earlier format is read by the readers heartjobs uses, a record
read and written again keeps its values, and damaged or foreign files read as no record, never an error.

tests/fixtures/records/v1/ holds format 1 (records without a format number) as heartjobs wrote them before
records had one: a real run of a small DCGAN measured with FID, KID and FRD (fid.json, metrics.jsonl,
status.json, resolved.json, losses.jsonl), its --result record, a local submission's submission.json, and a
queue's done and failed records, worker heartbeat and --force mark.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from heartjobs.cluster.submit import Submission, read_submission
from heartjobs.queue.folders import Forced, Outcome, Queue, WorkerBeat, status
from heartjobs.records import Measurement, Record
from heartjobs.report.summary import Summary, collect
from heartjobs.store.rundir import RunDir
from heartjobs.store.status import Status, read_status
from heartjobs.system import launching, stopping

FIXTURES = Path(__file__).parent / "fixtures" / "records"
V1 = FIXTURES / "v1"
RUN_V1 = V1 / "artifacts" / "fixture" / "v0001"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    "model, path",
    [
        (Measurement, RUN_V1 / "fid.json"),
        (Status, RUN_V1 / "status.json"),
        (launching.RunResult, V1 / "result.json"),
        (Submission, V1 / "submission.json"),
        (Outcome, V1 / "queue" / "done.json"),
        (Outcome, V1 / "queue" / "failed.json"),
        (WorkerBeat, V1 / "queue" / "worker.json"),
        (Forced, V1 / "queue" / "forced.json"),
        (Summary, V1 / "summary.json"),  # the report's, of the run folder above
    ],
)
def test_format_1_is_read_and_written_again_as_the_current_format_with_its_values(tmp_path, model, path):
    written = _json(path)
    assert "format" not in written  # format 1: no number
    record = model.read(path)
    assert record is not None and record.format == Record.FORMAT
    record.write(tmp_path / "again.json")
    assert _json(tmp_path / "again.json") == {"format": Record.FORMAT, **written}  # every key, every value


def test_a_format_1_run_folder_is_read_by_the_run_folder_and_the_report(tmp_path):
    run = RunDir(RUN_V1)
    fid = run.fid_report()
    assert fid.fid_mean == _json(RUN_V1 / "fid.json")["fid_mean"] and fid.epoch == 2 and fid.frd["version"] == "v1"
    assert [r.fid_mean for r in run.metric_records()] == [fid.fid_mean]
    assert run.status().state == "done" and run.status().epochs_done == 2
    (row,) = collect(V1 / "artifacts")
    assert row["state"] == "done" and row["fid_mean"] == round(fid.fid_mean, 3) and row["frd_mean"] is not None
    assert row["kid_mean"] == round(fid.kid_mean, 5) and row["n_generated"] == 20


def test_a_format_1_queue_and_submission_are_read(tmp_path):
    queue = tmp_path / "queue"
    for state, name in (("done", "000001_fixture_q"), ("failed", "000002_bad")):
        (queue / state).mkdir(parents=True)
        (queue / state / f"{name}.toml").write_text("")
        shutil.copy(V1 / "queue" / f"{state}.json", queue / state / f"{name}.json")
    rows = status(Queue(queue))
    assert rows["done"][0]["state"] == "done" and rows["done"][0]["run_dir"].endswith("fixture_q/v0001")
    assert rows["failed"][0]["state"] == "failed" and "no prepared set here" in rows["failed"][0]["error"]
    record = read_submission(V1)
    assert record["executor"] == "local" and record["tasks"][0]["job"] == "fixture_sub"
    assert record["folder"] == str(V1.resolve())


def test_a_record_that_is_missing_damaged_or_foreign_is_none(tmp_path):
    path = tmp_path / "record.json"
    assert Measurement.read(path) is None and read_status(path) == Status()  # missing
    for text in ("{not json", "[1, 2]", '"text"', '{"metric": "fid", "repeats": []}'):
        path.write_text(text)
        assert Measurement.read(path) is None, text
        assert read_status(path).state is None or text.startswith('{"metric"')
    path.write_bytes(b"\xff\xfe not utf-8")
    assert Measurement.read(path) is None and Submission.read(path) is None
    # a field that does not validate reads as missing; the rest of the record stays
    path.write_text(json.dumps({"state": "done", "pid": "not a pid", "epochs_done": [1]}))
    assert read_status(path) == Status(state="done")
    assert Measurement.parse_line("cut sho") is None


def test_the_stop_request_is_a_typed_request():
    stop = stopping.StopRequest()
    assert stop.signal is None
    stop.request(15)
    assert stop.signal == 15
