"""DDIM: the generalized reverse step (Eq. 5/23), deterministic inversion (Eq. 12) and generation (Eq. 13).

Every function takes any noise predictor ``eps(x, t) -> tensor`` (``x`` (N, C, H, W), ``t`` a (N,) long
tensor): a diffusers ``UNet2DModel`` wrapped by :func:`dclip.load_diffusion`, a closed-form model, a lambda.

Time convention (the authors' grid, :class:`dclip.schedule.TimeGrid`): generation walks
``tau_S = t0 -> ... -> tau_1 = 0 -> -1`` and inversion walks the same grid upwards from the clean image at
``-1`` (``alpha_bar(-1) = 1``); both take S steps. The noise predictor is never asked about ``t = -1``: the
step that leaves the clean image evaluates it at ``t = 0``, its first trained time.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from dclip.progress import progress_bar
from dclip.schedule import Schedule, TimeGrid, check_generator

#: A noise predictor ``eps_theta(x_t, t) -> eps``: x_t is (N, C, H, W), t a (N,) long tensor of time indices.
NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_NONNEGATIVE_OK = False
#: RGB images of at least this many pixels are photo-like: one with no value below 0 is taken for a [0, 1] image.
#: Smaller or other-channel tensors (the toy's few-pixel "images") can legitimately be all non-negative.
MIN_PHOTO_PIXELS = 64


@contextlib.contextmanager
def nonnegative_images_ok() -> Iterator[None]:
    """Within this block, [-1, 1] images with no value below 0 (every pixel at least mid-grey) are accepted:
    :func:`check_image` otherwise takes them for [0, 1] images, the usual mistake."""
    global _NONNEGATIVE_OK
    before, _NONNEGATIVE_OK = _NONNEGATIVE_OK, True
    try:
        yield
    finally:
        _NONNEGATIVE_OK = before


def check_image(x: torch.Tensor, name: str = "image", *, tol: float = 0.05) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is a non-empty (N, C, H, W) float tensor of finite values in
    [-1, 1] (+- ``tol``). A photo-like RGB image (:data:`MIN_PHOTO_PIXELS` pixels or more) with no value below 0
    but some above it is taken for a [0, 1] image (a photo in [-1, 1] has dark pixels) and refused, unless inside
    :func:`nonnegative_images_ok`."""
    check_batch(x, name)
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - tol or hi > 1 + tol:
        hint = " (it looks like [0, 1]: use x * 2 - 1)" if lo >= 0 else ""
        hint = " (it looks like [0, 255]: use x / 127.5 - 1)" if hi > 2 else hint
        raise ValueError(f"{name} must have values in [-1, 1], got [{lo:.3f}, {hi:.3f}]{hint}")
    photo_like = x.shape[1] == 3 and x.shape[-1] * x.shape[-2] >= MIN_PHOTO_PIXELS
    if photo_like and not _NONNEGATIVE_OK and x.device.type != "meta":
        per_image = x.detach().flatten(1)
        suspect = ((per_image.min(1).values >= 0) & (per_image.max(1).values > 0)).nonzero().flatten().tolist()
        if suspect:
            raise ValueError(
                f"{name}: image {suspect[0]} ({len(suspect)} of {x.shape[0]}) has no value below 0, so it looks like "
                "a [0, 1] image where [-1, 1] is expected: use x * 2 - 1 (dclip.load_image gives [-1, 1]). If it "
                "really is a [-1, 1] image without dark pixels, call inside `with dclip.ddim.nonnegative_images_ok():`"
            )


def check_batch(x: torch.Tensor, name: str = "x") -> None:
    """Raise a clear ``ValueError`` unless ``x`` is a non-empty 4-D (N, C, H, W) floating-point tensor of finite
    values (one NaN would spread through every step to the whole output)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be an (N, C, H, W) tensor, got {shape}; add a batch dimension with x[None]")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f"{name} is an empty batch {tuple(x.shape)}: give at least one image")
    bad = int((~torch.isfinite(x.detach())).sum()) if x.device.type != "meta" else 0  # meta: shapes, no values
    if bad:
        raise ValueError(f"{name} holds {bad} non-finite values (NaN or inf) of {x.numel()}: check the input")


def check_model_batch(x: torch.Tensor, image_size: int, name: str = "x_t0") -> None:
    """:func:`check_batch`, and (N, 3, image_size, image_size): latents of a model's own size and layout."""
    check_batch(x, name)
    if tuple(x.shape[1:]) != (3, image_size, image_size):
        raise ValueError(
            f"{name} must be (N, 3, {image_size}, {image_size}) for this model, got {tuple(x.shape)}"
            + (" (channels last? use x.permute(0, 3, 1, 2))" if x.shape[-1] == 3 else "")
        )


def check_eta(eta: float) -> None:
    """Raise a clear ``ValueError`` unless ``eta`` (the noise of Eq. 5) is a finite number >= 0."""
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not eta >= 0 or eta == float("inf"):
        raise ValueError(f"eta={eta} must be a finite number >= 0 (0: DDIM, 1: DDPM-like)")


def _time(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), max(t, 0), dtype=torch.long, device=x.device)


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """``f_theta(x_t, t) = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)`` (Eq. 6/24): the predicted clean image."""
    return (x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5


def sigma(alpha_bar_t: float, alpha_bar_next: float, eta: float) -> float:
    """The noise scale of the generalized process (Eq. 5):
    ``sigma_t = eta * sqrt((1 - a_next) / (1 - a_t)) * sqrt(1 - a_t / a_next)``."""
    if alpha_bar_next <= alpha_bar_t:  # only for reverse steps; a step into t = -1 from t = 0 has a tiny sigma
        return 0.0
    return eta * ((1 - alpha_bar_next) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_next)) ** 0.5


class DDIMStepOutput(NamedTuple):
    """One step's outputs (as diffusers' ``DDIMSchedulerOutput``): ``x_next`` (the sample at ``t_next``) and
    ``x0_pred`` (``f_theta(x_t, t)``, Eq. 6); a tuple, so ``x_next, x0_pred = ddim_step(...)`` works."""

    x_next: torch.Tensor
    x0_pred: torch.Tensor


def ddim_step(
    eps_model: NoisePredictor,
    x_t: torch.Tensor,
    t: int,
    t_next: int,
    schedule: Schedule,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
    clip_x0: bool = False,
) -> DDIMStepOutput:
    """One step of the generalized process (Eq. 5/23) from time ``t`` to ``t_next``; returns
    :class:`DDIMStepOutput` ``(x_next, x0_pred)``.

    ``x_next = sqrt(a_next) f_theta(x_t, t) + sqrt(1 - a_next - sigma^2) eps_theta(x_t, t) + sigma z``.
    With ``eta = 0`` this is the deterministic DDIM step: Eq. 13 when ``t_next < t`` (generation) and
    Eq. 12 when ``t_next > t`` (inversion). ``eps`` may be passed in when it is already computed.
    ``clip_x0`` clamps f_theta to [-1, 1] (as diffusers' ``clip_sample``): needed when sampling from pure noise,
    where ``1/sqrt(a_t)`` amplifies any error of eps; the paper's editing (t0 <= 600) does not clip.
    """
    check_eta(eta)
    check_generator(generator)
    a_t, a_next = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(t_next))
    if eps is None:
        eps = eps_model(x_t, _time(t, x_t))
    x0 = predict_x0(x_t, eps, a_t)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    s = sigma(a_t, a_next, eta)
    x_next = a_next**0.5 * x0 + max(1 - a_next - s**2, 0.0) ** 0.5 * eps
    if s > 0:
        x_next = x_next + s * torch.randn(x_t.shape, generator=generator).to(x_t.device, x_t.dtype)
    return DDIMStepOutput(x_next, x0)


def generation_pairs(S: int, t0: int, T: int) -> list[tuple[int, int]]:
    """The (t, t_next) steps of generation: ``(tau_S, tau_{S-1}), ..., (tau_1, -1)`` (S steps; T: the schedule's)."""
    return TimeGrid(t0=t0, S=S, T=T).generation_pairs


def inversion_pairs(S: int, t0: int, T: int) -> list[tuple[int, int]]:
    """The (t, t_next) steps of inversion: ``(-1, tau_1), ..., (tau_{S-1}, tau_S)`` (S steps; T: the schedule's)."""
    return TimeGrid(t0=t0, S=S, T=T).inversion_pairs


def _grid(schedule: Schedule, t0: int | None, S: int | None, grid: TimeGrid | None, name: str) -> TimeGrid:
    """``grid`` (built and checked once by the caller, on this schedule), or the grid of ``t0`` and ``S``."""
    if grid is None:
        if t0 is None or S is None:
            raise TypeError(f"give t0 and {name}, or a grid (schedule.grid(t0=..., S=...))")
        return schedule.grid(t0=t0, S=S)
    if t0 is not None or S is not None or grid.T != schedule.T:
        raise ValueError(f"give a grid (T={grid.T}) of this schedule (T={schedule.T}), or t0 and {name}: not both")
    return grid


def _run(
    eps_model: NoisePredictor,
    x: torch.Tensor,
    pairs: list[tuple[int, int]],
    schedule: Schedule,
    *,
    eta: float,
    generator: torch.Generator | None,
    grad: bool,
    checkpoint: bool,
    progress: bool,
    desc: str,
    clip_x0: bool = False,
) -> torch.Tensor:
    device = getattr(eps_model, "device", None)
    if isinstance(device, torch.device):  # latents cached on the CPU, a model on the GPU
        x = x.to(device)
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        for t, t_next in progress_bar(pairs, show=progress, desc=desc, leave=False):
            if checkpoint and torch.is_grad_enabled() and eta == 0:
                x = _checkpoint(
                    lambda y, a=t, b=t_next: ddim_step(eps_model, y, a, b, schedule, clip_x0=clip_x0).x_next,
                    x,
                    use_reentrant=False,
                )
            else:
                x = ddim_step(eps_model, x, t, t_next, schedule, eta=eta, generator=generator, clip_x0=clip_x0).x_next
    return x


def ddim_invert(
    eps_model: NoisePredictor,
    x0: torch.Tensor,
    schedule: Schedule,
    *,
    t0: int | None = None,
    S_for: int | None = None,
    grid: TimeGrid | None = None,
    progress: bool = False,
    grad: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM inversion (Eq. 12): encode images ``x0`` ([-1, 1], (N, C, H, W)) into latents ``x_t0``.

    S_for steps over the grid of :class:`dclip.schedule.TimeGrid` (``t0`` and ``S_for``, or a ``grid`` built
    once), batched. Returns (N, C, H, W).
    """
    check_image(x0, "x0")
    grid = _grid(schedule, t0, S_for, grid, "S_for")
    return _run(
        eps_model,
        x0,
        grid.inversion_pairs,
        schedule,
        eta=0.0,
        generator=None,
        grad=grad,
        checkpoint=False,
        progress=progress,
        desc=f"DDIM inversion to t0={grid.t0}",
    )


def ddim_generate(
    eps_model: NoisePredictor,
    x_t0: torch.Tensor,
    schedule: Schedule,
    *,
    t0: int | None = None,
    S_gen: int | None = None,
    grid: TimeGrid | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    grad: bool = False,
    checkpoint: bool = False,
    clip_x0: bool = False,
) -> torch.Tensor:
    """DDIM generation (Eq. 13) from latents ``x_t0`` back to images, in S_gen steps; ``eta > 0`` adds noise (Eq. 5).

    ``grad=True`` keeps the graph through every step (fine-tuning, Alg. 1); ``checkpoint=True`` then
    recomputes each step's activations in the backward pass, so memory does not grow with S_gen.
    ``clip_x0`` clamps each predicted x0 to [-1, 1]: use it to sample from pure noise (t0 near T).
    ``t0`` and ``S_gen``, or a ``grid`` built once (:class:`dclip.schedule.TimeGrid`).
    Returns images (N, C, H, W), nominally in [-1, 1] (not clipped).
    """
    check_batch(x_t0, "x_t0")
    grid = _grid(schedule, t0, S_gen, grid, "S_gen")
    check_eta(eta)
    check_generator(generator)
    return _run(
        eps_model,
        x_t0,
        grid.generation_pairs,
        schedule,
        eta=eta,
        generator=generator,
        grad=grad,
        checkpoint=checkpoint,
        progress=progress,
        desc=f"DDIM generation from t0={grid.t0}",
        clip_x0=clip_x0,
    )


def reconstruct(
    eps_model: NoisePredictor,
    x0: torch.Tensor,
    schedule: Schedule,
    *,
    t0: int,
    S_for: int,
    S_gen: int,
    progress: bool = False,
) -> torch.Tensor:
    """Invert then regenerate with the same model (Eq. 12 then Eq. 13): the round trip of Tables 1 and 4."""
    x_t0 = ddim_invert(eps_model, x0, schedule, t0=t0, S_for=S_for, progress=progress)
    return ddim_generate(eps_model, x_t0, schedule, t0=t0, S_gen=S_gen, progress=progress)
