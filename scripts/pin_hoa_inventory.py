"""Pin the Human Organ Atlas' heart records from hoa-tools' bundled metadata into heartjobs/data/hoa/hearts.json.

    pip download --no-deps hoa-tools==2.0.0 -d /tmp/hoa
    python scripts/pin_hoa_inventory.py /tmp/hoa/hoa_tools-2.0.0-py3-none-any.whl [--pinned YYYY-MM-DD]

Reads the wheel (or a folder it was unpacked into): every hoa_tools/data/metadata/metadata/*.json record of
the organ (default heart), trimmed to the fields heartjobs uses, sorted by name, under a header that says
where they come from, under which licences, and when they were pinned. The same wheel and date give the
same file. Each record's gcs_url is checked with the parser heartjobs reads it with.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import zipfile
from pathlib import Path

from heartjobs.data.hoa.inventory import INVENTORY_FILE, LICENCE, parse_gcs_url

RECORDS = "hoa_tools/data/metadata/metadata/"
OUT = Path(__file__).resolve().parent.parent / "heartjobs" / "data" / "hoa" / INVENTORY_FILE
# per section, the fields kept (the rest: proposal, registration, scan and sample details, donor history)
KEEP = {
    "data": ("shape", "voxel_size_um", "gcs_url"),
    "sample": ("organ",),
    "donor": ("id", "age", "sex"),
    "scan": ("date", "beamline", "technique"),
    "citation": ("title", "doi", "author_list"),
}


def read_wheel(source: Path) -> tuple[str, dict[str, bytes]]:
    """hoa-tools' version and its metadata records (file name -> bytes), from a wheel or an unpacked one."""
    if source.is_dir():
        files = {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    else:
        with zipfile.ZipFile(source) as wheel:
            files = {name: wheel.read(name) for name in wheel.namelist() if not name.endswith("/")}
    metadata = next(
        (text for name, text in files.items() if re.fullmatch(r"hoa_tools-[^/]+\.dist-info/METADATA", name))
    )
    version = re.search(rb"^Version: (\S+)$", metadata, re.MULTILINE)[1].decode()
    records = {name: text for name, text in files.items() if name.startswith(RECORDS) and name.endswith(".json")}
    return version, records


def trim(record: dict) -> dict:
    trimmed = {"name": record["name"], "dataset_type": record["dataset_type"], "voi": record["voi"]}
    for section, fields in KEEP.items():
        trimmed[section] = {field: record[section][field] for field in fields}
    parse_gcs_url(trimmed["data"]["gcs_url"])  # ValueError: a form heartjobs would not read
    return trimmed


def pin(source: Path, organ: str, pinned: str) -> dict:
    version, files = read_wheel(source)
    records = sorted(
        (trim(json.loads(text)) for text in files.values() if json.loads(text)["sample"]["organ"] == organ),
        key=lambda record: record["name"],
    )
    return {
        "source": f"hoa-tools {version} (BSD-3) bundled metadata",
        "source_files": f"{RECORDS}*.json, the records of sample.organ {organ!r}",
        "source_licence": "hoa-tools: BSD-3-Clause, Copyright (c) 2024, David Stansby",
        "licence": LICENCE,
        "licence_note": "the Human Organ Atlas' data and its records: CC BY 4.0 (ESRF data policy); cite the DOI",
        "pinned": pinned,
        "organ": organ,
        "count": len(records),
        "records": records,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="a hoa-tools wheel, or the folder it was unpacked into")
    parser.add_argument("--organ", default="heart", help="the organ whose records are pinned (default heart)")
    parser.add_argument("--pinned", default=datetime.date.today().isoformat(), help="the date (default today)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default {OUT}")
    args = parser.parse_args()
    pinned = pin(args.wheel, args.organ, args.pinned)
    args.out.write_text(json.dumps(pinned, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.out}: {pinned['count']} {args.organ} records from {pinned['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
