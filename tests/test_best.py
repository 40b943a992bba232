"""One meaning of "best" (heartjobs.store.best): the first metric in FID, FRD order that every measurement compared
has and trusts; what best.pt, best_epoch, the report and the console all follow."""

from __future__ import annotations

from heartjobs.records import Measurement
from heartjobs.store import best

STANDARD = {"kind": "standard", "sha256": "6726825d", "standard": True}
UNTRAINED = {"kind": "untrained", "sha256": "ab12", "standard": False}


def _measured(fid: float, frd: float | None = None, *, weights=STANDARD, ladder=None, epoch: int = 1) -> Measurement:
    return Measurement(
        snapshot={"file": f"checkpoints/epoch_{epoch:04d}.pt", "epoch": epoch},
        fid_mean=fid,
        fid_std=0.0,
        repeats=[{"repeat": 0, "seed": 0, "fid": fid}],
        n_generated=10,
        n_real=10,
        dims=64,
        normalize="fixed",
        standard_weights=weights["standard"],
        weights=weights,
        frd=None if frd is None else {"mean": frd, "std": 0.0, "version": "v1"},
        ladder=ladder,
    )


FAILED = {"passes": False, "failures": ["blur_mild"], "spearman": 0.1}
PASSED = {"passes": True, "failures": [], "spearman": 0.9}


def test_standard_fid_is_best_unless_the_ladder_failed_it_then_frd():
    runs = [_measured(30.0, 2.0, epoch=1), _measured(20.0, 3.0, epoch=2)]
    found, choice = best.best_of(runs)
    assert (found.epoch, choice.metric, choice.describe()) == (2, "fid", "by FID")
    runs[1] = _measured(20.0, 3.0, epoch=2, ladder={"fid": FAILED})
    found, choice = best.best_of(runs)
    assert (found.epoch, choice.describe()) == (1, "by FRD (FID: fails the validity ladder)")


def test_fid_on_other_weights_never_chooses_not_even_after_a_ladder_passed_it():
    # a ladder pass is necessary, not sufficient: untrained FID passed at 192-d and still ranked noise best
    untrained = [_measured(5.0, epoch=1, weights=UNTRAINED), _measured(4.0, epoch=2, weights=UNTRAINED)]
    laddered = [m.model_copy(update={"ladder": {"fid": PASSED}}) for m in untrained]
    for measurements in (untrained, laddered):
        found, choice = best.best_of(measurements)
        assert found is None and choice.describe() == "none (FID: untrained Inception weights; FRD: not measured)"
    with_frd = [_measured(5.0, 2.0, epoch=1, weights=UNTRAINED), _measured(4.0, 3.0, epoch=2, weights=UNTRAINED)]
    found, choice = best.best_of(with_frd)
    assert (found.epoch, choice.describe()) == (1, "by FRD (FID: untrained Inception weights)")


def test_a_metric_missing_from_one_measurement_is_not_chosen_and_equals_keep_the_earliest():
    found, choice = best.best_of([_measured(float("nan"), 1.0, epoch=1), _measured(3.0, 1.0, epoch=2)])
    assert choice.describe() == "by FRD (FID: not measured)" and found.epoch == 1  # equal FRD: the earliest
    found, choice = best.best_of([])
    assert found is None and choice.describe() == "none (FID: nothing measured; FRD: nothing measured)"
