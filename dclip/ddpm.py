"""DDPM: the stochastic forward process (Eq. 1), its training objective (Eq. 2), ancestral sampling (Eq. 3)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dclip.ddim import NoisePredictor, check_batch
from dclip.schedule import Schedule, check_generator


def _coefs(schedule: Schedule, t: torch.Tensor | int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sqrt(a_t)`` and ``sqrt(1 - a_t)``, computed in float64 and broadcast to ``like`` (per sample for a
    tensor t)."""
    a = schedule.alpha_bar_at(t)
    a = a.reshape(-1, *([1] * (like.dim() - 1))) if a.dim() else a
    return a.sqrt().to(like.device, like.dtype), (1 - a).sqrt().to(like.device, like.dtype)


def q_sample(
    x0: torch.Tensor,
    t: torch.Tensor | int,
    schedule: Schedule,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDPM forward process (Eq. 1): ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) w`` with ``w ~ N(0, I)``."""
    check_batch(x0, "x0")
    check_generator(generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    if noise.shape != x0.shape:
        raise ValueError(f"noise {tuple(noise.shape)} and x0 {tuple(x0.shape)} must have the same shape")
    if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape != (x0.shape[0],):
        raise ValueError(f"t must be one time per image: shape ({x0.shape[0]},), got {tuple(t.shape)}")
    sqrt_a, sqrt_1ma = _coefs(schedule, t, x0)
    return sqrt_a * x0 + sqrt_1ma * noise


def ddpm_loss(
    eps_model: NoisePredictor, x0: torch.Tensor, schedule: Schedule, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The simplified DDPM objective (Eq. 2): ``|| w - eps_theta(sqrt(a_t) x_0 + sqrt(1-a_t) w, t) ||^2``, t uniform."""
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    return torch.nn.functional.mse_loss(eps_model(q_sample(x0, t, schedule, noise), t), noise)


def _ddpm_step(
    eps_model: NoisePredictor,
    x_t: torch.Tensor,
    t: int,
    schedule: Schedule,
    generator: torch.Generator | None,
    clip_x0: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step (Eq. 3) and the predicted x0 ``f_theta(x_t, t)`` (Eq. 6, unclipped) it implies."""
    beta = float(schedule.betas[t])
    a, a_prev = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(t - 1))
    tt = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
    eps = eps_model(x_t, tt)
    x0 = (x_t - (1 - a) ** 0.5 * eps) / a**0.5
    if clip_x0:  # the posterior mean of q(x_{t-1} | x_t, x0) with x0 clamped to [-1, 1] (diffusers' clip_sample)
        mean = a_prev**0.5 * beta / (1 - a) * x0.clamp(-1, 1) + (1 - beta) ** 0.5 * (1 - a_prev) / (1 - a) * x_t
    else:  # Eq. 3 as the paper writes it (the same posterior mean with the unclamped x0)
        mean = (x_t - beta / (1 - a) ** 0.5 * eps) / (1 - beta) ** 0.5
    if t == 0:
        return mean, x0
    z = torch.randn(x_t.shape, generator=generator).to(x_t.device, x_t.dtype)
    return mean + beta**0.5 * z, x0


def ddpm_step(
    eps_model: NoisePredictor,
    x_t: torch.Tensor,
    t: int,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    *,
    clip_x0: bool = False,
) -> torch.Tensor:
    """One ancestral step of the DDPM reverse process (Eq. 3), ``x_t -> x_{t-1}``, with ``sigma_t^2 = beta_t``.

    ``x_{t-1} = (x_t - beta_t / sqrt(1 - a_t) eps_theta(x_t, t)) / sqrt(1 - beta_t) + sigma_t z``;
    no noise at ``t = 0``. ``clip_x0`` clamps the predicted x0 ``f_theta(x_t, t)`` (Eq. 6) to [-1, 1] and takes
    the mean ``sqrt(a_{t-1}) beta_t / (1 - a_t) x0 + sqrt(1 - beta_t) (1 - a_{t-1}) / (1 - a_t) x_t``, which is
    Eq. 3's mean when nothing is clamped (diffusers' ``DDPMScheduler(clip_sample=True)``).
    """
    return _ddpm_step(eps_model, x_t, t, schedule, generator, clip_x0)[0]


@torch.no_grad()
def ddpm_sample(
    eps_model: NoisePredictor,
    shape: tuple[int, ...],
    schedule: Schedule,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    *,
    clip_x0: bool = False,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Ancestral sampling (Eq. 3) from ``x_{T-1} ~ N(0, I)`` down to ``x_0``: all T steps.

    ``clip_x0`` clamps each step's predicted x0 to [-1, 1] (:func:`ddpm_step`); ``on_step(t, x0_pred)`` is
    called at every step with the unclamped predicted x0 ``f_theta(x_t, t)`` (Eq. 6), (N, C, H, W), to watch
    the chain. The same generator gives the same noise with and without ``clip_x0``."""
    from dclip.progress import progress_bar

    x = torch.randn(shape, generator=generator).to(device)
    for t in progress_bar(range(schedule.T - 1, -1, -1), show=progress, desc="DDPM sampling"):
        x, x0 = _ddpm_step(eps_model, x, t, schedule, generator, clip_x0)
        if on_step is not None:
            on_step(t, x0)
    return x
