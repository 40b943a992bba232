"""The Human Organ Atlas' HiP-CT volumes: its inventory of datasets, reading its multiscale volumes (N5,
OME-Zarr) and fetching a level of one into a prepared set, resumably, with its provenance."""
