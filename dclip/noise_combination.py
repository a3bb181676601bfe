"""Noise combination (Eq. 14, Alg. 5): mix several noise predictors with weights gamma_i(t) that sum to 1.

``x_{t-1} = sqrt(a_{t-1}) sum_i gamma_i f_i + sqrt(1 - a_{t-1}) sum_i gamma_i eps_i``. Since f_theta is affine
in eps for a fixed x_t and the weights sum to 1, ``sum_i gamma_i f_i = f(sum_i gamma_i eps_i)``: Eq. 14 is the
plain DDIM step with the mixed noise prediction, so :func:`mix_noise_predictors` returns a noise predictor
that every function of :mod:`dclip.ddim` accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from dclip.ddim import NoisePredictor

#: Weights: one number per model (constant over time) or a function ``t -> weights``.
Gammas = Sequence[float] | Callable[[int], Sequence[float]]


def check_gammas(gammas: Sequence[float], n_models: int, tol: float = 1e-5) -> None:
    """Raise a clear ``ValueError`` unless there is one finite weight per model and the weights sum to 1."""
    if len(gammas) != n_models:
        raise ValueError(f"got {len(gammas)} weights for {n_models} noise predictors: give one gamma per model")
    if not all(math.isfinite(g) for g in gammas):
        raise ValueError(f"the weights gamma_i must be finite numbers (Eq. 14), got {list(gammas)}")
    if abs(sum(gammas) - 1.0) > tol:
        raise ValueError(f"the weights gamma_i must sum to 1 (Eq. 14), got {list(gammas)} summing to {sum(gammas):.6f}")


def mix_noise_predictors(eps_models: Sequence[NoisePredictor], gammas: Gammas) -> NoisePredictor:
    """A noise predictor ``eps(x, t) = sum_i gamma_i(t) eps_i(x, t)`` (Eq. 14); weights are checked to sum to 1."""
    if not eps_models:
        raise ValueError("noise combination needs at least one noise predictor")
    if not callable(gammas):
        check_gammas(gammas, len(eps_models))

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        weights = gammas(int(t.flatten()[0])) if callable(gammas) else gammas
        if callable(gammas):
            check_gammas(weights, len(eps_models))
        return sum(g * m(x, t) for g, m in zip(weights, eps_models) if g != 0)  # type: ignore[return-value]

    return eps


def transition_gammas(gamma: float) -> list[float]:
    """Weights ``[1 - gamma, gamma]`` for a continuous transition between the pretrained and a fine-tuned
    model (Alg. 5)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma={gamma} must lie in [0, 1] (0: the original image, 1: the full edit)")
    return [1.0 - gamma, gamma]
