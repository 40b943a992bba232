"""What a model family is: its name, the module with its networks and its training step, the optimiser
and schedule it trains with by default, and its architecture knobs. Torch-free, so that reading a spec
does not import torch; a family's module is imported when its networks are built or its step runs."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

# The thesis' network sizes: the fully connected generator's hidden widths ([architecture] hidden) and the
# convolutional models' base width ([architecture] width).
THESIS_HIDDEN: tuple[int, ...] = (128, 256, 512, 1024)
THESIS_WIDTH = 128
# StyleGAN2's [architecture] knobs at the reference's paper256 (fmaps 0.5: channel_base 16384; channel_max 512;
# an 8-layer mapping network; minibatch-std groups of 8)
STYLEGAN2_PAPER256: dict[str, int] = {"channel_base": 16384, "channel_max": 512, "mapping_layers": 8, "mbstd_group": 8}


@dataclass(frozen=True)
class Networks:
    """What it takes to build a family's networks (and to rebuild a saved generator): the one input of
    every builder. hidden and width None: the thesis' widths."""

    model: str
    size: int
    channels: int
    latent_dim: int
    batchnorm_eps: float = 0.8
    hidden: tuple[int, ...] | None = None
    width: int | None = None
    # StyleGAN2's knobs (None: the reference's paper256 values, ARCHITECTURE_DEFAULTS)
    channel_base: int | None = None
    channel_max: int | None = None
    mapping_layers: int | None = None
    mbstd_group: int | None = None

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        """The fully connected generator's hidden widths: the spec's, else the thesis'."""
        return THESIS_HIDDEN if self.hidden is None else tuple(self.hidden)

    @property
    def base_width(self) -> int:
        """The convolutional models' base width: the spec's, else the thesis'."""
        return THESIS_WIDTH if self.width is None else self.width


class StepContext(Protocol):
    """What a training step may use of the trainer (heartjobs.training.loop.Trainer): the networks, their
    optimisers, the resolved [train] values, and the trainer's seeded noise, generation and scoring (which
    apply its precision, compilation and augmentation), so a step holds only its family's losses and order."""

    G: nn.Module
    D: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    noise_gen: torch.Generator
    device: torch.device
    train: Any  # heartjobs.spec.schema.ResolvedTrain

    def noise(self, n: int) -> torch.Tensor: ...
    def progress(self, index: int) -> tuple[int, int]: ...
    def observe_real(self, scores: torch.Tensor) -> None: ...
    def generate(self, z: torch.Tensor) -> torch.Tensor: ...
    def score(self, images: torch.Tensor, disc: nn.Module | None = None) -> torch.Tensor: ...
    def labels(self, n: int) -> tuple[torch.Tensor, torch.Tensor]: ...


# One batch's step: (context, real images in [-1, 1], batch index in the epoch) -> (D loss, G loss or None
# on a batch without a generator step), both detached tensors on the device.
Step = Callable[["StepContext", "torch.Tensor", int], tuple["torch.Tensor", "torch.Tensor | None"]]


@dataclass(frozen=True)
class ModelFamily:
    """One model family, declared once in heartjobs.models.FAMILIES.

    module: the module that defines `build(networks: Networks) -> (generator, discriminator)` and `step`
    (a Step). defaults: the [train] values the family trains with unless a spec says otherwise (optimizer
    and lr always; betas for Adam; the family's own keys such as n_critic): a [train] key that some family
    has among its defaults applies only to the families that have it (a common key there is only this
    family's default). knobs: the [architecture] keys that size its networks. convolutional: its networks
    are convolutional (trained channels-last unless channels_last says otherwise; the image size must be
    divisible by 16). upsample_conv: its generator resizes by nearest x2 then a 3x3 convolution, so [train]
    phase_conv applies (heartjobs.models.phase_conv). ada_signal: what the sign of D's score on a real
    image means for ADA's overfitting heuristic: "logit" (its sign), "probability" (a sigmoid output: the
    sign of p - 1/2), or None (a critic's score has no fixed sign: only a fixed ada_p). reg_intervals: lazy
    regularisation's (G, D) intervals, for which the trainer scales each optimiser's lr and betas as the
    reference does. precision_switches: whether [train] compile and bf16 apply."""

    name: str
    summary: str
    thesis: bool  # one of the thesis' models (or beyond them)
    module: str
    defaults: Mapping[str, Any]
    knobs: tuple[str, ...]
    convolutional: bool
    upsample_conv: bool = False
    channels_last: bool | None = None  # None: as convolutional
    ada_signal: Literal["logit", "probability"] | None = "logit"
    reg_intervals: tuple[int, int] | None = None
    precision_switches: bool = True

    def implementation(self) -> ModuleType:
        return importlib.import_module(self.module)

    def build(self, networks: Networks) -> tuple[nn.Module, nn.Module]:
        """(generator, discriminator), freshly initialised (the torch default device's)."""
        return self.implementation().build(networks)

    @property
    def step(self) -> Step:
        return self.implementation().step
