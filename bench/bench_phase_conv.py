"""Nearest x2 upsampling + 3x3 convolution two ways, side by side in one run: the direct path
(nn.Upsample then Conv2d, as the DCGAN generator runs today) and the exact rewrite as four 2x2 phase
convolutions (heartjobs.models.phase_conv, issue 32).

Cases: the DCGAN generator's two upsampling layers at the thesis' 256 px (128 -> 128 channels, 64 -> 128 px;
128 -> 64 channels, 128 -> 256 px) and the whole generator (forward and backward of its output's sum), in
channels_last as the trainer runs convolutional models. Each case is timed forward and forward + backward,
the two paths alternating, --repeats rounds of --steps calls each; the median round is reported. The FLOPs
are counted by torch.utils.flop_counter.FlopCounterMode as executed. Prints both times, their ratio, the
FLOP ratio and the largest output difference; appends JSON lines to bench/results/phase_conv.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from results_log import record
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from heartjobs.models.dcgan import DCGANGenerator
from heartjobs.models.phase_conv import rewrite_upsample_convs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _round(call, steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        call()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _flops(call) -> int:
    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


def compare(name: str, direct: nn.Module, phase: nn.Module, x: torch.Tensor, args, device) -> None:
    """Time `direct` and `phase` (the same parameters) on `x`, forward and forward + backward."""
    with torch.no_grad():
        difference = (direct(x) - phase(x)).abs().max().item()
    for mode in ("forward", "forward+backward"):

        def call(module, mode=mode):
            if mode == "forward":
                with torch.no_grad():
                    module(x)
            else:
                module.zero_grad(set_to_none=True)
                module(x).sum().backward()

        routes = {"direct": direct, "phase": phase}
        for module in routes.values():  # warm-up
            call(module)
        rounds = {route: [] for route in routes}
        for _ in range(args.repeats):
            for route, module in routes.items():
                rounds[route].append(_round(lambda module=module: call(module), args.steps, device))
        seconds = {route: statistics.median(values) for route, values in rounds.items()}
        flops = {route: _flops(lambda module=module: call(module)) for route, module in routes.items()}
        ratio, flop_ratio = seconds["direct"] / seconds["phase"], flops["direct"] / flops["phase"]
        print(
            f"{name:34s} {mode:16s} batch {x.shape[0]} {device.type}: direct {seconds['direct'] * 1e3:7.1f} ms  "
            f"phase {seconds['phase'] * 1e3:7.1f} ms  ratio {ratio:.2f}x  | FLOPs {flops['direct'] / 1e9:.2f} / "
            f"{flops['phase'] / 1e9:.2f} G = {flop_ratio:.2f}x  | max |diff| {difference:.1e}"
        )
        record("phase_conv", {"case": name, "mode": mode, "batch_size": x.shape[0], "device": device.type,
                              "threads": torch.get_num_threads(), "repeats": args.repeats, "steps": args.steps,
                              "direct_s": seconds["direct"], "phase_s": seconds["phase"], "ratio": round(ratio, 3),
                              "direct_flops": flops["direct"], "phase_flops": flops["phase"],
                              "flop_ratio": round(flop_ratio, 3), "max_abs_diff": difference})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="the generator's output size (the thesis' 256)")
    parser.add_argument("--width", type=int, default=128, help="the generator's base width (the thesis' 128)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 2 on the CPU, 64 on a GPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="calls per round (default: 1 on the CPU, 20 on a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = device.type == "cpu"
    batch = args.batch_size or (2 if cpu else 64)
    args.steps = args.steps or (1 if cpu else 20)
    if device.type == "cuda":  # the thesis protocol: TF32 convolutions, FP32 matmuls
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    channels_last = torch.channels_last

    generator = DCGANGenerator(100, 1, args.size, width=args.width).to(device, memory_format=channels_last)
    layers = generator.conv_blocks
    quarter, half = args.size // 4, args.size // 2
    for index, size in ((1, quarter), (5, half)):  # (Upsample, Conv2d) at conv_blocks[index : index + 2]
        conv = layers[index + 1]
        direct = nn.Sequential(nn.Upsample(scale_factor=2), conv)
        phase = nn.Sequential(nn.Upsample(scale_factor=2), conv)
        rewrite_upsample_convs(phase)
        x = torch.randn(batch, conv.in_channels, size, size, device=device).contiguous(memory_format=channels_last)
        name = f"conv {conv.in_channels}->{conv.out_channels} {size}->{2 * size} px"
        compare(name, direct, phase, x, args, device)

    phase_generator = DCGANGenerator(100, 1, args.size, width=args.width).to(device, memory_format=channels_last)
    phase_generator.load_state_dict(generator.state_dict())
    rewrite_upsample_convs(phase_generator.conv_blocks)
    z = torch.randn(batch, 100, device=device)
    compare(f"DCGAN generator {args.size} px", generator, phase_generator, z, args, device)  # training mode


if __name__ == "__main__":
    main()
