"""Time DDIM inversion + generation: dclip's loops against the same loops written with diffusers' schedulers.

    python benchmarks/bench_ddim.py --arch tiny --batch 16
    python benchmarks/bench_ddim.py --arch celeba-hq --batch 1 --s-for 11 --s-gen 6

Same UNet (random weights: time does not depend on them), same number of UNet calls, in the same run;
timings are the best of ``--repeats`` interleaved runs. Prints a markdown table with the ratio dclip / diffusers,
and batched (one call of N images) against N calls of one image.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, UNet2DModel

from dclip.ddim import ddim_generate, ddim_invert
from dclip.models import DIFFUSION_MODELS
from dclip.schedule import PAPER_BETA_END, PAPER_BETA_START, PAPER_T, Schedule
from dclip.tinyworld.zoo import load_config

SCHED = dict(
    num_train_timesteps=PAPER_T,
    beta_schedule="linear",
    beta_start=PAPER_BETA_START,
    beta_end=PAPER_BETA_END,
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
)


def build_unet(arch: str) -> UNet2DModel:
    torch.manual_seed(0)
    cfg = load_config("tinyfaces")["unet"] if arch == "tiny" else DIFFUSION_MODELS["celeba-hq-sdedit"]["unet"]
    return UNet2DModel(**cfg).eval()


def grid_size(t0: int, S: int) -> int:
    """diffusers' num_inference_steps whose grid, cut at t0, is dclip's grid of S points."""
    step = t0 // (S - 1)
    if step * (S - 1) != t0 or 1000 % step:
        raise SystemExit(f"t0={t0}, S={S}: pick t0/(S-1) a divisor of 1000 so both libraries walk the same grid")
    return 1000 // step


@torch.no_grad()
def diffusers_round_trip(unet, x0, t0, s_for, s_gen):
    inv, gen = DDIMInverseScheduler(**SCHED), DDIMScheduler(**SCHED)
    inv.set_timesteps(grid_size(t0, s_for))
    gen.set_timesteps(grid_size(t0, s_gen))
    x, source = x0, 0
    for t in inv.timesteps[inv.timesteps <= t0]:
        x = inv.step(unet(x, torch.tensor(source)).sample, t, x).prev_sample
        source = int(t)
    for t in gen.timesteps[gen.timesteps <= t0]:
        x = gen.step(unet(x, t).sample, t, x).prev_sample
    return x


@torch.no_grad()
def dclip_round_trip(unet, x0, t0, s_for, s_gen, schedule=Schedule.linear()):
    eps = lambda x, t: unet(x, t).sample  # noqa: E731
    return ddim_generate(eps, ddim_invert(eps, x0, schedule, t0=t0, S_for=s_for), schedule, t0=t0, S_gen=s_gen)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["tiny", "celeba-hq"], default="tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--t0", type=int, default=400)
    p.add_argument("--s-for", type=int, default=41)
    p.add_argument("--s-gen", type=int, default=11)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    unet = build_unet(a.arch).to(a.device)
    size = unet.config.sample_size
    x0 = (torch.rand(a.batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(a.device)
    args = (unet, x0, a.t0, a.s_for, a.s_gen)
    assert torch.allclose(dclip_round_trip(*args), diffusers_round_trip(*args), atol=1e-4), "the two loops disagree"
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    t_dclip = t_diff = float("inf")
    for _ in range(a.repeats):  # interleaved, so both see the same machine load
        t_dclip = min(t_dclip, best_time(lambda: (dclip_round_trip(*args), sync()), 1))
        t_diff = min(t_diff, best_time(lambda: (diffusers_round_trip(*args), sync()), 1))
    t_single = best_time(
        lambda: [(dclip_round_trip(unet, x0[i : i + 1], *args[2:]), sync()) for i in range(a.batch)], 1
    )
    device = (
        torch.cuda.get_device_name()
        if a.device.startswith("cuda")
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    print(
        f"| arch | batch | t0 | (S_for, S_gen) | dclip s | diffusers s | ratio | "
        f"{a.batch} calls of 1, s | batching speed-up | device |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {a.arch} {size}x{size} | {a.batch} | {a.t0} | ({a.s_for}, {a.s_gen}) | {t_dclip:.3f} | {t_diff:.3f} | "
        f"{t_dclip / t_diff:.3f} | {t_single:.3f} | {t_single / t_dclip:.1f}x | {device} |"
    )


if __name__ == "__main__":
    main()
