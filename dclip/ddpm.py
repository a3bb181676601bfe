"""DDPM: the stochastic forward process (Eq. 1), its training objective (Eq. 2), ancestral sampling (Eq. 3)."""
from __future__ import annotations

from typing import Callable

import torch

from dclip.schedule import Schedule

#: A noise predictor ``eps_theta(x_t, t) -> eps``: x_t is (N, C, H, W), t a (N,) long tensor of time indices.
NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _coef(schedule: Schedule, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """``alpha_bar_t`` broadcast to ``like``'s shape (per-sample for a tensor ``t``)."""
    a = schedule.alpha_bar_at(t).to(like.device, like.dtype)
    return a.reshape(-1, *([1] * (like.dim() - 1))) if a.dim() else a


def q_sample(x0: torch.Tensor, t: torch.Tensor | int, schedule: Schedule, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM forward process (Eq. 1): ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) w`` with ``w ~ N(0, I)``."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    a = _coef(schedule, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def ddpm_loss(eps_model: NoisePredictor, x0: torch.Tensor, schedule: Schedule,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The simplified DDPM objective (Eq. 2): ``|| w - eps_theta(sqrt(a_t) x_0 + sqrt(1-a_t) w, t) ||^2``, t uniform."""
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    return torch.nn.functional.mse_loss(eps_model(q_sample(x0, t, schedule, noise), t), noise)


def ddpm_step(eps_model: NoisePredictor, x_t: torch.Tensor, t: int, schedule: Schedule,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One ancestral step of the DDPM reverse process (Eq. 3), ``x_t -> x_{t-1}``, with ``sigma_t^2 = beta_t``.

    ``x_{t-1} = (x_t - beta_t / sqrt(1 - a_t) eps_theta(x_t, t)) / sqrt(1 - beta_t) + sigma_t z``; no noise at ``t = 0``.
    """
    beta = float(schedule.betas[t])
    a = float(schedule.alpha_bar_at(t))
    tt = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
    mean = (x_t - beta / (1 - a) ** 0.5 * eps_model(x_t, tt)) / (1 - beta) ** 0.5
    if t == 0:
        return mean
    z = torch.randn(x_t.shape, generator=generator).to(x_t.device, x_t.dtype)
    return mean + beta**0.5 * z


@torch.no_grad()
def ddpm_sample(eps_model: NoisePredictor, shape: tuple[int, ...], schedule: Schedule,
                generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                progress: bool = False) -> torch.Tensor:
    """Ancestral sampling (Eq. 3) from ``x_{T-1} ~ N(0, I)`` down to ``x_0``: all T steps."""
    from tqdm.auto import tqdm

    x = torch.randn(shape, generator=generator).to(device)
    for t in tqdm(range(schedule.T - 1, -1, -1), disable=not progress, desc="DDPM sampling"):
        x = ddpm_step(eps_model, x, t, schedule, generator)
    return x
