"""Time and memory of DiffusionCLIP's stages, next to the paper's figures.

    python benchmarks/costs.py --arch tiny                 # the tiny world's UNet, 32 x 32
    python benchmarks/costs.py --arch celeba-hq --derive   # the 256 x 256 CelebA-HQ UNet, random weights

Per image (batch 1): inversion with S_for = 40; one fine-tuning iteration with S_gen = 6 for Alg. 1 without and
with activation checkpointing and for Alg. 2 (its S_gen optimizer steps over one latent); manipulation (40, 6) and
(200, 40). Memory: the activations autograd keeps for backward (dclip.profiling, any device) and, on CUDA,
torch.cuda.max_memory_allocated. ``--derive`` times one UNet call and multiplies for the long manipulations
instead of running them (on a CPU the 256 x 256 (200, 40) pass takes tens of minutes); such rows say "derived".
The paper (V100, 256 x 256): Alg. 1 23 GB and Alg. 2 12 GB of GPU memory; fine-tuning takes minutes per text.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from diffusers import UNet2DModel

from dclip.ddim import ddim_generate, ddim_invert
from dclip.finetune import FinetuneConfig, Latents, finetune
from dclip.losses import lowpass_identity
from dclip.models import DIFFUSION_MODELS, DiffusionModel
from dclip.profiling import measure
from dclip.schedule import Schedule
from dclip.tinyworld.train import load_config


class RandomCLIP:
    """A stand-in CLIP image encoder of realistic cost is not needed here: the UNet dominates. This one is a small
    fixed conv net (with gradients to the image), so the loss is differentiable and cheap."""

    def __init__(self, device: torch.device):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 4, 4), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        ).to(device)
        self.net.requires_grad_(False)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.net(x), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        g = torch.Generator().manual_seed(len(texts[0]))
        return torch.nn.functional.normalize(torch.randn(len(texts), 16, generator=g), dim=-1)


def cpu_name() -> str:
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "CPU"


def build(arch: str, device: torch.device) -> DiffusionModel:
    cfg = load_config("tinyfaces")["unet"] if arch == "tiny" else DIFFUSION_MODELS["celeba-hq-sdedit"]["unet"]
    torch.manual_seed(0)
    unet = UNet2DModel(**cfg).eval().requires_grad_(False).to(device)
    return DiffusionModel(unet, Schedule.linear(), unet.config.sample_size, arch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["tiny", "celeba-hq"], default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--t0", type=int, default=500)
    p.add_argument("--derive", action="store_true", help="derive the long manipulations from one UNet call's time")
    a = p.parse_args()
    device = torch.device(a.device)
    model = build(a.arch, device)
    clip = RandomCLIP(device)
    s = model.image_size
    x0 = (torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    hardware = torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_name()}, "
    if device.type == "cpu":
        hardware += f"{torch.get_num_threads()} torch threads"
    print(f"{a.arch} UNet ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {s}x{s}) on {hardware}")
    print("| stage | seconds | activations kept for backward (MiB) | CUDA peak (MiB) |")
    print("|---|---|---|---|")

    def row(name: str, cost) -> None:
        cuda = f"{cost.cuda_peak_bytes / 2**20:.0f}" if cost.cuda_peak_bytes is not None else "-"
        print(f"| {name} | {cost.seconds:.2f} | {cost.activation_bytes / 2**20:.1f} | {cuda} |", flush=True)

    with torch.no_grad():
        ddim_invert(model, x0, model.schedule, a.t0, 2)  # warm-up
        inv = measure(lambda: ddim_invert(model, x0, model.schedule, a.t0, 40), device)
    row("inversion, S_for = 40", inv)
    x_t0 = ddim_invert(model, x0, model.schedule, a.t0, 40)
    one = Latents(x0.cpu(), x_t0.cpu(), a.t0, 40)
    for name, kw in (
        ("fine-tuning iteration, Alg. 1, S_gen = 6", dict(checkpoint=False)),
        ("fine-tuning iteration, Alg. 1 + checkpointing", dict(checkpoint=True)),
        ("fine-tuning iteration, Alg. 2 (6 optimizer steps)", dict(algorithm=2)),
    ):
        cfg = FinetuneConfig("angry face", "face", t0=a.t0, S_gen=6, lambda_id=0.3, epochs=1, batch_size=1, **kw)
        run = lambda c=cfg: finetune(model, clip, one, c, lowpass_identity, progress=False)
        if device.type == "cuda":
            run()  # warm-up: cuDNN picks its kernels on the first call
        row(name, measure(run, device))
    per_call = inv.seconds / 40
    for S_for, S_gen in ((40, 6), (200, 40)):
        name = f"manipulation ({S_for}, {S_gen})"
        if a.derive:
            calls = S_for + S_gen
            print(f"| {name} (derived: {calls} x {per_call:.2f} s per UNet call) | {calls * per_call:.1f} | - | - |")
            continue
        with torch.no_grad():
            start = time.perf_counter()
            ddim_generate(model, ddim_invert(model, x0, model.schedule, a.t0, S_for), model.schedule, a.t0, S_gen)
        print(f"| {name} | {time.perf_counter() - start:.2f} | 0 (no grad) | - |", flush=True)


if __name__ == "__main__":
    main()
