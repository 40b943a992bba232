"""The Human Organ Atlas' HiP-CT hearts, fetched into prepared sets (`heartjobs data datasets`, `data fetch`).

- inventory: the heart records, pinned from hoa-tools' bundled metadata into hearts.json (name, shape,
  voxel size, where the volume lies, donor, scan, DOI and citation), and where a source puts a dataset.
- volume: a dataset's multiscale volume (N5, OME-Zarr v2 or v3) read through tensorstore, level by level.
- fetch: a level of a volume into a prepared set, resumably, with its provenance in the manifest.
"""
