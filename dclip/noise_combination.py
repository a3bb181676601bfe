"""Noise combination (Eq. 14, Alg. 5): mix several noise predictors with weights gamma_i(t) that sum to 1.

``x_{t-1} = sqrt(a_{t-1}) sum_i gamma_i f_i + sqrt(1 - a_{t-1}) sum_i gamma_i eps_i``. Since f_theta is affine
in eps for a fixed x_t and the weights sum to 1, ``sum_i gamma_i f_i = f(sum_i gamma_i eps_i)``: Eq. 14 is the
plain DDIM step with the mixed noise prediction, so :func:`mix_noise_predictors` returns a noise predictor
that every function of :mod:`dclip.ddim` accepts.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence

import torch

from dclip.ddim import NoisePredictor

#: Weights: one number per model (constant over time) or a function ``t -> weights``.
Gammas = Sequence[float] | Callable[[int], Sequence[float]]


class ExtrapolationWarning(UserWarning):
    """Noise-combination weights outside [0, 1]: legitimate (they still sum to 1) but beyond the paper's Alg. 5."""


def check_gammas(gammas: Sequence[float], n_models: int, tol: float = 1e-5) -> bool:
    """Raise a clear ``ValueError`` unless there is one finite weight per model and the weights sum to 1; returns
    whether a weight lies outside [0, 1] (an extrapolation, which :func:`mix_noise_predictors` warns about)."""
    if isinstance(gammas, (str, bytes)) or not isinstance(gammas, Sequence):
        raise ValueError(
            f"gammas={gammas!r} must be one number per noise predictor (e.g. [0.5, 0.5]) or a function t -> numbers"
        )
    odd = [g for g in gammas if isinstance(g, bool) or not isinstance(g, numbers.Real)]
    if odd:
        raise ValueError(
            f"the weights gamma_i must be numbers, got {odd[0]!r} in {list(gammas)}: give one weight per model in "
            "the order of the models (recipe names go to the models, not the weights)"
        )
    if len(gammas) != n_models:
        raise ValueError(f"got {len(gammas)} weights for {n_models} noise predictors: give one gamma per model")
    if not all(math.isfinite(g) for g in gammas):
        raise ValueError(f"the weights gamma_i must be finite numbers (Eq. 14), got {list(gammas)}")
    if abs(sum(gammas) - 1.0) > tol:
        raise ValueError(f"the weights gamma_i must sum to 1 (Eq. 14), got {list(gammas)} summing to {sum(gammas):.6f}")
    return any(g < 0 or g > 1 for g in gammas)


def _warn_extrapolation(gammas: Sequence[float], t: int | None) -> None:
    at = "" if t is None else f" at t={t}"
    warnings.warn(
        f"noise-combination weights {[round(float(g), 4) for g in gammas]}{at} lie outside [0, 1]: an extrapolation "
        "beyond the fine-tuned models (the paper's Alg. 5 uses weights in [0, 1]); results may leave the image domain",
        ExtrapolationWarning,
        stacklevel=4,
    )


def mix_noise_predictors(eps_models: Sequence[NoisePredictor], gammas: Gammas) -> NoisePredictor:
    """A noise predictor ``eps(x, t) = sum_i gamma_i(t) eps_i(x, t)`` (Eq. 14); weights are checked to sum to 1.
    Weights outside [0, 1] (an extrapolation) give one :class:`ExtrapolationWarning` per mixed predictor."""
    if isinstance(eps_models, (str, bytes)) or not isinstance(eps_models, Sequence) or not eps_models:
        raise ValueError("noise combination needs a non-empty list of noise predictors")
    if not all(callable(m) for m in eps_models):
        bad = next(m for m in eps_models if not callable(m))
        raise ValueError(f"{bad!r} is not a noise predictor: give models (e.g. pipe.finetuned('angry')), not names")
    warned = False
    if not callable(gammas) and check_gammas(gammas, len(eps_models)):
        _warn_extrapolation(gammas, None)
        warned = True

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        nonlocal warned
        weights = gammas(int(t.flatten()[0])) if callable(gammas) else gammas
        if callable(gammas) and check_gammas(weights, len(eps_models)) and not warned:
            _warn_extrapolation(weights, int(t.flatten()[0]))
            warned = True
        return sum(g * m(x, t) for g, m in zip(weights, eps_models) if g != 0)  # type: ignore[return-value]

    return eps


def transition_gammas(gamma: float) -> list[float]:
    """Weights ``[1 - gamma, gamma]`` for a continuous transition between the pretrained and a fine-tuned
    model (Alg. 5)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma={gamma} must lie in [0, 1] (0: the original image, 1: the full edit)")
    return [1.0 - gamma, gamma]
