"""The thesis' numbers and how it measured them: its Table 1 (FID per configuration), the keys its
configurations varied, its protocol (weights, n, repeats, dims, normalisation, real set, epochs, precision),
and what in a run's protocol differs from it. A run stands beside a Table 1 value only under that protocol.
"""

from __future__ import annotations

from heartjobs.records import Measurement
from heartjobs.spec.sweep import format_value

# Thesis Table 1: FID mean and std (3 x 3000 generated vs 3307 real, pytorch-fid 0.3.0, 2048-d).
THESIS_TABLE1: dict[tuple[str, str], tuple[float, float]] = {
    ("gan", "default"): (269.07, 1.06),
    ("gan", "lr = 0.0001"): (244.37, 0.25),
    ("gan", "lr = 0.0004"): (259.44, 0.28),
    ("gan", "ldim = 50"): (253.99, 0.56),
    ("gan", "ldim = 200"): (262.43, 0.99),
    ("gan", "bsize = 32"): (257.86, 0.93),
    ("gan", "bsize = 128"): (276.69, 0.66),
    ("wgan", "default"): (261.56, 1.17),
    ("wgan", "lr = 0.000025"): (276.18, 1.21),
    ("wgan", "lr = 0.0001"): (252.65, 2.30),
    ("wgan", "ldim = 50"): (318.75, 0.97),
    ("wgan", "ldim = 200"): (253.06, 1.17),
    ("wgan", "bsize = 32"): (298.14, 1.46),
    ("wgan", "bsize = 128"): (281.27, 0.84),
    ("dcgan", "default"): (288.91, 1.39),
    ("dcgan", "lr = 0.0001"): (219.83, 0.63),
    ("dcgan", "lr = 0.0004"): (247.57, 0.84),
    ("dcgan", "ldim = 50"): (261.62, 0.63),
    ("dcgan", "ldim = 200"): (326.15, 0.77),
    ("dcgan", "bsize = 16"): (210.96, 0.55),
    ("dcgan", "bsize = 32"): (370.87, 0.74),
}
THESIS_KEYS = ("lr", "latent_dim", "batch_size")
# How the thesis trained and measured every Table 1 value: pytorch-fid's standard weights, 3 x 3000
# generated images (each stretched to its own min..max by save_image(normalize=True)) against the whole
# real set of 3307 slices, 2048-d, after 200 epochs under PyTorch's default precision of its time (TF32
# convolutions, FP32 matmuls). A run's n_real counts only when it is its whole prepared set.
THESIS_PROTOCOL: dict = {
    "features": "inception",
    "standard_weights": True,
    "n_generated": 3000,
    "repeats": 3,
    "dims": 2048,
    "normalize": "per_image_minmax",
    "n_real": 3307,
    "epochs": 200,
    "tf32": "convolutions",
    "bf16": False,
}
# The thesis' slices were resized to 256 x 256 px (REFERENCE.md, Dataset).
THESIS_IMAGE_SIZE = 256


def measured_protocol(spec: dict, fid: Measurement | None) -> dict:
    """The values THESIS_PROTOCOL names, as this run was trained and measured (None: not measured)."""
    train = spec.get("train", {})
    protocol = {key: train.get(key) for key in ("epochs", "tf32", "bf16")}
    if fid:
        count = spec.get("data", {}).get("count")
        protocol |= {
            "features": fid.features,
            "standard_weights": fid.standard_weights,
            "n_generated": fid.n_generated,
            "repeats": len(fid.repeats),
            "dims": fid.dims,
            "normalize": fid.normalize,
            "n_real": fid.n_real if fid.n_real == count else f"{fid.n_real} of {count}",
        }
    return protocol


def protocol_differences(protocol: dict) -> list[str]:
    """What differs from the thesis' protocol: "normalize=fixed", "epochs=3", "not measured"."""
    if "dims" not in protocol:
        return ["not measured"]
    return [
        f"{key}={format_value(protocol[key])}" for key, value in THESIS_PROTOCOL.items() if protocol.get(key) != value
    ]
