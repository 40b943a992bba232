"""Which hearts the Human Organ Atlas publishes, and where a source puts each one's volume.

The records are hoa-tools' bundled metadata (hoa-tools 2.0.0, BSD-3), trimmed to the fields heartjobs uses
and pinned in hearts.json beside this module; scripts/pin_hoa_inventory.py regenerates the file from a
hoa-tools wheel. hoa-tools itself is not a dependency: for these JSON facts it would bring 76 packages
(about 650 MB: gcsfs and the Google client stack, dask, xarray, pandas, SimpleITK), and it reads the
volumes through its own stack, which has no cache and no way to point it at a mirror.

A source is the root the bucket's paths hang below: the public bucket over HTTPS (the default), or a
mirror that keeps the bucket's paths below its root (a local folder, a file:// or an http(s):// URL).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from heartjobs.errors import HeartjobsError

INVENTORY_FILE = "hearts.json"
PUBLIC_SOURCE = "https://storage.googleapis.com"
SOURCE_ENV = "HEARTJOBS_HOA_SOURCE"
LICENCE = "CC BY 4.0"
COMPLETE_ORGAN = "complete-organ"
THESIS_DATASET = "LADAF-2020-27_heart_complete-organ_25.08um_bm05"  # the thesis' heart (make hipct)
# a record's gcs_url: the store's format, the bucket and the dataset's folder below it
_GCS_URL = re.compile(r"(?P<format>n5|zarr)://gs://(?P<bucket>[^/]+)/(?P<path>.+/)")


@dataclass(frozen=True)
class Dataset:
    """One scan's volume as the inventory records it; shape_xyz is the record's data.shape (x, y, z with z
    the slice axis, at full resolution)."""

    name: str
    organ: str
    voi: str
    shape_xyz: tuple[int, int, int]
    voxel_size_um: float
    store_format: str  # "n5" | "zarr"
    bucket: str
    path: str  # below the bucket (or a mirror's root), ending in "/"
    donor: dict
    scan: dict
    doi: str | None
    citation: str
    licence: str = LICENCE
    # the 16-bit values the Atlas windows this scan by (`data fetch --window dataset`); hoa-tools 2.0.0's
    # records carry none, so every pinned record has None and a fetch windows by percentiles
    contrast_limits: tuple[int, int] | None = None

    @property
    def complete(self) -> bool:
        return self.voi == COMPLETE_ORGAN

    def provenance(self) -> dict:
        """What a prepared set made from this dataset records about it in its manifest."""
        return {
            "name": self.name,
            "doi": self.doi,
            "citation": self.citation,
            "licence": self.licence,
            "donor": dict(self.donor),
            "organ": self.organ,
            "voi": self.voi,
            "scan": dict(self.scan),
            "voxel_size_um": self.voxel_size_um,
            "store_format": self.store_format,
        }


def parse_gcs_url(url: str) -> tuple[str, str, str]:
    """A record's "n5://gs://BUCKET/PATH/" or "zarr://gs://BUCKET/PATH/" as (format, bucket, path)."""
    match = _GCS_URL.fullmatch(url)
    if match is None:
        raise ValueError(f"gcs_url {url!r}: expected n5://gs://BUCKET/PATH/ or zarr://gs://BUCKET/PATH/")
    return match["format"], match["bucket"], match["path"]


def citation_line(citation: dict) -> str:
    """The record's citation as one line: its authors, then its title."""
    authors = ", ".join(citation.get("author_list") or [])
    title = citation["title"].strip()
    return f"{authors}. {title}" if authors else title


def _dataset(record: dict) -> Dataset:
    store_format, bucket, path = parse_gcs_url(record["data"]["gcs_url"])
    return Dataset(
        name=record["name"],
        organ=record["sample"]["organ"],
        voi=record["voi"],
        shape_xyz=tuple(record["data"]["shape"]),
        voxel_size_um=float(record["data"]["voxel_size_um"]),
        store_format=store_format,
        bucket=bucket,
        path=path,
        donor=dict(record["donor"]),
        scan=dict(record["scan"]),
        doi=record["citation"].get("doi"),
        citation=citation_line(record["citation"]),
    )


@cache
def _pinned() -> dict:
    return json.loads(resources.files(__package__).joinpath(INVENTORY_FILE).read_text(encoding="utf-8"))


def pin() -> dict:
    """The pinned inventory's header: where the records come from, their licence, when they were pinned."""
    return {key: value for key, value in _pinned().items() if key != "records"}


@cache
def _all() -> tuple[Dataset, ...]:
    return tuple(_dataset(record) for record in _pinned()["records"])


def organs() -> list[str]:
    return sorted({dataset.organ for dataset in _all()})


def datasets(organ: str | None = None, complete: bool | None = None) -> list[Dataset]:
    """The pinned records, by name; of one organ, and only complete organs (True) or only parts (False)."""
    if organ is not None and organ not in organs():
        raise HeartjobsError(
            f"organ {organ!r}: heartjobs pins only the Human Organ Atlas' {' and '.join(organs())} records "
            f"({pin()['source']})"
        )
    return [
        dataset
        for dataset in _all()
        if (organ is None or dataset.organ == organ) and (complete is None or dataset.complete == complete)
    ]


def find(name: str) -> Dataset:
    """The dataset of that inventory name; an unknown one is a one-line error with the closest name."""
    by_name = {dataset.name: dataset for dataset in _all()}
    if name in by_name:
        return by_name[name]
    from heartjobs.spec.schema import did_you_mean  # pydantic's import, only for an unknown name

    raise HeartjobsError(
        f"dataset {name!r}: not in the pinned Human Organ Atlas inventory{did_you_mean(name, list(by_name))}; "
        "`heartjobs data datasets --all` lists them"
    )


def resolve_source(source: str | None) -> str:
    """Where to read from: `source`, else $HEARTJOBS_HOA_SOURCE, else the public bucket. An http(s):// or
    file:// URL is kept (without a trailing slash), a local folder becomes its absolute path; a folder or
    file:// URL that is not there, or any other scheme (gs://, s3://), is a one-line error."""
    origin = "--source"
    if source is None:
        source, origin = os.environ.get(SOURCE_ENV) or PUBLIC_SOURCE, SOURCE_ENV
    parts = urlsplit(source)
    if parts.scheme in ("http", "https"):
        if not parts.netloc:
            raise HeartjobsError(f"{origin} {source!r}: no host in the URL")
        return _without_trailing_slash(source)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise HeartjobsError(f"{origin} {source!r}: a file:// URL names a folder on this machine (file:///PATH)")
        _check_folder(Path(parts.path), origin, source)
        return _without_trailing_slash(source)
    if "://" in source:
        raise HeartjobsError(
            f"{origin} {source!r}: not a source heartjobs reads; give an http(s):// URL, a file:// URL or a folder"
        )
    folder = Path(source).expanduser().absolute()
    _check_folder(folder, origin, source)
    return str(folder)


def _check_folder(folder: Path, origin: str, source: str) -> None:
    if not folder.is_dir():
        raise HeartjobsError(f"{origin} {source!r}: no such folder")


def _without_trailing_slash(url: str) -> str:
    while url.endswith("/") and not url.endswith("://"):
        url = url[:-1]
    return url


def dataset_url(dataset: Dataset, source: str) -> str:
    """The dataset's folder under a resolved source, ending in "/". The public source's URL names the
    bucket; a mirror keeps the bucket's paths below its root (<source>/LADAF-2020-27/heart/...)."""
    root = _without_trailing_slash(source)
    if root == PUBLIC_SOURCE:
        return f"{root}/{dataset.bucket}/{dataset.path}"
    return f"{root}/{dataset.path}"
