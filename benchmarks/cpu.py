"""Where the tiny course's CPU time goes: the machine's matmul peak, the tiny UNet's image-evaluations per second and
achieved GFLOP/s by batch size, threads and memory layout, an Alg. 1 iteration with and without activation
checkpointing, and the share of a DDIM loop spent outside the UNet.

    python benchmarks/cpu.py                      # the table, as markdown (docs/results.md, "The tiny world on a CPU")
    python benchmarks/cpu.py --compile            # also torch.compile'd (inductor; minutes to build its kernels)

Each figure is the best of ``--repeats`` timed runs after a warm-up call, in float32, with ``torch.no_grad()``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
from collections.abc import Callable

import torch
from bench_ddim import best_time  # the script's folder is on sys.path
from torch.utils.flop_counter import FlopCounterMode

from dclip.ddim import ddim_generate, ddim_invert
from dclip.models import load_diffusion


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """bench_ddim's best of ``repeats`` timed calls, after one warm-up call (allocations, oneDNN primitives)."""
    fn()
    return best_time(fn, repeats)


def matmul_gflops(threads: int, repeats: int, n: int = 1024) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_seconds(lambda: a @ b, repeats) / 1e9


def unet_gflops_per_image(model) -> float:
    x = torch.zeros(1, 3, model.image_size, model.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.tensor([500]))
    return counter.get_total_flops() / 1e9


def evals_per_second(model, batch: int, threads: int, repeats: int) -> float:
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    t = torch.full((batch,), 500)
    with torch.no_grad():
        return batch / best_seconds(lambda: model(x, t), repeats)


def loop_overhead(model, threads: int, repeats: int, batch: int = 8, steps: int = 40) -> tuple[float, float]:
    """(seconds of a 40-step DDIM inversion of ``batch`` images, seconds of its 40 UNet calls alone)."""
    torch.set_num_threads(threads)
    x = torch.rand(batch, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = torch.full((batch,), 500)
    with torch.no_grad():
        loop = best_seconds(lambda: ddim_invert(model, x, model.schedule, t0=500, S_for=steps), repeats)
        calls = best_seconds(lambda: [model(x, t) for _ in range(steps)], repeats)
    return loop, calls


def alg1_iteration(
    model, threads: int, repeats: int, *, checkpoint: bool, batch: int = 8, steps: int = 6
) -> tuple[float, list[torch.Tensor]]:
    """(seconds of one Alg. 1 iteration's forward and backward through ``steps`` DDIM steps, without CLIP or the
    optimizer; the weights' gradients)."""
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    tuned = copy.deepcopy(model).train().requires_grad_(True)

    def iteration():
        tuned.zero_grad(set_to_none=True)
        x0 = ddim_generate(tuned, x, model.schedule, t0=500, S_gen=steps, grad=True, checkpoint=checkpoint)
        x0.square().mean().backward()

    seconds = best_seconds(iteration, repeats)
    return seconds, [p.grad.clone() for p in tuned.parameters()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time the torch.compile'd UNet (inductor)")
    a = p.parse_args(argv)
    cores = os.cpu_count() or 1
    threads = sorted({1, cores})
    model = load_diffusion("tinyfaces", device="cpu").eval()
    gf = unet_gflops_per_image(model)
    print(f"machine: {platform.machine()}, {cores} cores, torch {torch.__version__}")
    for n in threads:
        print(f"matmul peak (1024^3 float32), {n} thread(s): {matmul_gflops(n, a.repeats):.1f} GFLOP/s")
    print(
        f"tiny UNet ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, 32 x 32): {gf:.3f} GFLOP "
        "per image-evaluation"
    )
    contiguous = load_diffusion("tinyfaces", device="cpu").eval()
    contiguous.unet.to(memory_format=torch.contiguous_format)
    variants = {"contiguous": contiguous, "channels-last (as loaded)": model}
    if a.compile:
        comp = load_diffusion("tinyfaces", device="cpu").eval()
        comp.unet = torch.compile(comp.unet)
        variants["compiled"] = comp
    print("\n| variant | threads | batch | image-evals/s | GFLOP/s | % of matmul peak |\n|---|---|---|---|---|---|")
    peaks = {n: matmul_gflops(n, a.repeats) for n in threads}
    for name, m in variants.items():
        for n in threads:
            for batch in (1, 8, 32, 64):
                rate = evals_per_second(m, batch, n, a.repeats)
                print(
                    f"| {name} | {n} | {batch} | {rate:.0f} | {rate * gf:.1f} | {100 * rate * gf / peaks[n]:.0f} |",
                    flush=True,
                )
    print("\n| threads | layout | Alg. 1 iteration, batch 8, S_gen = 6 (s) | with checkpointing (s) | same gradients |")
    print("|---|---|---|---|---|")
    for n in threads:
        for name, m in (("contiguous", contiguous), ("channels-last", model)):
            plain, grads = alg1_iteration(m, n, a.repeats, checkpoint=False)
            ck, ck_grads = alg1_iteration(m, n, a.repeats, checkpoint=True)
            same = all(torch.equal(g, h) for g, h in zip(grads, ck_grads))
            print(f"| {n} | {name} | {plain:.3f} | {ck:.3f} | {'bitwise' if same else 'no'} |", flush=True)
    print("\n| threads | 40-step DDIM inversion of 8 images (s) | its 40 UNet calls alone (s) | outside the UNet |")
    print("|---|---|---|---|")
    for n in threads:
        loop, calls = loop_overhead(model, n, a.repeats)
        print(f"| {n} | {loop:.3f} | {calls:.3f} | {100 * (loop - calls) / loop:.0f} % |")


if __name__ == "__main__":
    main()
