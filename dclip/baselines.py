"""The baselines that DiffusionCLIP is compared with (paper D.5), on the same pretrained model and the same loss.

- :func:`latent_optimization`: keep the model frozen and optimise the latent ``x_t0`` with Eq. 10.
- :func:`clip_guided_sampling`: at every reverse step, move ``x_t`` against the gradient of the CLIP loss
  evaluated on the predicted clean image ``f_theta(x_t, t)`` (Eq. 6), then take the DDIM step.
- :func:`pixel_optimization`: edit the pixels themselves with a CLIP loss, no generative model at all: the
  naive approach that chapter 04 uses to show why the global loss collapses and CLIP alone is fooled.
- :func:`sdedit`: re-noise the image to ``t0`` (Eq. 1) and denoise with the pretrained model; it never reads the
  text, so it is the floor any text-guided edit should beat.
"""

from __future__ import annotations

import torch

from dclip.ddim import _time, ddim_generate, ddim_step, predict_x0
from dclip.ddpm import q_sample
from dclip.losses import IdentityTerm, directional_clip_loss, global_clip_loss, identity_loss, text_direction
from dclip.progress import progress_bar
from dclip.protocols import ScheduledNoisePredictor, TextImageEncoder
from dclip.schedule import PAPER_STEPS


def latent_optimization(
    model: ScheduledNoisePredictor,
    clip: TextImageEncoder,
    x0: torch.Tensor,
    x_t0: torch.Tensor,
    delta_t: torch.Tensor,
    *,
    t0: int,
    S_gen: int = PAPER_STEPS.S_gen,
    steps: int = 20,
    lr: float = 0.01,
    lambda_l1: float = 0.3,
    lambda_id: float = 0.0,
    identity: IdentityTerm | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Optimise ``x_t0`` so that ``ddim_generate(x_t0)`` minimises Eq. 10; the weights get no gradient.

    Each of ``steps`` Adam steps backpropagates through the S_gen reverse steps (checkpointed), as Alg. 1 does
    for the weights. Returns the final generated images (no grad)."""
    model.check_images(x0)
    grid = model.schedule.grid(t0=t0, S=S_gen)
    x0 = x0.to(model.device)
    x = x_t0.detach().to(model.device).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in progress_bar(range(steps), show=progress, desc="latent optimization"):
        with torch.enable_grad():
            x_gen = ddim_generate(model, x, model.schedule, grid=grid, grad=True, checkpoint=True)
            loss = directional_clip_loss(clip, x_gen, x0, delta_t) + identity_loss(
                x_gen, x0, lambda_l1, lambda_id, identity
            )
            (x.grad,) = torch.autograd.grad(loss, [x])  # only the latent moves; the weights get no gradient
        opt.step()
    with torch.no_grad():
        return ddim_generate(model, x.detach(), model.schedule, grid=grid)


def clip_guided_sampling(
    model: ScheduledNoisePredictor,
    clip: TextImageEncoder,
    x0: torch.Tensor,
    x_t0: torch.Tensor,
    delta_t: torch.Tensor,
    *,
    t0: int,
    S_gen: int = PAPER_STEPS.S_gen,
    scale: float = 10.0,
    lambda_l1: float = 0.3,
    progress: bool = False,
) -> torch.Tensor:
    """CLIP-guided reverse DDIM from ``x_t0``: ``x_t <- x_t - scale * sqrt(1 - a_t) * grad_x L(f_theta(x_t, t))``
    before each step, with ``L`` the directional CLIP loss (Eq. 9) plus ``lambda_l1`` L1 to ``x0``; the weights
    are frozen. The ``sqrt(1 - a_t)`` factor fades the guidance out as the noise goes (as in classifier guidance).
    """
    model.check_images(x0)
    x0, x = x0.to(model.device), x_t0.detach().to(model.device)
    for t, t_next in progress_bar(model.schedule.grid(t0=t0, S=S_gen).generation_pairs, show=progress, desc="guided"):
        a_t = float(model.schedule.alpha_bar_at(t))
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = model(x_in, _time(t, x_in))
            x0_pred = predict_x0(x_in, eps, a_t)
            loss = directional_clip_loss(clip, x0_pred, x0, delta_t, reduction="none") + identity_loss(
                x0_pred, x0, lambda_l1, reduction="none"
            )
            (grad,) = torch.autograd.grad(loss.sum(), [x_in])
        with torch.no_grad():
            x = ddim_step(model, x - scale * (1 - a_t) ** 0.5 * grad, t, t_next, model.schedule).x_next
    return x


def sdedit(
    model: ScheduledNoisePredictor,
    images: torch.Tensor,
    *,
    t0: int,
    S_gen: int = PAPER_STEPS.S_gen,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SDEdit-style re-noising (Eq. 1 to ``t0``) and DDIM denoising (Eq. 13) with the pretrained model, text-free."""
    model.check_images(images)
    grid = model.schedule.grid(t0=t0, S=S_gen)
    with torch.no_grad():
        x_t0 = q_sample(images.to(model.device), t0, model.schedule, generator=generator)
        return ddim_generate(model, x_t0, model.schedule, grid=grid)


def pixel_optimization(
    clip: TextImageEncoder,
    x0: torch.Tensor,
    target: str,
    reference: str,
    *,
    loss: str = "directional",
    steps: int = 100,
    lr: float = 0.01,
    lambda_l1: float = 0.0,
    init_noise: float = 1e-2,
    seed: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """Optimise the pixels of ``x0`` with Adam on the global (Eq. 8) or directional (Eq. 9) CLIP loss plus
    ``lambda_l1`` L1; returns the images (clamped to [-1, 1]) and the CLIP loss per step.

    The pixels start at ``x0`` plus seeded Gaussian noise of std ``init_noise``: at ``x0`` itself Delta I is
    rounding noise, and the directional loss's gradient (of size 1 / |Delta I|) would point wherever that noise
    does, so the result would change with the machine's floating-point rounding."""
    if loss not in ("global", "directional"):
        raise ValueError(f"loss={loss!r}: use 'global' (Eq. 8) or 'directional' (Eq. 9)")
    delta_t = text_direction(clip, target, reference)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0)
    x = (x0.detach() + init_noise * noise).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    history = []
    for _ in progress_bar(range(steps), show=progress, desc=f"pixels, {loss} loss"):
        with torch.enable_grad():
            xc = x.clamp(-1, 1)
            l_clip = (
                global_clip_loss(clip, xc, target) if loss == "global" else directional_clip_loss(clip, xc, x0, delta_t)
            )
            (x.grad,) = torch.autograd.grad(l_clip + lambda_l1 * (xc - x0).abs().mean(), [x])
        opt.step()
        history.append(l_clip.item())
    return x.detach().clamp(-1, 1), history
