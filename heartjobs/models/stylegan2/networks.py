"""StyleGAN2's networks (Karras et al. 2020), as NVlabs/stylegan2-ada-pytorch builds them
(training/networks.py, commit d72cc7d): the mapping network, the "skip" synthesis network and the "resnet"
discriminator, in plain PyTorch.

Same layers, parameter names and shapes, initialisation (unit-normal weights, scaled at run time: the
equalised learning rate) and arithmetic as the reference, so the parameter counts equal its. What is left
out: class conditioning (c_dim 0 only; the c arguments stay, for the reference's call signatures), the
generator's "orig"/"resnet" and the discriminator's "orig"/"skip" architectures, Freeze-D, and
channels-last memory formats (a GPU speed choice). num_fp16_res and conv_clamp work as in the reference
(mixed precision per block) but default to float32 and no clamp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from heartjobs.models.stylegan2.layers import (
    FIR,
    Conv2dLayer,
    FullyConnectedLayer,
    modulated_conv2d,
    normalize_2nd_moment,
)
from heartjobs.models.stylegan2.ops import ACTIVATIONS, bias_act, setup_filter, upsample2d


class MappingNetwork(nn.Module):
    """z (normalised to unit second moment) -> num_layers leaky-ReLU layers -> w, broadcast to num_ws
    copies; tracks the running mean of w (w_avg) while training, the centre truncation pulls towards."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ):
        super().__init__()
        if c_dim != 0:
            raise ValueError(f"c_dim {c_dim}: class conditioning is not supported (use 0)")
        if z_dim <= 0 or num_layers < 1:
            raise ValueError(f"z_dim {z_dim} and num_layers {num_layers}: must be >= 1")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim] + [layer_features] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        skip_w_avg_update: bool = False,
    ) -> torch.Tensor:
        """N x z_dim -> N x num_ws x w_dim (N x w_dim when num_ws is None). truncation_psi < 1 pulls the
        first truncation_cutoff ws (all when None) towards w_avg."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping input of shape {tuple(z.shape)}: must be N x {self.z_dim}")
        x = normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation needs w_avg: this mapping network does not track it")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """A modulated, demodulated 3x3 convolution (optionally upsampling by 2), plus per-pixel noise scaled by
    a learned strength, bias and leaky ReLU. Its weights have no run-time gain: demodulation normalises
    them."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = FIR,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True, gain: float = 1
    ) -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode {noise_mode!r}: use random, const or none")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=self.up == 1,
            fused_modconv=fused_modconv,
        )
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)


class ToRGBLayer(nn.Module):
    """A modulated 1x1 convolution to the image channels, not demodulated (the image keeps its scale)."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, conv_clamp: float | None = None
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the "skip" generator: the learned 4x4 constant (first block) or conv0 upsampling
    the previous features, conv1, and a ToRGB whose output is added to the upsampled image so far."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        resample_filter: Sequence[float] = FIR,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        **layer_kwargs,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, **layer_kwargs
        )
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        **layer_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        if fused_modconv is None:
            # the reference's choice: separate scaling while training (faster there), fused at inference
            fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        else:
            x = x.to(dtype=dtype)
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(dtype=torch.float32)
        img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (N x num_ws x w_dim) -> image (N x img_channels x img_resolution^2): one SynthesisBlock per
    resolution from 4 up, with min(channel_base // res, channel_max) channels at res. Each block reads
    num_conv ws of its own and shares its ToRGB's w with the next block's first convolution."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        **block_kwargs,
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution {img_resolution}: must be a power of 2, at least 4")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis input of shape {tuple(ws.shape)}: must be N x {self.num_ws} x {self.w_dim}")
        ws = ws.to(torch.float32)
        block_ws = []
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv
        x = img = None
        for res, cur_ws in zip(self.block_resolutions, block_ws, strict=True):
            x, img = getattr(self, f"b{res}")(x, img, cur_ws, **block_kwargs)
        return img


class Generator(nn.Module):
    """z -> image: G.mapping (z -> ws) then G.synthesis (ws -> image), each callable alone as in the
    reference. No labels: c is accepted, for the reference's signatures, and ignored."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **(synthesis_kwargs or {})
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **(mapping_kwargs or {})
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        **synthesis_kwargs,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    def mixed_ws(
        self, z: torch.Tensor, style_mixing_prob: float = 0.9, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The ws of the reference's training step (StyleGAN2Loss.run_G): with style_mixing_prob, the ws
        from a random cutoff in [1, num_ws) on come from a second latent (whose mapping leaves w_avg
        alone). Draws, as the reference does, a cutoff, a coin and the second latent whenever
        style_mixing_prob > 0; from `generator` if given, else torch's global RNG, on z's device."""
        ws = self.mapping(z, None)
        if style_mixing_prob <= 0:
            return ws
        cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1], generator=generator)
        coin = torch.rand([], device=ws.device, generator=generator)
        cutoff = torch.where(coin < style_mixing_prob, cutoff, torch.full_like(cutoff, ws.shape[1]))
        z2 = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
        ws2 = self.mapping(z2, None, skip_w_avg_update=True)
        # a mask, not ws[:, cutoff:] = ...: the same values, without reading cutoff back to the host
        mixed = (torch.arange(ws.shape[1], device=ws.device) >= cutoff).reshape(1, -1, 1)
        return torch.where(mixed, ws2, ws)


class DiscriminatorBlock(nn.Module):
    """One resolution of the "resnet" discriminator: fromrgb (top block only), conv0, conv1 downsampling
    by 2, plus a 1x1 downsampling skip without bias; both branches scaled by sqrt(1/2) so their sum keeps
    the variance."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = FIR,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
    ):
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels {in_channels}: must be 0 (top block) or tmp_channels {tmp_channels}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(
                img_channels, tmp_channels, kernel_size=1, activation=activation, conv_clamp=conv_clamp
            )
        self.conv0 = Conv2dLayer(
            tmp_channels, tmp_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.conv1 = Conv2dLayer(
            tmp_channels,
            out_channels,
            kernel_size=3,
            activation=activation,
            down=2,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
        )
        self.skip = Conv2dLayer(
            tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter
        )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, None]:
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        if x is not None:
            x = x.to(dtype=dtype)
        if self.in_channels == 0:
            y = self.fromrgb(img.to(dtype=dtype))
            x = x + y if x is not None else y
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x, None


class MinibatchStdLayer(nn.Module):
    """Appends num_channels feature maps: the standard deviation over each group of group_size samples,
    averaged over channels (in num_channels groups) and pixels. A batch smaller than the group is one group;
    one the group does not divide is grouped by its largest divisor below the group size."""

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        while n % g:  # an epoch's last, smaller batch (3,307 slices in 64s end with 43): the largest group that
            g -= 1  # divides it (the reference requires the batch to be divisible and never has such a batch)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # sample i is in group member i // (n/g), group i % (n/g)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])  # [n/g, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 end: minibatch std, a 3x3 convolution, a fully connected layer, one output score."""

    def __init__(
        self,
        in_channels: int,
        resolution: int,
        img_channels: int,
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.mbstd = (
            MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
            if mbstd_num_channels > 0
            else None
        )
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype=torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x)


class Discriminator(nn.Module):
    """image (N x img_channels x img_resolution^2) -> N x 1 raw scores (logits): DiscriminatorBlocks from
    img_resolution down to 8, then the epilogue at 4x4. No labels: c is ignored."""

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        block_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ):
        if c_dim != 0:
            raise ValueError(f"c_dim {c_dim}: class conditioning is not supported (use 0)")
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution {img_resolution}: must be a power of 2, at least 8")
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in [*self.block_resolutions, 4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                img_channels=img_channels,
                conv_clamp=conv_clamp,
                use_fp16=res >= fp16_resolution,
                **(block_kwargs or {}),
            )
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(
            channels[4], resolution=4, img_channels=img_channels, conv_clamp=conv_clamp, **(epilogue_kwargs or {})
        )

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None, **block_kwargs) -> torch.Tensor:
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError(
                f"discriminator input of shape {tuple(img.shape)}: must be N x {' x '.join(map(str, expected))}"
            )
        x = None
        for res in self.block_resolutions:
            x, _ = getattr(self, f"b{res}")(x, img if x is None else None, **block_kwargs)
        return self.b4(x)
