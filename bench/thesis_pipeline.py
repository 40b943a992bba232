"""The thesis' own pipeline, rebuilt once for the benchmarks that compare heartjobs against it.

The thesis ran the scripts of github.com/royio3/Heart_CT_GAN (gan.py, wgan.py, dcgan.py for training,
generate_dataset.py and pytorch-fid's CLI for FID). bench_train.py and bench_fid.py (the CPU) and
gpu_bench.py (one GPU) all time this one copy, so "the thesis route" means the same work everywhere:

- `imagefolder`: the thesis' dataset layout, the prepared PNGs as torchvision's ImageFolder wants them.
- `train`: its training loop on heartjobs' models, timed after a warm-up.
- `fid_repeat`: one repeat of its FID (each image generated and saved alone, then pytorch-fid's CLI).

Each returns unrounded figures; the callers round and add their own memory figures, as their result
formats have them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from heartjobs.errors import HeartjobsError
from heartjobs.evaluation.weights import STANDARD_FILENAME
from heartjobs.models import FAMILIES, build_models

SAMPLE_INTERVAL = 400  # the thesis scripts' --sample_interval: a 5x5 sample grid every 400 batches


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def imagefolder(prepared: Path) -> Path:
    """The prepared set's PNG folder in the thesis' layout (ImageFolder wants one folder per class); returns
    the root to hand to `train`."""
    root = prepared / "imagefolder"
    root.mkdir()
    (root / "heart").symlink_to(prepared / "png")
    return root


def train(
    images: Path,
    size: int,
    model: str,
    batch_size: int,
    latent_dim: int,
    warmup: int,
    epochs: int,
    device: str,
    samples: Path,
) -> dict:
    """The thesis scripts' training loop (run_gan, run_wgan, run_dcgan) on heartjobs' models over the
    ImageFolder at `images`, timed over `epochs` epochs after `warmup`. Returns the images seen in the timed
    epochs, their seconds, and the seconds of the warm-up.

    What the scripts do and this keeps: torchvision's ImageFolder with Grayscale, Resize, ToTensor and
    Normalize(0.5, 0.5); DataLoader(batch_size, shuffle=True) without workers; the noise drawn with
    torch.randn on the device; every loss read with .item() every batch; a line printed per epoch; a 25-image
    sample saved every SAMPLE_INTERVAL batches; GAN and DCGAN train G then D, WGAN its critic every batch
    with weight clipping and G every n_critic-th batch on that batch's noise."""
    from torchvision import datasets, transforms
    from torchvision.utils import save_image

    if device == "cuda":  # PyTorch's default precision, as the thesis ran: FP32 matmuls, TF32 convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
    transform = transforms.Compose(
        [
            transforms.Grayscale(num_output_channels=1),
            transforms.Resize(size),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ]
    )
    dataset = datasets.ImageFolder(root=str(images), transform=transform)
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    torch.manual_seed(0)
    generator, discriminator = (m.to(device) for m in build_models(model, size, 1, latent_dim))
    hp = FAMILIES[model].defaults
    if model == "wgan":
        optimizer_G = torch.optim.RMSprop(generator.parameters(), lr=hp["lr"])
        optimizer_D = torch.optim.RMSprop(discriminator.parameters(), lr=hp["lr"])
    else:
        optimizer_G = torch.optim.Adam(generator.parameters(), lr=hp["lr"], betas=hp["betas"])
        optimizer_D = torch.optim.Adam(discriminator.parameters(), lr=hp["lr"], betas=hp["betas"])
    adversarial_loss = torch.nn.BCELoss()
    samples.mkdir(parents=True, exist_ok=True)
    total = warmup + epochs

    def epoch(e: int, sink) -> int:
        dis_loss = gen_loss = 0.0
        gen_updates = 0
        seen = 0
        gen_imgs = None
        for i, (imgs, _) in enumerate(dataloader):
            if imgs.size(0) < 2:
                # A last batch of one image: the scripts crash there (BatchNorm in training mode, no
                # drop_last); skipping it keeps a benchmark of any set size running. Never reached when the
                # batch size divides the set, as in every default of the benchmarks.
                continue
            real_imgs = imgs.to(dtype=torch.float32, device=device)
            if model == "wgan":
                optimizer_D.zero_grad()
                z = torch.randn(imgs.size(0), latent_dim, device=device)
                fake_imgs = generator(z).detach()
                loss_D = -torch.mean(discriminator(real_imgs)) + torch.mean(discriminator(fake_imgs))
                loss_D.backward()
                dis_loss += loss_D.item()
                optimizer_D.step()
                for p in discriminator.parameters():
                    p.data.clamp_(-hp["clip_value"], hp["clip_value"])
                if i % hp["n_critic"] == 0:
                    optimizer_G.zero_grad()
                    gen_imgs = generator(z)
                    loss_G = -torch.mean(discriminator(gen_imgs))
                    loss_G.backward()
                    optimizer_G.step()
                    gen_loss += loss_G.item()
                    gen_updates += 1
            else:
                valid = torch.full((imgs.size(0), 1), 1.0, device=device, requires_grad=False)
                fake = torch.full((imgs.size(0), 1), 0.0, device=device, requires_grad=False)
                optimizer_G.zero_grad()
                z = torch.randn(imgs.size(0), latent_dim, device=device)
                gen_imgs = generator(z)
                g_loss = adversarial_loss(discriminator(gen_imgs), valid)
                g_loss.backward()
                optimizer_G.step()
                optimizer_D.zero_grad()
                real_loss = adversarial_loss(discriminator(real_imgs), valid)
                fake_loss = adversarial_loss(discriminator(gen_imgs.detach()), fake)
                d_loss = (real_loss + fake_loss) / 2
                d_loss.backward()
                optimizer_D.step()
                dis_loss += d_loss.item()
                gen_loss += g_loss.item()
                gen_updates += 1
            batches_done = e * len(dataloader) + i
            if batches_done % SAMPLE_INTERVAL == 0:
                save_image(gen_imgs.data[:25], samples / f"{batches_done}.png", nrow=5, normalize=True)
            seen += imgs.size(0)
        line = "[Epoch %d/%d] [average D loss: %f] [average G loss: %f]"
        print(line % (e, total, dis_loss / len(dataloader), gen_loss / max(1, gen_updates)), file=sink)
        return seen

    with open(os.devnull, "w") as sink:  # the scripts' console output: formatted and written, then dropped
        started = time.perf_counter()
        for e in range(warmup):
            epoch(e, sink)
        _sync(device)
        start = time.perf_counter()
        seen = sum(epoch(warmup + e, sink) for e in range(epochs))
        _sync(device)
        seconds = time.perf_counter() - start
    return {"images": seen, "seconds": seconds, "warmup_s": start - started}


def fid_repeat(
    generator: torch.nn.Module,
    latent_dim: int,
    real_png: Path,
    n: int,
    dims: int,
    weights: Path,
    device: str,
    workdir: Path,
    noise: torch.Tensor | None = None,
) -> dict:
    """One repeat of the thesis' FID: generate_dataset.py (one image per call, autograd on,
    save_image(normalize=True), a printed line per image), then `python -m pytorch_fid REAL FAKE` on the two
    folders, which computes the real statistics again. Returns the seconds of each part, the FID, and the
    numbers of images; raises HeartjobsError when the CLI fails.

    The noise is the script's, numpy's normal per image (seeded here so that a run repeats), unless `noise`
    (n x latent_dim) is given: bench_fid.py passes the noise heartjobs draws, so that both routes measure the
    same images and their FIDs must agree."""
    from torchvision.utils import save_image

    torch_home = workdir / "torch_home"  # pytorch-fid's CLI loads the same weights file from here
    (torch_home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    link = torch_home / "hub" / "checkpoints" / STANDARD_FILENAME
    if not link.exists():
        link.symlink_to(weights.resolve())
    fakes = workdir / "thesis_fid_images"
    fakes.mkdir(parents=True, exist_ok=True)
    generator.eval()
    np.random.seed(0)
    _sync(device)
    start = time.perf_counter()
    # No torch.no_grad(): generate_dataset.py runs the generator with autograd on, and so its cost.
    with open(os.devnull, "w") as sink:
        for i in range(n):
            if noise is None:
                z = torch.tensor(np.random.normal(0, 1, (1, latent_dim)), dtype=torch.float32, device=device)
            else:
                z = noise[i : i + 1].to(device)
            gen_img = generator(z)
            save_image(gen_img.data, fakes / f"fake_image_{i}.png", normalize=True)
            print(f"Generated image {i + 1}/{n}", file=sink)
    _sync(device)
    generate_s = time.perf_counter() - start
    command = [sys.executable, "-m", "pytorch_fid", str(real_png), str(fakes), "--dims", str(dims), "--device", device]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TORCH_HOME": str(torch_home)})
    cli_s = time.perf_counter() - start
    found = re.search(r"FID:\s+([0-9.eE+-]+)", done.stdout)
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise HeartjobsError(f"pytorch-fid CLI failed (exit {done.returncode}): {' | '.join(tail)}")
    return {
        "generate_and_save_s": generate_s,
        "cli_s": cli_s,
        "fid": float(found.group(1)),
        "n_generated": n,
        "n_real": sum(1 for _ in real_png.glob("*.png")),
        "dims": dims,
    }
