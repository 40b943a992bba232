"""What the validity ladder found, remembered: each `heartjobs ladder` appends one line per number (the
registry's number keys: fid, kid, frd, precision, recall, ..., memorised_pixels; heartjobs.evaluation.metrics)
to $HEARTJOBS_CACHE/ladder/verdicts.jsonl, and every later measurement on the same prepared set, with the
same feature space (Inception weights and dims for the feature network's numbers; the FRD version for the
radiomic ones; nothing beyond the data for the pixel ones), carries the newest verdict, so that a number
that failed the ladder on its question is labelled as such wherever it is shown.

A line's "metric" field holds the number's key (lines written before the numbers, one per metric fid, kid,
frd, read the same: those metrics' keys are their names), "question" the question it was judged on.
"""

from __future__ import annotations

from pathlib import Path

from heartjobs import atomic

from .cache import cache_dir


def verdicts_file() -> Path:
    return cache_dir() / "ladder" / "verdicts.jsonl"


def space_of(key: str) -> str:
    """The space of a number key ("inception", "radiomics", "pixels"); a key the registry does not know
    (a line from other code) is taken as the feature network's, as before the registry had spaces."""
    from .metrics import numbers  # here, not at the top: the report's light import of this module stays light

    found = numbers().get(key)
    return found[0].space if found else "inception"


def feature_space(key: str, weights_sha256: str | None, dims: int | None, frd_version: str | None) -> dict:
    """What a verdict is about, besides the data: the features the number compares."""
    space = space_of(key)
    if space == "radiomics":
        return {"frd_version": frd_version}
    if space == "pixels":
        return {}
    return {"weights_sha256": weights_sha256, "dims": dims}


def remember(ladder: dict, source: Path | None = None) -> None:
    """Append the ladder's verdicts (one line per number), in one append."""
    path = verdicts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, verdict in ladder["verdicts"].items():
        # the metric that gave the number holds its protocol (a ladder.json from before the numbers: the key)
        protocol = ladder["protocol"].get(verdict.get("metric", key), {})
        # only the feature network's protocol has Inception weights (MS-SSIM's "weights" are its scales')
        inception = space_of(key) == "inception"
        sha256 = protocol.get("weights", {}).get("sha256") if inception else None
        space = feature_space(key, sha256, protocol.get("dims"), protocol.get("version"))
        line = {
            "content_hash": ladder["content_hash"],
            "metric": key,
            "question": verdict.get("question"),
            **space,
            "passes": verdict["passes"],
            "failures": verdict["failures"],
            "spearman": verdict.get("spearman"),
            "n": ladder["n"],
            "ladder": str(Path(source).resolve()) if source else None,
        }
        lines.append(atomic.dumps_json(line))
    atomic.append_lines(path, lines)


def lookup(content_hash: str, key: str, **space) -> dict | None:
    """The newest verdict for this number (its key: "fid", "recall", "memorised_pixels", ...) on this set
    in its feature space (weights_sha256 and dims, frd_version: only those of the number's space are
    compared; others may be given); None if never laddered."""
    path = verdicts_file()
    if not path.is_file():
        return None
    wanted = feature_space(key, space.get("weights_sha256"), space.get("dims"), space.get("frd_version"))
    found = None
    for text in path.read_text().splitlines():
        try:
            line = atomic.loads_json(text)
        except ValueError:
            continue  # a torn last line of an interrupted append
        if (
            line.get("content_hash") == content_hash
            and line.get("metric") == key
            and all(line.get(k) == v for k, v in wanted.items())
        ):
            found = line
    if found is None:
        return None
    question = found.get("question") or ("overall" if key in ("fid", "kid", "frd") else None)
    return {"question": question, **{k: found.get(k) for k in ("passes", "failures", "spearman", "n", "ladder")}}
