"""The defaults a spec resolves against: the common [train] values, each model family's own (from the
registry, heartjobs.models), the thesis' architecture widths, DiffAugment's names, the one rule for "is this
the default?", and which keys are bookkeeping or came later (left out of the spec hash)."""

from __future__ import annotations

from typing import Any

from heartjobs.models import FAMILIES
from heartjobs.models.family import STYLEGAN2_PAPER256, THESIS_HIDDEN, THESIS_WIDTH

# DiffAugment's operations for one-channel images (Zhao et al. 2020 without the colour ones but brightness
# and contrast); [train] augment names them in the order they are applied. heartjobs.training.augment
# implements one function of each name (its import fails otherwise).
AUGMENTATIONS: tuple[str, ...] = ("translation", "cutout", "brightness", "contrast")
OPTIMIZER_NAMES = {"adam": "Adam", "rmsprop": "RMSprop"}
COMMON_DEFAULTS: dict[str, Any] = {
    "epochs": 200,
    "batch_size": 64,
    "latent_dim": 100,
    "seed": 0,
    "sample_every": 10,
    "checkpoint_every": 10,
    "keep_checkpoints": 3,
    "device": "auto",
    # The reference code passes 0.8 as BatchNorm's second positional argument, which is eps, not
    # momentum; the thesis kept it. 1e-5 is PyTorch's standard value.
    "batchnorm_eps": 0.8,
    # Speed switches (see docs/performance.md). TF32 only matters on CUDA: true for matmuls and cuDNN
    # convolutions, false for neither, "convolutions" for cuDNN only (PyTorch's own default since 1.12,
    # and what the thesis ran: FP32 matmuls, TF32 convolutions).
    "tf32": True,
    "compile": False,
    "bf16": False,
    # Nearest x2 upsampling + 3x3 conv computed as four 2x2 phase convolutions (heartjobs.models.phase_conv):
    # the same function, float round-off apart; only for families whose generator has it (upsample_conv).
    "phase_conv": False,
    # DiffAugment policy applied to every image the discriminator sees: "none", AUGMENTATIONS' names, or
    # "ada" (adaptive discriminator augmentation, heartjobs.training.ada), with its target r_t, the thousands
    # of images that take p from 0 to 1, and a fixed p instead of the adaptive one (None: adaptive).
    "augment": "none",
    "ada_target": 0.6,
    "ada_kimg": 500,
    "ada_p": None,
}
# [train] keys that only some families have among their defaults (betas: Adam's; n_critic, clip_value,
# gp_lambda: the critics'; StyleGAN2's regularisation, style mixing and EMA): each applies to the families
# that have it, and no other. A common key a family sets (StyleGAN2's batch size) is its default, no more.
FAMILY_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(
        key
        for f in FAMILIES.values()
        for key in f.defaults
        if key not in COMMON_DEFAULTS and not all(key in g.defaults for g in FAMILIES.values())
    )
)
# The architectures' knobs ([architecture]) and their thesis values: the fully connected generator's hidden
# widths, and the convolutional models' base width (heartjobs.models builds the same by default); StyleGAN2's
# at the reference's paper256.
ARCHITECTURE_DEFAULTS: dict[str, Any] = {"hidden": THESIS_HIDDEN, "width": THESIS_WIDTH, **STYLEGAN2_PAPER256}


def train_defaults(model: str) -> dict[str, Any]:
    """Every [train] value a job of `model` has unless its spec says otherwise: the common ones, then its
    family's (the thesis' for its models, their papers' beyond them)."""
    return COMMON_DEFAULTS | dict(FAMILIES[model].defaults)


def architecture_defaults(model: str) -> dict[str, Any]:
    """The [architecture] knobs `model` has, at their defaults ({"hidden": ...}, {"width": ...}, StyleGAN2's)."""
    return {knob: ARCHITECTURE_DEFAULTS[knob] for knob in FAMILIES[model].knobs}


def is_default(default: Any, value: Any) -> bool:
    """Whether `value` is `default` (the one rule for "is this a change from the default?"): a list is its
    tuple, and a bool is no number (tf32 = true is not tf32 = 1)."""
    if isinstance(default, list | tuple) and isinstance(value, list | tuple):
        return list(default) == list(value)
    if isinstance(default, bool) or isinstance(value, bool):
        return default is value
    return default == value


# How a run is bookkept, not what it computes: left out of the spec hash (and of a configuration's label).
BOOKKEEPING_KEYS: tuple[str, ...] = ("sample_every", "checkpoint_every", "keep_checkpoints")
# Keys added after runs existed, with their defaults: left out of the hash while they hold the default (or
# None: a key that does not apply to the model, such as gp_lambda for gan), so a run recorded before them
# keeps its identity (resume, "already finished") under the new code. A section left empty goes too:
# [architecture] at the thesis' widths hashes as a spec from before it existed.
# [eval] keys added once both hashes existed (fidelity, diversity, memorisation; the feature network): at
# their defaults neither the spec hash nor a measurement's settings hash (evaluation.records) changes.
EVAL_LATER_SETTINGS: dict[str, Any] = {
    "features": "inception",
    "prdc": True,
    "prdc_k": 5,
    "ms_ssim": True,
    "ms_ssim_pairs": 1000,
    "memorisation": True,
    "memorisation_quantile": 0.01,
}
LATER_DEFAULTS: dict[str, dict[str, Any]] = {
    "eval": {"frd": True, "frd_n": 1000, "frd_drop_degenerate": False, **EVAL_LATER_SETTINGS},
    "train": {
        "gp_lambda": None,
        "augment": "none",
        "phase_conv": False,
        **{key: COMMON_DEFAULTS[key] for key in ("ada_target", "ada_kimg", "ada_p")},
        # StyleGAN2's own keys: None for every other family (kept for StyleGAN2: its identity)
        **{key: None for key in ("r1_gamma", "pl_weight", "style_mixing", "ema_kimg", "ema_rampup")},
    },
    "architecture": {
        "hidden": list(ARCHITECTURE_DEFAULTS["hidden"]),
        "width": ARCHITECTURE_DEFAULTS["width"],
        **{key: None for key in STYLEGAN2_PAPER256},  # None unless the model is StyleGAN2 (kept there: its identity)
    },
}
