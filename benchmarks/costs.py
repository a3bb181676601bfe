"""Time and memory of DiffusionCLIP's stages, next to the paper's figures.

    python benchmarks/costs.py --arch tiny                 # the tiny world's UNet, 32 x 32
    python benchmarks/costs.py --arch celeba-hq --derive   # the 256 x 256 CelebA-HQ UNet, random weights
    python benchmarks/costs.py --figure costs.png          # also bar charts of time and memory

Per image (batch 1): inversion with S_for = 40; one fine-tuning iteration with S_gen = 6 for Alg. 1 without and
with activation checkpointing and for Alg. 2 (its S_gen optimizer steps over one latent), timed on the second of
two iterations so that the run's setup is left out; manipulation (40, 6) and (200, 40). Memory: the activations
autograd keeps for backward (dclip.profiling, any device) and, on CUDA, torch.cuda.max_memory_allocated.
``--derive`` times one UNet call and multiplies for the long manipulations instead of running them (on a CPU
the 256 x 256 (200, 40) pass takes tens of minutes); such rows say "derived".
The paper (Quadro RTX 6000, 256 x 256, Section G): inversion 1.644 s, one fine-tuning step 0.826 s (Alg. 2:
1.662 s), manipulation (40, 6) 1.958 s and (200, 40) 10.132 s; Alg. 1 23 GB and Alg. 2 12 GB of GPU memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import torch
from diffusers import UNet2DModel

from dclip.ddim import ddim_generate, ddim_invert
from dclip.finetune import FinetuneConfig, Latents, finetune
from dclip.models import DIFFUSION_MODELS, DiffusionModel
from dclip.profiling import measure
from dclip.schedule import PAPER_STEPS, Schedule
from dclip.tinyworld.identity import lowpass_identity
from dclip.tinyworld.zoo import load_config


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
    p.add_argument("--figure", type=Path, default=None, help="save PNG bar charts of the fine-tuning costs")
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

    costs = {}

    def row(name: str, cost) -> None:
        costs[name] = cost
        cuda = f"{cost.cuda_peak_bytes / 2**20:.0f}" if cost.cuda_peak_bytes is not None else "-"
        print(f"| {name} | {cost.seconds:.2f} | {cost.activation_bytes / 2**20:.1f} | {cuda} |", flush=True)

    with torch.no_grad():
        ddim_invert(model, x0, model.schedule, t0=a.t0, S_for=2)  # warm-up
        inv = measure(lambda: ddim_invert(model, x0, model.schedule, t0=a.t0, S_for=PAPER_STEPS.S_for), device)
    row("inversion, S_for = 40", inv)
    x_t0 = ddim_invert(model, x0, model.schedule, t0=a.t0, S_for=PAPER_STEPS.S_for)
    two = Latents(x0.repeat(2, 1, 1, 1).cpu(), x_t0.repeat(2, 1, 1, 1).cpu(), a.t0, 40)
    for name, kw in (
        ("fine-tuning iteration, Alg. 1, S_gen = 6", dict(checkpoint=False)),
        ("fine-tuning iteration, Alg. 1 + checkpointing", dict(checkpoint=True)),
        ("fine-tuning iteration, Alg. 2 (6 optimizer steps)", dict(algorithm=2)),
    ):
        cfg = FinetuneConfig(
            "angry face", "face", t0=a.t0, S_gen=PAPER_STEPS.S_gen, lambda_id=0.3, epochs=1, batch_size=1, **kw
        )
        stamps = []

        def stamp(*_, stamps: list[float] = stamps) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        run = lambda c=cfg: finetune(model, clip, two, c, lowpass_identity, callback=stamp, progress=False)
        if device.type == "cuda":
            run()  # warm-up: cuDNN picks its kernels on the first call
        stamps.clear()
        cost = measure(run, device)
        # two iterations over the same latent; the second one's time leaves out the setup (copying the model,
        # fingerprinting its weights), which finetune does once per run
        per_iteration = len(stamps) // 2
        row(name, dataclasses.replace(cost, seconds=stamps[-1] - stamps[per_iteration - 1]))
    per_call = inv.seconds / 40
    for S_for, S_gen in (PAPER_STEPS, (200, 40)):
        name = f"manipulation ({S_for}, {S_gen})"
        if a.derive:
            calls = S_for + S_gen
            print(f"| {name} (derived: {calls} x {per_call:.2f} s per UNet call) | {calls * per_call:.1f} | - | - |")
            continue
        with torch.no_grad():
            start = time.perf_counter()
            ddim_generate(
                model,
                ddim_invert(model, x0, model.schedule, t0=a.t0, S_for=S_for),
                model.schedule,
                t0=a.t0,
                S_gen=S_gen,
            )
        print(f"| {name} | {time.perf_counter() - start:.2f} | 0 (no grad) | - |", flush=True)

    if a.figure:
        figure(costs, f"{a.arch} UNet on {hardware}").savefig(a.figure, dpi=90)


def figure(costs: dict, where: str):
    """Seconds and memory of the fine-tuning variants side by side (memory on a log scale)."""
    import matplotlib.pyplot as plt

    from dclip.plotting import plot_bars

    tuning = {k.replace("fine-tuning iteration, ", ""): c for k, c in costs.items() if k.startswith("fine-tuning")}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    plot_bars(
        {k: {"seconds": c.seconds} for k, c in tuning.items()}, "one fine-tuning iteration", "seconds", ax=axes[0]
    )
    memory = {k: {"activations for backward": c.activation_bytes / 2**20} for k, c in tuning.items()}
    for k, c in tuning.items():
        if c.cuda_peak_bytes is not None:
            memory[k]["CUDA peak"] = c.cuda_peak_bytes / 2**20
    cuda = any(c.cuda_peak_bytes is not None for c in tuning.values())
    title = "activations kept for backward" + (" and CUDA peak" if cuda else "")
    plot_bars(memory, title, "MiB (log scale)", logy=True, ax=axes[1])
    fig.suptitle(where, fontsize=10)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
