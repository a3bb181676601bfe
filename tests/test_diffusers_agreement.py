"""dclip's DDIM loops against diffusers' schedulers on the same small random UNet2DModel."""

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from fakes import small_unet

from dclip.ddim import ddim_generate, ddim_invert
from dclip.schedule import PAPER_BETA_END, PAPER_BETA_START, PAPER_T

LINEAR = dict(  # the paper's
    num_train_timesteps=PAPER_T, beta_schedule="linear", beta_start=PAPER_BETA_START, beta_end=PAPER_BETA_END
)
CONFIG = dict(
    **LINEAR,
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
    timestep_spacing="leading",
)


@pytest.fixture(scope="module")
def unet():
    return small_unet()


def eps_of(unet):
    return lambda x, t: unet(x, t).sample


@torch.no_grad()
def test_generation_matches_ddim_scheduler(unet, schedule):
    """t0 = 500 with S = 11 is the grid 500, 450, ..., 0 -> -1: diffusers' 20-step grid cut at 500."""
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sched = DDIMScheduler(**CONFIG)
    sched.set_timesteps(20)
    ref = x.clone()
    for t in sched.timesteps[sched.timesteps <= 500]:
        ref = sched.step(unet(ref, t).sample, t, ref, eta=0.0).prev_sample
    ours = ddim_generate(eps_of(unet), x, schedule, t0=500, S_gen=11)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


@torch.no_grad()
def test_inversion_matches_ddim_inverse_scheduler(unet, schedule):
    """Same grid upwards; each step evaluates eps at its starting time (Eq. 12), the first one at t = 0."""
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    sched = DDIMInverseScheduler(**CONFIG)
    sched.set_timesteps(20)
    ref, source = x0.clone(), 0
    for t in sched.timesteps[sched.timesteps <= 500]:
        ref = sched.step(unet(ref, torch.tensor(source)).sample, t, ref).prev_sample
        source = int(t)
    ours = ddim_invert(eps_of(unet), x0, schedule, t0=500, S_for=11)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


@torch.no_grad()
@pytest.mark.parametrize("clip", [False, True])
def test_ancestral_step_matches_ddpm_scheduler(unet, schedule, clip):
    """Eq. 3 with sigma_t^2 = beta_t is diffusers' DDPMScheduler(variance_type="fixed_large"), noise for noise;
    clip_x0 is its clip_sample. From pure noise at t = 999 the predicted x0 leaves [-1, 1], so clipping matters."""
    from diffusers import DDPMScheduler

    from dclip.ddpm import ddpm_step

    sched = DDPMScheduler(**LINEAR, clip_sample=clip, variance_type="fixed_large")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    for t in (999, 500, 0):
        ref = sched.step(unet(x, t).sample, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        ours = ddpm_step(eps_of(unet), x, t, schedule, torch.Generator().manual_seed(t), clip_x0=clip)
        assert torch.allclose(ours, ref, atol=1e-4), (t, (ours - ref).abs().max())
