"""Job specs: a TOML file, validated strictly with pydantic, resolved against the model's defaults.

A spec names a job, a model and a prepared set; everything it leaves out comes from the defaults the
thesis used for that model (for the models beyond the thesis, their papers' defaults), and the image
size and channels come from the prepared set itself. The resolved spec has every value filled in, and
its hash identifies the job's configuration.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from heartjobs.choices import Device, FeatureDims, Normalize
from heartjobs.errors import HeartjobsError
from heartjobs.hashing import sha256_json
from heartjobs.models import FAMILIES, MODELS, Networks
from heartjobs.models.family import THESIS_HIDDEN, THESIS_WIDTH

ModelName = Literal[MODELS]  # type: ignore[valid-type]  # the registry's names, in its order
MAX_TOML_BYTES = 1 << 20  # a spec or sweep file is a few hundred bytes; read no more than this


def _quoted(names: list[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


MODEL_CHOICES = (
    f"{_quoted([m for m in MODELS if FAMILIES[m].thesis])} (the thesis' models), "
    f"or {_quoted([m for m in MODELS if not FAMILIES[m].thesis])} (beyond them)"
)
# DiffAugment's operations for one-channel images (Zhao et al. 2020 without the colour ones but brightness
# and contrast); [train] augment names them in the order they are applied. heartjobs.training.augment
# implements one function of each name (its import fails otherwise).
AUGMENTATIONS: tuple[str, ...] = ("translation", "cutout", "brightness", "contrast")
# [train] keys that only some families have among their defaults (betas: Adam's; n_critic, clip_value,
# gp_lambda: the critics'): each applies to the families that have it, and no other.
FAMILY_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(
        key for f in FAMILIES.values() for key in f.defaults if not all(key in g.defaults for g in FAMILIES.values())
    )
)
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
    # DiffAugment policy applied to every image the discriminator sees: "none", or AUGMENTATIONS' names.
    "augment": "none",
}
# The architectures' knobs ([architecture]) and their thesis values: the fully connected generator's hidden
# widths, and the convolutional models' base width (heartjobs.models builds the same by default).
ARCHITECTURE_DEFAULTS: dict[str, Any] = {"hidden": THESIS_HIDDEN, "width": THESIS_WIDTH}


def train_defaults(model: str) -> dict[str, Any]:
    """Every [train] value a job of `model` has unless its spec says otherwise: the common ones, then its
    family's (the thesis' for its models, their papers' beyond them)."""
    return COMMON_DEFAULTS | dict(FAMILIES[model].defaults)


def architecture_defaults(model: str) -> dict[str, Any]:
    """The [architecture] knob `model` has, at the thesis' value ({"hidden": ...} or {"width": ...})."""
    knob = FAMILIES[model].knob
    return {knob: ARCHITECTURE_DEFAULTS[knob]}


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
LATER_DEFAULTS: dict[str, dict[str, Any]] = {
    "eval": {"frd": True, "frd_n": 1000},
    "train": {"gp_lambda": None, "augment": "none"},
    "architecture": {"hidden": list(ARCHITECTURE_DEFAULTS["hidden"]), "width": ARCHITECTURE_DEFAULTS["width"]},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Strict):
    prepared: Path


class TrainSection(_Strict):
    """What a spec may say about training; None means "the model's default"."""

    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=2)
    lr: float | None = Field(None, gt=0)
    betas: tuple[float, float] | None = None
    latent_dim: int | None = Field(None, ge=1)
    n_critic: int | None = Field(None, ge=1)
    clip_value: float | None = Field(None, gt=0)
    seed: int | None = Field(None, ge=0)
    sample_every: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    keep_checkpoints: int | None = Field(None, ge=1)
    device: Device | None = None
    batchnorm_eps: float | None = Field(None, gt=0)
    tf32: bool | Literal["convolutions"] | None = None
    compile: bool | None = None
    bf16: bool | None = None
    # WGAN-GP's penalty weight (0: an unconstrained critic, the ablation)
    gp_lambda: float | None = Field(None, ge=0)
    augment: str | None = None

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not all(0 <= b < 1 for b in v):
            raise ValueError("both betas must be in [0, 1)")
        return v

    @field_validator("augment")
    @classmethod
    def _augment_policy(cls, v: str | None) -> str | None:
        """ "none", or AUGMENTATIONS' names comma-separated (spaces ignored), each at most once; written back
        without spaces, so one policy has one spelling (and one hash)."""
        if v is None:
            return v
        names = [name.strip() for name in v.split(",")]
        if names == ["none"]:
            return "none"
        choices = ", ".join(AUGMENTATIONS)
        for name in names:
            if name == "none":
                raise ValueError('"none" stands alone')
            if name not in AUGMENTATIONS:
                raise ValueError(
                    f"unknown augmentation {name!r}{_suggest(name, list(AUGMENTATIONS))}; use none or {choices}"
                )
        if len(set(names)) != len(names):
            raise ValueError("name each augmentation once")
        return ",".join(names)


class ArchitectureSection(_Strict):
    """[architecture]: the networks' size. (Not [model]: TOML can't have both `model = "gan"` and a
    [model] table.) hidden: the fully connected generator's hidden widths, any depth (gan, wgan, wgan_gp;
    the discriminator stays the thesis'); width: the convolutional models' base width, their generator's
    channels and their discriminator's widest block (dcgan, sngan; the discriminator's blocks have width/8,
    /4, /2 and width channels, so a multiple of 8). None means the thesis' value."""

    hidden: tuple[PositiveInt, ...] | None = Field(None, min_length=1)
    width: int | None = Field(None, ge=8, multiple_of=8)


class DuringTraining(_Strict):
    """[eval.during]: the cheaper measurement of checkpoints while training runs (every [eval] every
    epochs), in the final measurement's feature space (weights, dims, normalize, real set) so the values
    follow one curve; fewer images, so they are not comparable to the final value or to published FID.
    1000 images and one repeat cost about a third of one thesis-sized repeat (docs/evaluation.md)."""

    n_generated: int = Field(1000, ge=2)
    repeats: int = Field(1, ge=1)
    kid: bool = False
    frd: bool = False


class EvalSection(_Strict):
    """What is measured at the end of training, and how. The FID defaults are the thesis' sizes (3 x 3000
    generated vs the whole real set, 2048-d, standard weights); its exact protocol also needs
    normalize = "per_image_minmax" (jobs/thesis.sweep.toml sets it). measure = false: nothing is measured
    at the end of training, neither FID nor KID nor FRD (measure later with `heartjobs evaluate RUN`); the
    key was called `fid` first, and `fid = false` still says the same."""

    # What is left out of a measurement's identity (the spec hash, a settings hash): where copies of the
    # measured images go and what is measured on the way, not what is measured at the end.
    NOT_MEASURED: ClassVar[tuple[str, ...]] = ("save_images", "every", "during", "keep_best")

    measure: bool = Field(True, validation_alias=AliasChoices("measure", "fid"))
    n_generated: int = Field(3000, ge=2)
    repeats: int = Field(3, ge=1)
    dims: FeatureDims = 2048
    batch_size: int = Field(100, ge=1)
    weights: str = "standard"  # standard | untrained | a path to an FID Inception state dict
    # fixed: [-1, 1] -> 0..255 for every image; per_image_minmax: each image stretched to its own
    # min..max, as the thesis' save_image(normalize=True) did before pytorch-fid.
    normalize: Normalize = "fixed"
    kid: bool = True
    kid_subsets: int = Field(100, ge=1)
    kid_subset_size: int = Field(1000, ge=2)
    n_real: int | None = Field(None, ge=2)  # None: the whole prepared set (FID, KID and FRD)
    seed: int = Field(0, ge=0)  # repeat r uses seed + r
    # Frechet Radiomics Distance (frd-score, v1) on the first frd_n images of each repeat (at most
    # n_generated); 1000 keeps the covariance of its ~400 features full rank (docs/evaluation.md).
    frd: bool = True
    frd_n: int = Field(1000, ge=2)
    # Write the images each repeat measured (and the real ones) as PNG into the run's eval_images/.
    save_images: bool = False
    # Measure the checkpoint every N epochs during training (and the last) with [eval.during]'s settings,
    # into metrics.jsonl; None: only at the end. keep_best: keep the best-measured checkpoint as best.pt.
    every: int | None = Field(None, ge=1)
    during: DuringTraining = DuringTraining()
    keep_best: bool = True

    def during_settings(self) -> EvalSection:
        """The settings of a measurement during training: these, with [eval.during]'s sizes and metrics."""
        return self.model_copy(update={**self.during.model_dump(), "measure": True, "save_images": False})

    @model_validator(mode="before")
    @classmethod
    def _one_name_for_measure(cls, data: Any) -> Any:
        if isinstance(data, dict) and "measure" in data and "fid" in data:
            raise ValueError("say `measure` (or its first name, `fid`), not both")
        return data

    @field_validator("weights")
    @classmethod
    def _weights_value(cls, v: str) -> str:
        if not v:
            raise ValueError('use "standard", "untrained" or a path to a weights file')
        return v


class OutputSection(_Strict):
    root: Path = Path("artifacts")
    # TensorBoard event files in each run folder (losses, metrics, sample grids); needs the tensorboard package
    tensorboard: bool = False


class JobSpec(_Strict):
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
            if key != family.knob and getattr(self.architecture, key) is not None:
                having = [m for m in MODELS if FAMILIES[m].knob == key]
                raise _FieldError(("architecture", key), f"applies to {', '.join(having)}, not {self.model}")
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


class ResolvedArchitecture(_Strict):
    """The model's knob filled in (hidden for the fully connected models, width for the convolutional
    ones), the other None; a resolved spec recorded before [architecture] existed had the thesis' widths."""

    hidden: tuple[int, ...] | None = None
    width: int | None = None


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
        )


def configuration_differences(recorded: dict, spec: ResolvedSpec) -> list[str]:
    """The values behind two spec hashes that differ ("train.lr: 0.0002 -> 0.001"), between a resolved
    spec as recorded (a dict) and `spec`; what a refused resume names."""
    try:
        old = ResolvedSpec.model_validate(recorded).hash_payload()
    except ValidationError:
        old = recorded
    old_flat, new_flat = _flatten(old), _flatten(spec.hash_payload())
    return [
        f"{key}: {old_flat.get(key, '(none)')} -> {new_flat.get(key, '(none)')}"
        for key in sorted(old_flat.keys() | new_flat.keys())
        if old_flat.get(key) != new_flat.get(key)
    ]


def configuration_key(recorded: dict, leave_out: tuple[str, ...] = ("seed",)) -> str:
    """What a run computed apart from its name and the [train] and [architecture] values in `leave_out`,
    hashed: runs of one configuration with different seeds share it (a resolved spec as recorded, a dict;
    one from older code is hashed as is)."""
    try:
        payload = ResolvedSpec.model_validate(recorded).hash_payload()
    except ValidationError:
        payload = {k: (dict(v) if isinstance(v, dict) else v) for k, v in recorded.items()}
    payload.pop("name", None)
    for section in ("train", "architecture"):
        if isinstance(payload.get(section), dict):
            payload[section] = {k: v for k, v in payload[section].items() if k not in leave_out}
    if payload.get("architecture") == {}:
        payload.pop("architecture")  # as hash_payload() leaves it out at the thesis' widths
    return sha256_json(payload)[:16]


def _flatten(table: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section_fields(loc: tuple) -> list[str]:
    sections = {
        "train": TrainSection,
        "data": DataSection,
        "architecture": ArchitectureSection,
        "eval": EvalSection,
        "output": OutputSection,
    }
    model = sections.get(loc[0]) if len(loc) > 1 else JobSpec
    return list(model.model_fields) if model else []


def _describe(error: dict) -> str:
    loc = tuple(str(p) for p in error["loc"])
    field = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown key{_suggest(loc[-1], _section_fields(loc))}"
    if error["type"] == "missing":
        return f"{field}: required key is missing"
    ctx_error = error.get("ctx", {}).get("error")
    if isinstance(ctx_error, _FieldError):
        return f"{'.'.join(ctx_error.loc)}: {ctx_error}"
    if loc == ("model",) and error["type"] == "literal_error":
        suggestion = _suggest(str(error["input"]), list(MODELS))
        return f"model: Input should be {MODEL_CHOICES}{suggestion} (got {error['input']!r})"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{field}: {msg} (got {error['input']!r})" if "input" in error and loc else f"{field}: {msg}"


def read_toml(path: Path) -> dict:
    """A TOML file's table; unreadable, non-UTF-8 or malformed files become a one-line HeartjobsError."""
    try:
        if not Path(path).exists():
            raise HeartjobsError(f"{path}: no such file")
        if not Path(path).resolve().is_file():  # a FIFO would hang, a device read without end
            raise HeartjobsError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_TOML_BYTES + 1)
        if len(data) > MAX_TOML_BYTES:
            raise HeartjobsError(f"{path}: larger than {MAX_TOML_BYTES // 1024} KiB; not a job spec")
        text = data.decode("utf-8")
    except OSError as exc:
        raise HeartjobsError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise HeartjobsError(f"{path}: not a UTF-8 text file (TOML must be UTF-8)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = ""
        if re.search(r"^\s*\[model\]", text, re.MULTILINE):  # the natural guess for the networks' knobs
            hint = " ([model] clashes with the key `model`; the networks' knobs go in [architecture])"
        raise HeartjobsError(f"{path}: TOML syntax error: {exc}{hint}") from None


def parse_spec(path: Path) -> JobSpec:
    """Read and validate one spec file; every problem becomes a one-line HeartjobsError."""
    path = Path(path)
    raw = read_toml(path)
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise HeartjobsError("\n".join(f"{path}: {_describe(e)}" for e in exc.errors())) from None


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and 2 ** int(math.log2(n)) == n


def resolve(spec: JobSpec, path: Path) -> ResolvedSpec:
    """Fill in the model's defaults and the prepared set's facts; check the combination."""
    from heartjobs.store.prepared import PreparedSet

    try:
        prepared = PreparedSet.open(spec.data.prepared)
    except HeartjobsError as exc:
        raise HeartjobsError(f"{path}: data.prepared: {exc}") from None
    size, channels = prepared.size, prepared.channels
    if prepared.count < 2:
        raise HeartjobsError(f"{path}: data.prepared: {prepared.count} image; training needs at least 2")
    if size < 16 or not _is_power_of_two(size):
        raise HeartjobsError(f"{path}: data.prepared: image size {size} must be a power of two >= 16")
    family = FAMILIES[spec.model]
    if family.convolutional and size % 16:
        raise HeartjobsError(f"{path}: data.prepared: {spec.model} needs an image size divisible by 16, got {size}")

    train = train_defaults(spec.model) | spec.train.model_dump(exclude_none=True)
    knob = architecture_defaults(spec.model) | spec.architecture.model_dump(exclude_none=True)
    architecture = ResolvedArchitecture(**knob)
    return ResolvedSpec(
        name=spec.name,
        model=spec.model,
        data=ResolvedData(
            prepared=spec.data.prepared,
            content_hash=prepared.content_hash,
            count=prepared.count,
            size=size,
            channels=channels,
        ),
        train=ResolvedTrain(**train),
        architecture=architecture,
        eval=spec.eval,
        output=spec.output,
    )


def load_spec(path: Path) -> ResolvedSpec:
    """Parse, validate and resolve a spec file."""
    return resolve(parse_spec(path), Path(path))
