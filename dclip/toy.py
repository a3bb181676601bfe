"""A Gaussian toy where everything is exact: data ``x_0 ~ N(mu, s^2 I)``.

The optimal noise predictor ``E[w | x_t]`` is closed-form, and so is the probability-flow ODE that DDIM
discretizes (Eq. 7, 25-28): with ``y = x / sqrt(a)`` and ``p = sqrt(1/a - 1)``,
``dy/dp = eps = p (y - mu) / (s^2 + p^2)``,
whose solution is ``y(p) - mu = (y(0) - mu) sqrt(s^2 + p^2) / s``. Used by the tests and by chapter 02.
"""

from __future__ import annotations

import torch

from dclip.schedule import Schedule


class GaussianEps:
    """The exact noise predictor for ``x_0 ~ N(mu, s^2 I)``:
    ``eps(x_t, t) = sqrt(1-a)(x_t - sqrt(a) mu) / (a s^2 + 1 - a)``."""

    def __init__(self, mu: float | torch.Tensor, s: float, schedule: Schedule):
        self.mu, self.s, self.schedule = mu, float(s), schedule

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.schedule.alpha_bar_at(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)


def exact_flow(x0: torch.Tensor, t: int, mu: float | torch.Tensor, s: float, schedule: Schedule) -> torch.Tensor:
    """The exact solution of the DDIM ODE (Eq. 7) from the clean ``x0`` to time ``t`` for Gaussian data."""
    a = schedule.alpha_bar_at(t).to(x0.dtype)
    p2 = 1 / a - 1
    y = mu + (x0 - mu) * (s**2 + p2).sqrt() / s
    return a.sqrt() * y
