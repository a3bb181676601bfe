"""Noise schedules and time grids (paper Sec. 3.1, Eq. 1; METHOD.md "Notation").

``alpha_bar[t] = prod_{s<=t} (1 - beta_s)`` for ``t = 0 .. T-1``, computed in float64.
The paper writes ``alpha_t`` for ``alpha_bar_t``. One step *before* 0, ``t = -1``, stands for
the clean image: ``alpha_bar(-1) = 1``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

#: The paper's schedule (DDPM's linear one, Sec. 3.1): ``T`` steps, ``beta`` from ``PAPER_BETA_START`` to
#: ``PAPER_BETA_END``.
PAPER_T = 1000
PAPER_BETA_START = 1e-4
PAPER_BETA_END = 0.02


class Steps(NamedTuple):
    """The step counts of a DDIM round trip: ``S_for`` inversion (Eq. 12) and ``S_gen`` generation (Eq. 13) steps."""

    S_for: int
    S_gen: int

    def __str__(self) -> str:
        return str(tuple(self))  # printed as the plain pair "(40, 6)"


#: The paper's steps (Sec. 4): 40 inversion and 6 generation steps, to fine-tune and to edit.
PAPER_STEPS = Steps(S_for=40, S_gen=6)


def linear_betas(
    T: int = PAPER_T, beta_start: float = PAPER_BETA_START, beta_end: float = PAPER_BETA_END
) -> torch.Tensor:
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
    def linear(
        cls, T: int = PAPER_T, beta_start: float = PAPER_BETA_START, beta_end: float = PAPER_BETA_END
    ) -> Schedule:
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
        """Raise a clear error unless ``t0`` is an integer (not a bool, not a tensor) with ``0 < t0 <= T-1`` (the
        return step of Sec. 3.3)."""
        _check_t0(t0, self.T)

    def grid(self, *, t0: int, S: int) -> TimeGrid:
        """The time grid of ``S`` steps over ``[0, t0]`` on this schedule, checked once (:class:`TimeGrid`)."""
        return TimeGrid(t0=t0, S=S, T=self.T)


def _check_t0(t0: int, T: int) -> None:
    try:
        check_int(t0, "t0")
    except ValueError as e:
        raise ValueError(f"{e}: the model has T={T} steps; use an integer 0 < t0 < {T}") from None
    if not 0 < t0 <= T - 1:
        raise ValueError(f"t0={t0!r} is out of range: the model has T={T} steps; use an integer 0 < t0 < {T}")


def check_int(value: object, name: str, minimum: int | None = None) -> None:
    """Raise a clear ``ValueError`` unless ``value`` is a Python or NumPy integer (``True``, ``2.5`` and tensors are
    not) and at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        hint = " (use int(x) or x.item())" if isinstance(value, (torch.Tensor, np.ndarray)) else ""
        raise ValueError(f"{name}={value!r} must be an integer, not a {type(value).__name__}{hint}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")


def check_generator(generator: object) -> None:
    """Raise a clear ``ValueError`` unless ``generator`` is None or a ``torch.Generator`` (not a seed)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator={generator!r} must be a torch.Generator or None, not a {type(generator).__name__}: "
            "use torch.Generator().manual_seed(seed)"
        )


@dataclass(frozen=True)
class TimeGrid:
    """The time grid ``tau_1 = 0 < ... < tau_S = t0`` of S steps over ``[0, t0]`` of a T-step schedule (Sec. 3.3),
    built and checked once (as diffusers' ``set_timesteps``); pass it on instead of ``t0`` and ``S``.

    As in the authors' code, ``tau_i = int(t0 * (i-1)/(S-1))``; with ``S = 1`` the grid is ``[t0]``.
    Generation walks ``tau_S -> ... -> tau_1 -> -1`` (S steps); inversion walks the same grid upwards
    from the clean image at ``-1`` (S steps). Pick ``t0`` so that ``t0 / (S-1)`` is near a whole number
    (the authors advise 301, 401, 500, 601) to keep the steps even. The grid has at most ``t0 + 1`` distinct
    times: a larger S repeats times (steps that change nothing) and is lowered to ``t0 + 1`` with a warning.
    """

    t0: int
    S: int
    T: int

    def __post_init__(self) -> None:
        try:
            check_int(self.S, "S", minimum=1)
        except ValueError as e:
            raise ValueError(f"{e}: the number of steps must be an integer >= 1") from None
        check_int(self.T, "T", minimum=2)
        _check_t0(self.t0, self.T)
        if self.S > self.t0 + 1:
            warnings.warn(
                f"S={self.S} steps over [0, t0={self.t0}] would repeat times: using the {self.t0 + 1} distinct ones",
                stacklevel=4,
            )
            object.__setattr__(self, "S", self.t0 + 1)

    def with_steps(self, S: int) -> TimeGrid:
        """The grid of ``S`` steps over the same ``[0, t0]`` (inversion's S_for beside generation's S_gen)."""
        return TimeGrid(t0=self.t0, S=S, T=self.T)

    @property
    def times(self) -> list[int]:
        """``[tau_1, ..., tau_S]``, increasing from 0 to t0."""
        if self.S == 1:
            return [int(self.t0)]
        return [int(s) for s in np.linspace(0.0, 1.0, self.S) * self.t0]

    @property
    def generation_pairs(self) -> list[tuple[int, int]]:
        """The (t, t_next) steps of generation: ``(tau_S, tau_{S-1}), ..., (tau_1, -1)`` (S steps)."""
        seq = self.times
        return list(zip(reversed(seq), reversed([-1] + seq[:-1])))

    @property
    def inversion_pairs(self) -> list[tuple[int, int]]:
        """The (t, t_next) steps of inversion: ``(-1, tau_1), (tau_1, tau_2), ..., (tau_{S-1}, tau_S)`` (S steps)."""
        seq = self.times
        return list(zip([-1] + seq[:-1], seq))


def time_sequence(S: int, t0: int, T: int) -> list[int]:
    """The time grid ``tau_1 = 0 < ... < tau_S = t0`` of S steps over ``[0, t0]`` of a T-step schedule (Sec. 3.3):
    :attr:`TimeGrid.times`."""
    return TimeGrid(t0=t0, S=S, T=T).times
