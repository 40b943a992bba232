"""StyleGAN2's generator and discriminator (NVlabs/stylegan2-ada-pytorch, commit d72cc7d) built from one
configuration: the reference's `paper256` and `auto` settings for a given image size, or any other.

ops: FIR resampling and bias/activation; layers: the equalised-learning-rate layers and the modulated
convolution; networks: the mapping, synthesis and discriminator networks.
"""

from __future__ import annotations

from dataclasses import dataclass

from heartjobs.models.stylegan2.layers import modulated_conv2d
from heartjobs.models.stylegan2.networks import Discriminator, Generator, MappingNetwork, SynthesisNetwork

__all__ = [
    "Discriminator",
    "Generator",
    "MappingNetwork",
    "StyleGAN2Config",
    "SynthesisNetwork",
    "build_stylegan2",
    "modulated_conv2d",
]


@dataclass(frozen=True)
class StyleGAN2Config:
    """What sizes StyleGAN2's networks. The defaults are the reference's paper256 (train.py: fmaps 0.5,
    so channel_base 0.5 * 32768; 8 mapping layers; minibatch-std groups of 8).

    size: image resolution (a power of 2, >= 8); channels: image channels; mapping_layers: the mapping
    network's depth; channels at resolution r: min(channel_base // r, channel_max); mbstd_group and
    mbstd_channels: the discriminator's minibatch standard deviation; conv_clamp: clamp of the
    convolutions' outputs (the reference's 256 goes with mixed precision); num_fp16_res: how many of the
    highest resolutions run in float16 (the reference's 4; 0: float32 throughout)."""

    size: int
    channels: int = 1
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 16384
    channel_max: int = 512
    mbstd_group: int = 8
    mbstd_channels: int = 1
    conv_clamp: float | None = None
    num_fp16_res: int = 0

    @classmethod
    def paper256(cls, size: int = 256, channels: int = 1) -> StyleGAN2Config:
        """The reference's paper256: fmaps 0.5, mapping 8, mbstd group 8."""
        return cls(size=size, channels=channels)

    @classmethod
    def auto(cls, size: int = 256, channels: int = 1) -> StyleGAN2Config:
        """The reference's auto on one GPU: fmaps 1 from 512 px on, else 0.5; mapping 2; mbstd group
        min(batch, 4), which is 4 at every size up to 1024 (its batch is min(4096 // size, 32) >= 4)."""
        return cls(
            size=size, channels=channels, mapping_layers=2, channel_base=32768 if size >= 512 else 16384, mbstd_group=4
        )

    def __post_init__(self) -> None:
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"size {self.size}: must be a power of 2, at least 8")
        for name in ("channels", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "mbstd_group"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be at least 1")
        if self.mbstd_channels < 0 or self.num_fp16_res < 0:
            raise ValueError(f"mbstd_channels {self.mbstd_channels} and num_fp16_res {self.num_fp16_res}: must be >= 0")
        if self.mbstd_channels and min(self.channel_base // 4, self.channel_max) % self.mbstd_channels:
            raise ValueError(f"mbstd_channels {self.mbstd_channels}: must divide the 4x4 channels")
        if self.conv_clamp is not None and self.conv_clamp < 0:
            raise ValueError(f"conv_clamp {self.conv_clamp}: must be >= 0 or None")


def build_stylegan2(config: StyleGAN2Config) -> tuple[Generator, Discriminator]:
    """(generator, discriminator), freshly initialised from torch's global RNG on the default device (under
    `torch.device("meta")` nothing is allocated: for counting parameters). No labels; the generator holds
    no EMA copy, so its parameters are the trainable ones."""
    c = config
    generator = Generator(
        z_dim=c.z_dim,
        c_dim=0,
        w_dim=c.w_dim,
        img_resolution=c.size,
        img_channels=c.channels,
        mapping_kwargs={"num_layers": c.mapping_layers},
        synthesis_kwargs={
            "channel_base": c.channel_base,
            "channel_max": c.channel_max,
            "num_fp16_res": c.num_fp16_res,
            "conv_clamp": c.conv_clamp,
        },
    )
    discriminator = Discriminator(
        c_dim=0,
        img_resolution=c.size,
        img_channels=c.channels,
        channel_base=c.channel_base,
        channel_max=c.channel_max,
        num_fp16_res=c.num_fp16_res,
        conv_clamp=c.conv_clamp,
        epilogue_kwargs={"mbstd_group_size": c.mbstd_group, "mbstd_num_channels": c.mbstd_channels},
    )
    return generator, discriminator
