"""Noise schedules and time grids (paper Sec. 3.1, Eq. 1; METHOD.md "Notation").

``alpha_bar[t] = prod_{s<=t} (1 - beta_s)`` for ``t = 0 .. T-1``, computed in float64.
The paper writes ``alpha_t`` for ``alpha_bar_t``. One step *before* 0, ``t = -1``, stands for
the clean image: ``alpha_bar(-1) = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """The linear variance schedule of DDPM (Ho et al.): ``T`` betas from ``beta_start`` to ``beta_end``, float64."""
    if T < 2:
        raise ValueError(f"T={T}: a schedule needs at least 2 steps")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


@dataclass(frozen=True)
class Schedule:
    """A discrete diffusion schedule: ``betas`` (T,) and ``alpha_bar`` (T,), both float64."""

    betas: torch.Tensor

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
        return cls(linear_betas(T, beta_start, beta_end))

    @property
    def T(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    def alpha_bar_at(self, t: int | torch.Tensor) -> torch.Tensor:
        """``alpha_bar_t`` for integer ``t`` in ``[-1, T-1]`` (scalar or tensor), with ``alpha_bar(-1) = 1``;
        float64."""
        t = torch.as_tensor(t, dtype=torch.long)
        if (t < -1).any() or (t > self.T - 1).any():
            raise ValueError(
                f"t={t.tolist()} is out of range: the schedule has T={self.T} steps; use -1 <= t <= {self.T - 1}"
            )
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])
        return padded[t + 1]

    def check_t0(self, t0: int) -> None:
        """Raise a clear error unless ``0 < t0 <= T-1`` (the return step of Sec. 3.3)."""
        if not isinstance(t0, (int, np.integer)) or not 0 < t0 <= self.T - 1:
            raise ValueError(
                f"t0={t0!r} is out of range: the model has T={self.T} steps; use an integer 0 < t0 < {self.T}"
            )


def time_sequence(S: int, t0: int, T: int = 1000) -> list[int]:
    """The time grid ``tau_1 = 0 < ... < tau_S = t0`` of S steps over ``[0, t0]`` (Sec. 3.3).

    As in the authors' code, ``tau_i = int(t0 * (i-1)/(S-1))``; with ``S = 1`` the grid is ``[t0]``.
    Generation walks ``tau_S -> ... -> tau_1 -> -1`` (S steps); inversion walks the same grid upwards
    from the clean image at ``-1`` (S steps). Pick ``t0`` so that ``t0 / (S-1)`` is near a whole number
    (the authors advise 301, 401, 500, 601) to keep the steps even.
    """
    if not isinstance(S, (int, np.integer)) or S < 1:
        raise ValueError(f"S={S!r}: the number of steps must be an integer >= 1")
    Schedule(torch.zeros(T, dtype=torch.float64) + 1e-4).check_t0(t0)
    if S == 1:
        return [int(t0)]
    return [int(s) for s in np.linspace(0.0, 1.0, S) * t0]
