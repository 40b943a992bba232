"""What the validity ladder found, remembered: each `heartjobs ladder` appends one line per metric to
$HEARTJOBS_CACHE/ladder/verdicts.jsonl, and every later measurement on the same prepared set, with the
same feature space (Inception weights and dims for FID and KID; the FRD version), carries the newest
verdict, so that a metric that failed the ladder is labelled as such wherever it is shown.
"""

from __future__ import annotations

from pathlib import Path

from heartjobs import atomic

from .cache import cache_dir


def verdicts_file() -> Path:
    return cache_dir() / "ladder" / "verdicts.jsonl"


def feature_space(metric: str, weights_sha256: str | None, dims: int | None, frd_version: str | None) -> dict:
    """What a verdict is about, besides the data: the features the metric compares."""
    if metric == "frd":
        return {"frd_version": frd_version}
    return {"weights_sha256": weights_sha256, "dims": dims}


def remember(ladder: dict, source: Path | None = None) -> None:
    """Append the ladder's verdicts (one line per metric), in one append."""
    path = verdicts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for metric, verdict in ladder["verdicts"].items():
        protocol = ladder["protocol"][metric]
        space = feature_space(
            metric, protocol.get("weights", {}).get("sha256"), protocol.get("dims"), protocol.get("version")
        )
        line = {
            "content_hash": ladder["content_hash"],
            "metric": metric,
            **space,
            "passes": verdict["passes"],
            "failures": verdict["failures"],
            "spearman": verdict["spearman"],
            "n": ladder["n"],
            "ladder": str(Path(source).resolve()) if source else None,
        }
        lines.append(atomic.dumps_json(line))
    atomic.append_lines(path, lines)


def lookup(content_hash: str, metric: str, **space) -> dict | None:
    """The newest verdict for this metric on this set in this feature space; None if never laddered."""
    path = verdicts_file()
    if not path.is_file():
        return None
    wanted = feature_space(metric, space.get("weights_sha256"), space.get("dims"), space.get("frd_version"))
    found = None
    for text in path.read_text().splitlines():
        try:
            line = atomic.loads_json(text)
        except ValueError:
            continue  # a torn last line of an interrupted append
        if (
            line.get("content_hash") == content_hash
            and line.get("metric") == metric
            and all(line.get(k) == v for k, v in wanted.items())
        ):
            found = line
    if found is None:
        return None
    return {key: found[key] for key in ("passes", "failures", "spearman", "n", "ladder")}
