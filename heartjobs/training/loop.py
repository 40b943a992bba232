"""The training loop of every model family (heartjobs.models), apart from artifacts and metrics: a family's
own losses and their order are its `step`; everything around them is here.

The whole prepared set sits on the device as uint8 and is shuffled there each epoch; batches become
[-1, 1] floats on the fly. Losses are summed on the device and read once per epoch. Every random
source has its own seeded generator, and the whole state (including the position inside an epoch)
goes into a checkpoint, so a resumed run continues bit for bit where it stopped. With [train] augment,
every image the discriminator sees goes through DiffAugment first (heartjobs.training.augment).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from heartjobs.imaging import to_uint8
from heartjobs.models import FAMILIES, build_networks
from heartjobs.models.phase_conv import rewrite_generator
from heartjobs.spec.schema import ResolvedSpec
from heartjobs.training.ada import Ada
from heartjobs.training.augment import DiffAugment

SAMPLE_GRID = 16  # a 4x4 grid of samples from one fixed noise batch


class Interrupted(Exception):
    """Training stopped between two batches because stop was requested (the state is consistent)."""


@dataclass
class EpochStats:
    epoch: int
    d_loss: float
    g_loss: float
    seconds: float
    images_per_s: float
    # ADA's augmentation probability and overfitting heuristic at the epoch's end (only with ADA; r_t None
    # before its first interval)
    ada_p: float | None = None
    ada_rt: float | None = None

    def as_dict(self) -> dict:
        record = {
            "epoch": self.epoch,
            "d_loss": self.d_loss,
            "g_loss": self.g_loss,
            "seconds": round(self.seconds, 4),
            "images_per_s": round(self.images_per_s, 2),
        }
        if self.ada_p is not None:
            record |= {"ada_p": round(self.ada_p, 6), "ada_rt": None if self.ada_rt is None else round(self.ada_rt, 6)}
        return record


@dataclass
class _Position:
    """Where the trainer is inside the current epoch."""

    perm: torch.Tensor
    batch: int
    d_sum: torch.Tensor
    g_sum: torch.Tensor
    g_count: int
    seconds: float


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch [start, end) ranges over n images. A last batch of one image is merged into the one before
    it (BatchNorm can't normalise a single sample); every image is used every epoch."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2] = (bounds[-2][0], n)
        bounds.pop()
    return bounds


def _lazy(lr: float, betas: tuple[float, float], interval: int) -> dict:
    """Adam's lr and betas for a network regularised every `interval` minibatches (0: none): the reference's
    mb_ratio = interval / (interval + 1), lr * mb_ratio and beta ** mb_ratio."""
    if not interval:
        return {"lr": lr, "betas": betas}
    ratio = interval / (interval + 1)
    return {"lr": lr * ratio, "betas": (betas[0] ** ratio, betas[1] ** ratio)}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


class Trainer:
    def __init__(self, spec: ResolvedSpec, images: torch.Tensor, device: torch.device):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] < 2:
            raise ValueError("images must be a uint8 tensor N x C x H x W with N >= 2")
        t = spec.train
        self.spec = spec
        self.device = device
        self.images = images.to(device)
        seed_everything(t.seed)
        self.family = FAMILIES[spec.model]
        self.G, self.D = build_networks(spec.networks())
        if t.phase_conv:  # the same parameters (state_dict keys, counts), computed as phase convolutions
            rewrite_generator(self.G)
        self.G.to(device)
        self.D.to(device)
        cuda = device.type == "cuda"
        if cuda:  # TF32 tensor cores: matmuls and convolutions, convolutions only, or neither (full float32)
            torch.backends.cuda.matmul.allow_tf32 = t.tf32 is True
            torch.backends.cudnn.allow_tf32 = t.tf32 in (True, "convolutions")
        # Convolutions run faster in NHWC: on tensor cores, and with oneDNN on the CPU (bench/bench_train.py
        # measures it for DCGAN; docs/performance.md has the figures).
        family_nhwc = self.family.channels_last
        self.channels_last = self.family.convolutional if family_nhwc is None else family_nhwc
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        if t.optimizer == "adam":
            # Fused Adam: one kernel per step instead of one per tensor, on CUDA and on the CPU
            # (bench/bench_train.py measures it).
            fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
            # lazy regularisation (StyleGAN2): each optimiser's lr and betas scaled by interval / (interval + 1),
            # the reference's adjustment for the regularisation steps taken every interval minibatches
            g_interval, d_interval = self.family.reg_intervals or (0, 0)
            self.opt_G = torch.optim.Adam(self.G.parameters(), **_lazy(t.lr, t.betas, g_interval), **fused)
            self.opt_D = torch.optim.Adam(self.D.parameters(), **_lazy(t.lr, t.betas, d_interval), **fused)
        else:
            self.opt_G = torch.optim.RMSprop(self.G.parameters(), lr=t.lr)
            self.opt_D = torch.optim.RMSprop(self.D.parameters(), lr=t.lr)
        # What the steps call: the modules themselves, or their torch.compile'd versions (same weights).
        self.gen, self.disc = (torch.compile(self.G), torch.compile(self.D)) if t.compile else (self.G, self.D)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.bf16)
        # Separate streams: shuffling, training noise, and the fixed sample noise.
        self.shuffle_gen = torch.Generator(device=device).manual_seed(t.seed + 1)
        self.noise_gen = torch.Generator(device=device).manual_seed(t.seed + 2)
        fixed_gen = torch.Generator(device=device).manual_seed(t.seed + 3)
        self.fixed_noise = torch.randn(SAMPLE_GRID, t.latent_dim, generator=fixed_gen, device=device)
        # DiffAugment's draws have a stream of their own (seed + 4 picks the real grid in heartjobs.runner), so
        # the other streams, and the thesis runs without augmentation, draw exactly what they did before.
        self.augment: DiffAugment | Ada | None = None
        augment_gen = torch.Generator(device=device).manual_seed(t.seed + 5) if t.augment != "none" else None
        if t.augment == "ada":
            self.augment = Ada(augment_gen, target=t.ada_target, kimg=t.ada_kimg, fixed_p=t.ada_p)
        elif t.augment != "none":
            self.augment = DiffAugment(t.augment, augment_gen)
        self.bounds = batch_bounds(self.images.shape[0], t.batch_size)
        self.epoch = 0  # epochs completed
        self.position: _Position | None = None
        self.history: list[dict] = []
        self._targets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # --- what a family's step uses (heartjobs.models.family.StepContext) ---

    @property
    def train(self):
        return self.spec.train

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.spec.train.latent_dim, generator=self.noise_gen, device=self.device)

    def progress(self, index: int) -> tuple[int, int]:
        """Before batch `index` of this epoch: the minibatches trained and the images shown since the start."""
        return self.epoch * len(self.bounds) + index, self.epoch * self.images.shape[0] + self.bounds[index][0]

    def observe_real(self, scores: torch.Tensor) -> None:
        """D's scores on a real batch, for ADA's overfitting heuristic (nothing without ADA): the sign of a
        logit, or of p - 1/2 for a sigmoid output (the family's ada_signal)."""
        if isinstance(self.augment, Ada) and self.family.ada_signal is not None:
            logits = scores.detach() - 0.5 if self.family.ada_signal == "probability" else scores.detach()
            self.augment.observe(logits)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            return self.gen(z)

    def score(self, images: torch.Tensor, disc: nn.Module | None = None) -> torch.Tensor:
        """D's output in float32: losses (BCE above all) are computed outside bf16 autocast. Every image D
        sees, real or generated, is augmented first when the spec asks for it (in float32, differentiably).
        `disc`: another view of D to call (the eager one, for the gradient penalty)."""
        if self.augment is not None:  # in float32, also a bf16 generated batch: the draws stay float32's
            images = self.augment(images.float())
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            return (self.disc if disc is None else disc)(images).float()

    def labels(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All-ones ("real") and all-zeros ("generated") targets for n images."""
        if n not in self._targets:  # reused across steps: no per-step allocation
            self._targets[n] = (torch.ones(n, 1, device=self.device), torch.zeros(n, 1, device=self.device))
        return self._targets[n]

    # --- one epoch ---

    def train_epoch(
        self, should_stop: Callable[[], bool] = lambda: False, on_batch: Callable[[int, int], None] | None = None
    ) -> EpochStats:
        """Train one epoch (or the rest of an interrupted one). Raises Interrupted between batches when
        should_stop() says so; the trainer's state then holds the position for a checkpoint."""
        step = self.family.step
        if self.position is None:
            zero = torch.zeros((), device=self.device)
            perm = torch.randperm(self.images.shape[0], generator=self.shuffle_gen, device=self.device)
            self.position = _Position(perm, 0, zero.clone(), zero.clone(), 0, 0.0)
        pos = self.position
        self.G.train()
        self.D.train()
        started = time.perf_counter()
        try:
            for index in range(pos.batch, len(self.bounds)):
                if should_stop():
                    raise Interrupted
                start, end = self.bounds[index]
                real = self.images[pos.perm[start:end]].float().div_(127.5).sub_(1.0)
                if self.channels_last:
                    real = real.contiguous(memory_format=torch.channels_last)
                d_loss, g_loss = step(self, real, index)
                pos.d_sum += d_loss
                if g_loss is not None:
                    pos.g_sum += g_loss
                    pos.g_count += 1
                pos.batch = index + 1
                if on_batch:
                    on_batch(pos.batch, len(self.bounds))
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            pos.seconds += time.perf_counter() - started
        self.epoch += 1
        stats = EpochStats(
            epoch=self.epoch,
            d_loss=(pos.d_sum / len(self.bounds)).item(),
            g_loss=(pos.g_sum / max(1, pos.g_count)).item(),
            seconds=pos.seconds,
            images_per_s=self.images.shape[0] / pos.seconds if pos.seconds > 0 else 0.0,
        )
        if isinstance(self.augment, Ada):  # read once an epoch: no host synchronisation inside it
            stats.ada_p = float(self.augment.p)
            stats.ada_rt = None if self.augment.rt is None else float(self.augment.rt)
        self.history.append(stats.as_dict())
        self.position = None
        return stats

    @torch.inference_mode()
    def samples(self) -> torch.Tensor:
        """The fixed-noise batch through the generator in eval mode, as uint8 N x C x H x W."""
        self.G.eval()
        try:
            images = self.G(self.fixed_noise)
        finally:
            self.G.train()
        return to_uint8(images).cpu()

    # --- state ---

    def state_dict(self) -> dict:
        pos = self.position
        return {
            "epoch": self.epoch,
            "position": None
            if pos is None
            else {
                "perm": pos.perm.cpu(),
                "batch": pos.batch,
                "d_sum": pos.d_sum.cpu(),
                "g_sum": pos.g_sum.cpu(),
                "g_count": pos.g_count,
                "seconds": pos.seconds,
            },
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "fixed_noise": self.fixed_noise.cpu(),
            # ADA's p and its statistics (only with ADA: other checkpoints are what they were before it)
            **({"ada": self.augment.state_dict()} if isinstance(self.augment, Ada) else {}),
            "history": list(self.history),
            "rng": self._rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.fixed_noise = state["fixed_noise"].to(self.device)
        if isinstance(self.augment, Ada):  # augment is in the spec hash: a checkpoint of this run has it
            self.augment.load_state_dict(state["ada"])
        self.history = list(state["history"])
        pos = state["position"]
        self.position = (
            None
            if pos is None
            else _Position(
                pos["perm"].to(self.device),
                pos["batch"],
                pos["d_sum"].to(self.device),
                pos["g_sum"].to(self.device),
                pos["g_count"],
                pos["seconds"],
            )
        )
        self._load_rng_state(state["rng"])

    def _rng_state(self) -> dict:
        mt_name, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": (has_gauss, cached)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "shuffle": self.shuffle_gen.get_state(),
            "noise": self.noise_gen.get_state(),
            # only with augmentation: a checkpoint of a run without it is what it was before augment existed
            **({"augment": self.augment.generator.get_state()} if self.augment is not None else {}),
        }

    def _load_rng_state(self, rng: dict) -> None:
        random.setstate(rng["python"])
        keys = rng["numpy"]["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, rng["numpy"]["pos"], *rng["numpy"]["gauss"]))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.shuffle_gen.set_state(rng["shuffle"])
        self.noise_gen.set_state(rng["noise"])
        if self.augment is not None:
            # always there: augment is in the spec hash, so this checkpoint was made with augmentation too
            self.augment.generator.set_state(rng["augment"])
