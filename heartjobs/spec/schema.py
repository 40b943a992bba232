"""The job spec's schema: what a spec may say (strictly, with pydantic), what a resolved spec holds, and
its hash.

A spec names a job, a model and a prepared set; everything it leaves out comes from the defaults
(defaults.py), and the image size and channels from the prepared set itself (loading.py resolves a spec).
The resolved spec has every value filled in, and its hash identifies the job's configuration.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from heartjobs.choices import Device, FeatureDims, FeatureNetwork, FrdBackend, Normalize
from heartjobs.hashing import sha256_json
from heartjobs.models import FAMILIES, MODELS, Networks
from heartjobs.spec.defaults import (
    ARCHITECTURE_DEFAULTS,
    AUGMENTATIONS,
    BOOKKEEPING_KEYS,
    FAMILY_KEYS,
    LATER_DEFAULTS,
    OPTIMIZER_NAMES,
    train_defaults,
)
from heartjobs.store.rundir import LADDER_FOLDER, is_report_output

ModelName = Literal[MODELS]  # type: ignore[valid-type]  # the registry's names, in its order


def _quoted(names: list[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


MODEL_CHOICES = (
    f"{_quoted([m for m in MODELS if FAMILIES[m].thesis])} (the thesis' models), "
    f"or {_quoted([m for m in MODELS if not FAMILIES[m].thesis])} (beyond them)"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SpecSection(_Strict):
    """What a spec file says, strictly typed: TOML's "1", 1.0 or "true" is no integer or boolean (an
    integer is a float, though: lr = 1), and floats are finite. Paths and tuples are TOML strings and lists,
    so those fields take them (strict=False), with strict items."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# Every number a spec gives is bounded by what the code can use, so that a value that validates also runs:
# network widths far beyond the thesis' (its widest layer is 1024; a layer between two 2**14 widths holds
# 2**28 weights, 1 GiB, and no tensor size comes near an overflow), image counts a measurement holds in
# memory (2**20 images' 2048 features are 16 GiB), counts a 32-bit integer holds (no schedule comes near
# them), and seeds in a signed 64-bit integer (torch's generators take up to 2**64 - 1, so a seed plus the
# few offsets the trainer and the repeats add still fits).
MAX_WIDTH = 2**14
MAX_IMAGES = 2**20
MAX_COUNT = 2**31 - 1
MAX_SEED = 2**63 - 1
# A learning rate of 1 already moves every weight by about its whole scale each step (Adam's and RMSprop's
# steps are about lr); a larger one only overflows the weights (non-finite scores, then a BCE range error).
MAX_LR = 1.0

_Text = TypeVar("_Text", str, Path)


def _plain_path(v: _Text) -> _Text:
    """A path without control characters: NUL is no path at all, and a newline or an escape sequence would
    break the one-line errors and listings that show it."""
    if re.search(r"[\x00-\x1f\x7f]", str(v)):
        raise ValueError("a path without control characters (NUL, newline, ...)")
    return v


class DataSection(_SpecSection):
    prepared: Path = Field(strict=False)

    _prepared = field_validator("prepared")(_plain_path)


class TrainSection(_SpecSection):
    """What a spec may say about training; None means "the model's default"."""

    epochs: int | None = Field(None, ge=1, le=MAX_COUNT)
    batch_size: int | None = Field(None, ge=2, le=MAX_IMAGES)
    lr: float | None = Field(None, gt=0, le=MAX_LR)
    betas: tuple[StrictFloat, StrictFloat] | None = Field(None, strict=False)
    latent_dim: int | None = Field(None, ge=1, le=MAX_WIDTH)
    n_critic: int | None = Field(None, ge=1, le=MAX_COUNT)
    clip_value: float | None = Field(None, gt=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    sample_every: int | None = Field(None, ge=1, le=MAX_COUNT)
    checkpoint_every: int | None = Field(None, ge=1, le=MAX_COUNT)
    keep_checkpoints: int | None = Field(None, ge=1, le=MAX_COUNT)
    device: Device | None = None
    batchnorm_eps: float | None = Field(None, gt=0)
    tf32: bool | Literal["convolutions"] | None = None
    compile: bool | None = None
    bf16: bool | None = None
    # WGAN-GP's penalty weight (0: an unconstrained critic, the ablation)
    gp_lambda: float | None = Field(None, ge=0)
    augment: str | None = None
    # the generator's upsampling convolutions as phase convolutions (models whose family has upsample_conv)
    phase_conv: bool | None = None
    # StyleGAN2's: R1's gamma, the path-length weight, the style-mixing probability, the EMA's half-life in
    # thousands of images and its ramp-up (0: none)
    r1_gamma: float | None = Field(None, ge=0)
    pl_weight: float | None = Field(None, ge=0)
    style_mixing: float | None = Field(None, ge=0, le=1)
    ema_kimg: float | None = Field(None, ge=0)
    ema_rampup: float | None = Field(None, ge=0)
    # ADA's (augment = "ada"): the target of r_t = E[sign(D(real))], the thousands of images that take p from
    # 0 to 1, and a fixed p instead of the adaptive one
    ada_target: float | None = Field(None, gt=0, lt=1)
    ada_kimg: float | None = Field(None, gt=0)
    ada_p: float | None = Field(None, ge=0, le=1)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not all(0 <= b < 1 for b in v):
            raise ValueError("both betas must be in [0, 1)")
        return v

    @field_validator("tf32", mode="before")
    @classmethod
    def _tf32_value(cls, v: Any) -> Any:
        # one error for both of the union's members
        if v is not None and not isinstance(v, bool) and v != "convolutions":
            raise ValueError('true, false or "convolutions"')
        return v

    @field_validator("augment")
    @classmethod
    def _augment_policy(cls, v: str | None) -> str | None:
        """ "none", or AUGMENTATIONS' names comma-separated (spaces ignored), each at most once; written back
        without spaces, so one policy has one spelling (and one hash)."""
        if v is None:
            return v
        names = [name.strip() for name in v.split(",")]
        if names in (["none"], ["ada"]):
            return names[0]
        choices = ", ".join(AUGMENTATIONS)
        for name in names:
            if name in ("none", "ada"):
                raise ValueError(f'"{name}" stands alone')
            if name not in AUGMENTATIONS:
                raise ValueError(
                    f"unknown augmentation {name!r}{did_you_mean(name, [*AUGMENTATIONS, 'ada'])}; use none, ada or "
                    f"{choices}"
                )
        if len(set(names)) != len(names):
            raise ValueError("name each augmentation once")
        return ",".join(names)


class ArchitectureSection(_SpecSection):
    """[architecture]: the networks' size. (Not [model]: TOML can't have both `model = "gan"` and a
    [model] table.) hidden: the fully connected generator's hidden widths, any depth (gan, wgan, wgan_gp;
    the discriminator stays the thesis'); width: the convolutional models' base width, their generator's
    channels and their discriminator's widest block (dcgan, sngan; the discriminator's blocks have width/8,
    /4, /2 and width channels, so a multiple of 8); channel_base, channel_max, mapping_layers and
    mbstd_group: StyleGAN2's. None means the thesis' value (StyleGAN2: the reference's paper256)."""

    hidden: tuple[Annotated[StrictInt, Field(gt=0, le=MAX_WIDTH)], ...] | None = Field(None, min_length=1, strict=False)
    width: int | None = Field(None, ge=8, le=MAX_WIDTH, multiple_of=8)
    # StyleGAN2 (stylegan2): channels at resolution r are min(channel_base // r, channel_max); the mapping
    # network's depth; the discriminator's minibatch-std group
    channel_base: int | None = Field(None, ge=1, le=2**20)
    channel_max: int | None = Field(None, ge=1, le=MAX_WIDTH)
    mapping_layers: int | None = Field(None, ge=1, le=64)
    mbstd_group: int | None = Field(None, ge=1, le=MAX_IMAGES)


class DuringTraining(_SpecSection):
    """[eval.during]: the cheaper measurement of checkpoints while training runs (every [eval] every
    epochs), in the final measurement's feature space (weights, dims, normalize, real set) so the values
    follow one curve; fewer images, so they are not comparable to the final value or to published FID.
    1000 images and one repeat cost about a third of one thesis-sized repeat (docs/evaluation.md)."""

    n_generated: int = Field(1000, ge=2, le=MAX_IMAGES)
    repeats: int = Field(1, ge=1, le=MAX_COUNT)
    kid: bool = False
    frd: bool = False


class EvalSection(_SpecSection):
    """What is measured at the end of training, and how. The FID defaults are the thesis' sizes (3 x 3000
    generated vs the whole real set, 2048-d, standard weights); its exact protocol also needs
    normalize = "per_image_minmax" (jobs/thesis.sweep.toml sets it). measure = false: nothing is measured
    at the end of training, neither FID nor KID nor FRD (measure later with `heartjobs evaluate RUN`); the
    key was called `fid` first, and `fid = false` still says the same."""

    # What is left out of a measurement's identity (the spec hash, a settings hash): where copies of the
    # measured images go, what is measured on the way, and which other sets are measured besides (each
    # such measurement carries its set's content hash in its own settings hash), not what is measured at
    # the end against the run's own set.
    # How FRD's features are computed is left out too: both backends give the same values within 1e-9 per
    # feature (tests/test_radiomics_torch.py); the backend is recorded in every result.
    NOT_MEASURED: ClassVar[tuple[str, ...]] = (
        "save_images",
        "every",
        "during",
        "keep_best",
        "against",
        "frd_backend",
    )

    measure: bool = Field(True, validation_alias=AliasChoices("measure", "fid"))
    n_generated: int = Field(3000, ge=2, le=MAX_IMAGES)
    repeats: int = Field(3, ge=1, le=MAX_COUNT)
    dims: FeatureDims = 2048
    batch_size: int = Field(100, ge=1, le=MAX_IMAGES)
    weights: str = "standard"  # standard | untrained | a path to an FID Inception state dict
    # fixed: [-1, 1] -> 0..255 for every image; per_image_minmax: each image stretched to its own
    # min..max, as the thesis' save_image(normalize=True) did before pytorch-fid.
    normalize: Normalize = "fixed"
    kid: bool = True
    kid_subsets: int = Field(100, ge=1, le=MAX_COUNT)
    kid_subset_size: int = Field(1000, ge=2, le=MAX_IMAGES)
    n_real: int | None = Field(None, ge=2, le=MAX_IMAGES)  # None: the whole prepared set (FID, KID and FRD)
    seed: int = Field(0, ge=0, le=MAX_SEED)  # repeat r uses seed + r
    # Frechet Radiomics Distance (frd-score, v1) on the first frd_n images of each repeat (at most
    # n_generated); 1000 keeps the covariance of its ~400 features full rank (docs/evaluation.md).
    frd: bool = True
    frd_n: int = Field(1000, ge=2, le=MAX_IMAGES)
    # torch: FRD's features in batches on the job's device (equal to pyradiomics within 1e-9); pyradiomics:
    # frd-score's extractor itself, one image per CPU (the reference; 10x slower on 2 cores at 256 px).
    frd_backend: FrdBackend = "torch"
    # Leave out the feature columns whose real-set values are round-off (radiomics.degenerate_columns) before
    # FRD; the value is then not comparable to published FRD v1 values (docs/evaluation.md).
    frd_drop_degenerate: bool = False
    # The feature network of FID, KID, PRDC and feature-space memorisation: "inception" (pytorch-fid's) or
    # "radimagenet" (RadImageNet's ResNet-50, 2048-d; weights = the path of a file the user supplies)
    features: FeatureNetwork = "inception"
    # Fidelity and diversity apart (docs/evaluation.md, "Fidelity, diversity, memorisation"): precision,
    # recall, density and coverage with k nearest neighbours, in the feature network's space and (with frd)
    # the radiomic one; MS-SSIM between ms_ssim_pairs random pairs of generated and of real images (the
    # first frd_n of each repeat); memorisation: the share of those images nearer a training slice than the
    # nearest memorisation_quantile of real slices come, in pixels, the feature network's and the radiomic space.
    prdc: bool = True
    prdc_k: int = Field(5, ge=1, le=MAX_COUNT)
    ms_ssim: bool = True
    ms_ssim_pairs: int = Field(1000, ge=1, le=MAX_IMAGES)
    memorisation: bool = True
    # below 0.2: a run is flagged when more than 5 x this share of its images lie below the threshold
    memorisation_quantile: float = Field(0.01, gt=0, lt=0.2)
    # Write the images each repeat measured (and the real ones) as PNG into the run's eval_images/.
    save_images: bool = False
    # Measure the checkpoint every N epochs during training (and the last) with [eval.during]'s settings,
    # into metrics.jsonl; None: only at the end. keep_best: keep the best-measured checkpoint as best.pt.
    every: int | None = Field(None, ge=1, le=MAX_COUNT)
    during: DuringTraining = DuringTraining()
    keep_best: bool = True
    # Other prepared sets (held-out hearts) the final generator is also measured against at the end of
    # training, with these settings, each into evals/ (never fid.json, a metric curve or best.pt).
    against: tuple[Annotated[Path, Field(strict=False)], ...] = Field((), strict=False)

    def during_settings(self) -> EvalSection:
        """The settings of a measurement during training: these, with [eval.during]'s sizes and metrics."""
        return self.model_copy(update={**self.during.model_dump(), "measure": True, "save_images": False})

    @model_validator(mode="before")
    @classmethod
    def _one_name_for_measure(cls, data: Any) -> Any:
        if isinstance(data, dict) and "measure" in data and "fid" in data:
            raise ValueError("say `measure` (or its first name, `fid`), not both")
        return data

    @field_validator("against")
    @classmethod
    def _against_paths(cls, v: tuple[Path, ...]) -> tuple[Path, ...]:
        for path in v:
            _plain_path(path)
        if len(set(v)) != len(v):
            raise ValueError("name each prepared set once")
        return v

    @model_validator(mode="after")
    def _against_is_measured(self) -> EvalSection:
        if self.against and not self.measure:
            raise _FieldError(("eval", "against"), "measured at the end of training, which measure = false turns off")
        return self

    @model_validator(mode="after")
    def _radimagenet_weights(self) -> EvalSection:
        if self.features == "radimagenet":
            if self.weights in ("standard", "untrained"):
                raise _FieldError(
                    ("eval", "weights"),
                    'features = "radimagenet" needs the path of RadImageNet\'s ResNet-50 weights file '
                    '(heartjobs cannot download it: docs/evaluation.md, "RadImageNet")',
                )
            if self.dims != 2048:
                raise _FieldError(("eval", "dims"), "RadImageNet's ResNet-50 gives 2048 features; leave dims at 2048")
        return self

    @field_validator("weights")
    @classmethod
    def _weights_value(cls, v: str) -> str:
        if not v:
            raise ValueError('use "standard", "untrained" or a path to a weights file')
        return _plain_path(v)


class OutputSection(_SpecSection):
    root: Path = Field(Path("artifacts"), strict=False)
    # TensorBoard event files in each run folder (losses, metrics, sample grids); needs the tensorboard package
    tensorboard: bool = False

    _root = field_validator("root")(_plain_path)


class JobSpec(_SpecSection):
    """A job spec as written in TOML."""

    name: str
    model: ModelName
    data: DataSection
    train: TrainSection = TrainSection()
    architecture: ArchitectureSection = ArchitectureSection()
    eval: EvalSection = EvalSection()
    output: OutputSection = OutputSection()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names the artifact folder)")
        if is_report_output(v):
            raise ValueError(f"{v} is reserved: `heartjobs report` writes a file of that name beside the job folders")
        if v == LADDER_FOLDER:
            raise ValueError(f"{v} is reserved: the validity ladder's folder beside the job folders (artifacts/{v})")
        return v

    @model_validator(mode="after")
    def _options_fit_the_model(self) -> JobSpec:
        family = FAMILIES[self.model]
        for key in FAMILY_KEYS:
            if key not in family.defaults and getattr(self.train, key) is not None:
                having = [m for m in MODELS if key in FAMILIES[m].defaults]
                why = f" (it trains with {OPTIMIZER_NAMES[family.defaults['optimizer']]})" if key == "betas" else ""
                raise _FieldError(("train", key), f"applies to {', '.join(having)}, not {self.model}{why}")
        for key in ARCHITECTURE_DEFAULTS:
            if key not in family.knobs and getattr(self.architecture, key) is not None:
                having = [m for m in MODELS if key in FAMILIES[m].knobs]
                raise _FieldError(("architecture", key), f"applies to {', '.join(having)}, not {self.model}")
        augment = self.train.augment or train_defaults(self.model)["augment"]
        for key in ("ada_target", "ada_kimg", "ada_p"):
            if augment != "ada" and getattr(self.train, key) is not None:
                raise _FieldError(("train", key), f'applies with augment = "ada", not {augment!r}')
        if augment == "ada" and family.ada_signal is None and self.train.ada_p is None:
            raise _FieldError(
                ("train", "augment"),
                f"ADA's adaptive p reads the sign of D's scores on real images, which a critic's ({self.model}) "
                "does not have; give a fixed train.ada_p",
            )
        if not family.precision_switches:
            for key in ("compile", "bf16"):
                if getattr(self.train, key):
                    raise _FieldError(("train", key), f"not offered for {self.model} (float32 throughout)")
        if self.train.phase_conv and not family.upsample_conv:
            having = [m for m in MODELS if FAMILIES[m].upsample_conv]
            raise _FieldError(
                ("train", "phase_conv"),
                f"applies to {', '.join(having)} (nearest x2 upsampling then a 3x3 convolution), not {self.model}",
            )
        return self


class _FieldError(ValueError):
    def __init__(self, loc: tuple[str, ...], msg: str):
        super().__init__(msg)
        self.loc = loc


class ResolvedTrain(_Strict):
    epochs: int
    batch_size: int
    optimizer: Literal["adam", "rmsprop"]
    lr: float
    betas: tuple[float, float] | None = None
    latent_dim: int
    n_critic: int | None = None
    clip_value: float | None = None
    seed: int
    sample_every: int
    checkpoint_every: int
    keep_checkpoints: int
    device: Device
    batchnorm_eps: float
    tf32: bool | Literal["convolutions"]
    compile: bool
    bf16: bool
    # defaults for resolved specs recorded before these keys existed
    gp_lambda: float | None = None
    augment: str = "none"
    phase_conv: bool = False
    r1_gamma: float | None = None
    pl_weight: float | None = None
    style_mixing: float | None = None
    ema_kimg: float | None = None
    ema_rampup: float | None = None
    ada_target: float = 0.6
    ada_kimg: float = 500
    ada_p: float | None = None


class ResolvedArchitecture(_Strict):
    """The model's knob filled in (hidden for the fully connected models, width for the convolutional
    ones), the other None; a resolved spec recorded before [architecture] existed had the thesis' widths."""

    hidden: tuple[int, ...] | None = None
    width: int | None = None
    channel_base: int | None = None
    channel_max: int | None = None
    mapping_layers: int | None = None
    mbstd_group: int | None = None


class ResolvedData(_Strict):
    prepared: Path
    content_hash: str
    count: int
    size: int
    channels: int


class ResolvedSpec(_Strict):
    """Every value filled in: the spec's own, the model's defaults, and facts about the data."""

    name: str
    model: ModelName
    data: ResolvedData
    train: ResolvedTrain
    architecture: ResolvedArchitecture = ResolvedArchitecture()
    eval: EvalSection
    output: OutputSection

    def hash_payload(self) -> dict:
        """What the job's result depends on: not where the data or the outputs live, nor how often
        samples and checkpoints are written or how many are kept."""
        payload = self.model_dump(mode="json")
        payload.pop("output")
        payload["data"].pop("prepared")
        for bookkeeping in BOOKKEEPING_KEYS:
            payload["train"].pop(bookkeeping)
        for key in EvalSection.NOT_MEASURED:
            payload["eval"].pop(key)
        payload["eval"]["fid"] = payload["eval"].pop("measure")  # hashed under its first name
        for section, defaults in LATER_DEFAULTS.items():
            values = payload[section]
            for key, default in defaults.items():
                if key in values and (values[key] is None or values[key] == default):
                    values.pop(key)
            if not values:
                payload.pop(section)
        return payload

    @property
    def spec_hash(self) -> str:
        return sha256_json(self.hash_payload())[:16]

    @property
    def run_root(self) -> Path:
        return self.output.root / self.name

    def networks(self) -> Networks:
        """What its networks are built from (heartjobs.models.build_networks)."""
        return Networks(
            model=self.model,
            size=self.data.size,
            channels=self.data.channels,
            latent_dim=self.train.latent_dim,
            batchnorm_eps=self.train.batchnorm_eps,
            hidden=self.architecture.hidden,
            width=self.architecture.width,
            channel_base=self.architecture.channel_base,
            channel_max=self.architecture.channel_max,
            mapping_layers=self.architecture.mapping_layers,
            mbstd_group=self.architecture.mbstd_group,
        )


def did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
