"""Using fine-tuned models: manipulation (Alg. 3), unseen-domain translation and strokes (Alg. 4),
noise combination for multi-attribute transfer and continuous transition (Alg. 5)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from dclip.ddim import check_eta, check_model_batch, ddim_generate, ddim_invert
from dclip.ddpm import q_sample
from dclip.noise_combination import Gammas, mix_noise_predictors, transition_gammas
from dclip.protocols import ScheduledNoisePredictor
from dclip.schedule import PAPER_STEPS, TimeGrid, check_generator, check_int

if TYPE_CHECKING:
    from dclip.finetune import Latents

#: An edit whose values leave [-OUT_OF_RANGE, OUT_OF_RANGE] gets a warning: leaving [-1, 1] by a little is DDIM's
#: few steps; by this much the generation was unstable (t0 near T with few steps).
OUT_OF_RANGE = 3.0
#: The DDIM steps of Alg. 4's return into the pretrained domain (the authors' 40).
DOMAIN_STEPS = 40


class UnstableEditWarning(UserWarning):
    """An edit's values are far outside [-1, 1]: the generation was unstable (t0 near T with few steps)."""


def _warn_if_unstable(x: torch.Tensor, what: str, t0: int, T: int, steps: str) -> torch.Tensor:
    """``x``, with a warning when its values are far outside [-1, 1] (a legitimate but unstable setting)."""
    if x.device.type == "meta":  # shapes only, no values
        return x
    lo, hi = float(x.min()), float(x.max())
    if lo < -OUT_OF_RANGE or hi > OUT_OF_RANGE:
        warnings.warn(
            f"{what} at t0={t0} (T={T}) with {steps} gave values in [{lo:.3g}, {hi:.3g}], far outside the images' "
            f"[-1, 1]: the generation was unstable (each step's error is amplified by 1/sqrt(alpha_bar_t), large "
            "near T). Use a smaller t0 (the paper edits at t0 <= 700) or more steps",
            UnstableEditWarning,
            stacklevel=3,
        )
    return x


def _check_pair(base: ScheduledNoisePredictor, tuned: ScheduledNoisePredictor) -> None:
    for name, m in (("base", base), ("the fine-tuned model", tuned)):
        if not isinstance(m, ScheduledNoisePredictor):
            raise ValueError(
                f"{name} must be a dclip DiffusionModel or another noise predictor with its schedule "
                f"(dclip.load_diffusion, pipe.finetuned(recipe)), got {m!r}"
            )
    if base.image_size != tuned.image_size or base.schedule.T != tuned.schedule.T:
        raise ValueError(
            f"the fine-tuned model ({tuned.name}, {tuned.image_size}px) does not belong to the base "
            f"model ({base.name}, {base.image_size}px)"
        )


def _carried(x_t0: torch.Tensor | Latents | None, t0: int | None, S_for: int | None) -> tuple[int, int]:
    """``(t0, S_for)``: those that :class:`dclip.finetune.Latents` carry, or the explicit ones (``S_for`` None: the
    paper's). An explicit value that differs from what the latents carry is a ``ValueError``."""
    if not hasattr(x_t0, "x_t0"):  # a tensor (checked later), or None: the explicit settings
        if t0 is None:
            raise ValueError("give t0 (the return step of Alg. 3), or latents (dclip.finetune.Latents) that carry it")
        return t0, PAPER_STEPS.S_for if S_for is None else S_for
    for name, given in (("t0", t0), ("S_for", S_for)):
        carried = getattr(x_t0, name)
        if given is not None and given != carried:
            raise ValueError(
                f"{name}={given!r} differs from the latents' {name}={carried} (they were inverted with it): leave "
                f"{name} out, or pass latents inverted with {name}={given}"
            )
    return x_t0.t0, x_t0.S_for


def _latents(
    base: ScheduledNoisePredictor,
    images: torch.Tensor | None,
    x_t0: torch.Tensor | Latents | None,
    *,
    grid: TimeGrid,
    progress: bool,
) -> torch.Tensor:
    """The given latents ``x_t0`` (checked against ``base``'s image size, moved to its device), or those of
    ``images`` by DDIM inversion with the pretrained ``base`` (Eq. 12) on ``grid``. Given both, they must be as
    many: the latents are used and the images only checked."""
    if images is not None:
        base.check_images(images)
    if x_t0 is not None:
        x_t0 = x_t0.x_t0 if hasattr(x_t0, "x_t0") else x_t0  # Latents, or a tensor
        check_model_batch(x_t0, base.image_size, "x_t0")
        if images is not None and len(images) != len(x_t0):
            raise ValueError(
                f"got {len(images)} images and {len(x_t0)} latents x_t0: give the latents of these images, or "
                "only one of the two"
            )
        return x_t0.to(base.device)
    if images is None:
        raise ValueError("give images to invert, or their latents x_t0")
    return ddim_invert(base, images.to(base.device), base.schedule, grid=grid, progress=progress)


def manipulate(
    base: ScheduledNoisePredictor,
    tuned: ScheduledNoisePredictor,
    images: torch.Tensor | None = None,
    *,
    t0: int | None = None,
    S_for: int | None = None,
    S_gen: int = PAPER_STEPS.S_gen,
    x_t0: torch.Tensor | Latents | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Alg. 3: invert ``images`` with the pretrained ``base`` (Eq. 12, S_for steps), regenerate with the fine-tuned
    ``tuned`` (Eq. 13, S_gen steps). Pass ``x_t0`` to reuse latents: :class:`dclip.finetune.Latents` bring their
    t0 and S_for (an explicit one that differs is an error); ``S_for`` None: the paper's. ``eta > 0`` is stochastic
    manipulation (F.5)."""
    _check_pair(base, tuned)
    t0, S_for = _carried(x_t0, t0, S_for)
    check_int(S_for, "S_for", minimum=1)
    check_int(S_gen, "S_gen", minimum=1)
    check_eta(eta)
    check_generator(generator)
    generation = base.schedule.grid(t0=t0, S=S_gen)
    x_t0 = _latents(base, images, x_t0, grid=generation.with_steps(S_for), progress=progress)
    x = ddim_generate(tuned, x_t0, tuned.schedule, grid=generation, eta=eta, generator=generator, progress=progress)
    steps = f"S_gen={S_gen}" if images is None else f"S_for={S_for}, S_gen={S_gen}"
    return _warn_if_unstable(x, "Alg. 3", t0, base.schedule.T, steps)


def to_pretrained_domain(
    base: ScheduledNoisePredictor,
    images: torch.Tensor,
    *,
    t0: int = 500,
    S_gen: int = DOMAIN_STEPS,
    k_ddpm: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Alg. 4, first part: ``k_ddpm`` rounds of stochastic DDPM forward to ``t0`` (Eq. 1) and DDIM reverse with
    the pretrained model (Eq. 13): brings unseen-domain images or strokes into the model's domain."""
    base.check_images(images)
    check_int(S_gen, "S_gen", minimum=1)
    grid = base.schedule.grid(t0=t0, S=S_gen)
    check_generator(generator)
    try:
        check_int(k_ddpm, "k_ddpm", minimum=1)
    except ValueError as e:
        raise ValueError(f"{e}: the number of DDPM rounds of Alg. 4") from None
    x = images.to(base.device)
    for _ in range(k_ddpm):
        x_t0 = q_sample(x, t0, base.schedule, generator=generator)
        x = ddim_generate(base, x_t0, base.schedule, grid=grid, progress=progress).clamp(-1, 1)
    return x


def translate(
    base: ScheduledNoisePredictor,
    tuned: ScheduledNoisePredictor,
    images: torch.Tensor,
    *,
    t0: int,
    S_for: int = PAPER_STEPS.S_for,
    S_gen: int = PAPER_STEPS.S_gen,
    t0_ddpm: int = 500,
    k_ddpm: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alg. 4: translation between unseen domains and stroke-conditioned generation.

    Returns ``(x0_prime, edited)``: the image brought into the pretrained domain, and its manipulation (Alg. 3).
    Every argument is checked before the first step.
    """
    _check_pair(base, tuned)
    base.schedule.check_t0(t0)
    check_int(S_for, "S_for", minimum=1)
    check_int(S_gen, "S_gen", minimum=1)
    check_generator(generator)
    x0_prime = to_pretrained_domain(
        base, images, t0=t0_ddpm, S_gen=DOMAIN_STEPS, k_ddpm=k_ddpm, generator=generator, progress=progress
    )
    return x0_prime, manipulate(base, tuned, x0_prime, t0=t0, S_for=S_for, S_gen=S_gen, progress=progress)


def combine(
    base: ScheduledNoisePredictor,
    tuned: Sequence[ScheduledNoisePredictor],
    gammas: Gammas,
    images: torch.Tensor | None = None,
    t0: int | None = None,
    *,
    S_for: int | None = None,
    S_gen: int = PAPER_STEPS.S_gen,
    x_t0: torch.Tensor | Latents | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Alg. 5, multi-attribute transfer: invert with ``base``, then generate with ``sum_i gamma_i(t) eps_i``
    (Eq. 14). ``x_t0``, ``t0`` and ``S_for`` as for :func:`manipulate`. ``t0`` may also be given by position, after
    ``images``."""
    for m in tuned:
        _check_pair(base, m)
    t0, S_for = _carried(x_t0, t0, S_for)
    check_int(S_for, "S_for", minimum=1)
    check_int(S_gen, "S_gen", minimum=1)
    generation = base.schedule.grid(t0=t0, S=S_gen)
    mixed = mix_noise_predictors(list(tuned), gammas)
    x_t0 = _latents(base, images, x_t0, grid=generation.with_steps(S_for), progress=progress)
    x = ddim_generate(mixed, x_t0, base.schedule, grid=generation, progress=progress)
    steps = f"S_gen={S_gen}" if images is None else f"S_for={S_for}, S_gen={S_gen}"
    return _warn_if_unstable(x, "Alg. 5", t0, base.schedule.T, steps)


def transition(
    base: ScheduledNoisePredictor,
    tuned: ScheduledNoisePredictor,
    gamma: float,
    x_t0: torch.Tensor | Latents,
    *,
    t0: int | None = None,
    S_gen: int = PAPER_STEPS.S_gen,
) -> torch.Tensor:
    """Alg. 5 with the pretrained and one fine-tuned model: ``gamma = 0`` is the plain reconstruction, 1 the edit."""
    return combine(base, [base, tuned], transition_gammas(gamma), t0=t0, S_gen=S_gen, x_t0=x_t0)
