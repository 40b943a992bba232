"""The Human Organ Atlas' datasets (minimal stand-in for helper inv's module: the Dataset record, its
provenance, and where a source holds it; inv's full version replaces this file)."""

from __future__ import annotations

from dataclasses import dataclass, field

PUBLIC_SOURCE = "https://storage.googleapis.com"


@dataclass(frozen=True)
class Dataset:
    name: str
    organ: str
    voi: str
    shape_xyz: tuple[int, int, int]
    voxel_size_um: float
    store_format: str
    bucket: str
    path: str
    donor: dict = field(default_factory=dict)
    scan: dict = field(default_factory=dict)
    doi: str | None = None
    citation: str = ""
    licence: str = "CC BY 4.0"
    # (low, high) uint16 grey values the atlas published for the dataset, where it did
    contrast_limits: tuple[int, int] | None = None

    def provenance(self) -> dict:
        return {
            "name": self.name,
            "doi": self.doi,
            "citation": self.citation,
            "licence": self.licence,
            "donor": self.donor,
            "organ": self.organ,
            "voxel_size_um": self.voxel_size_um,
            "store_format": self.store_format,
        }


def dataset_url(dataset: Dataset, source: str) -> str:
    """`<source>/<bucket>/<path>` for the public bucket, `<source>/<path>` for a mirror."""
    source = source.rstrip("/")
    if source == PUBLIC_SOURCE:
        return f"{source}/{dataset.bucket}/{dataset.path}"
    return f"{source}/{dataset.path}"
