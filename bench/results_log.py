"""The one way a benchmark records a result: a JSON line printed and appended to bench/results/NAME.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def record(name: str, fields: dict) -> dict:
    """Stamp `fields` with the bench name and time, print them as one JSON line, append it to the log."""
    line = {"bench": name, **fields, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(json.dumps(line))
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return line
