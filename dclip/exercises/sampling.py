"""Checks of the sampling side: the forward process (Eq. 1), the DDIM step (Eq. 12/13) and inversion (Eq. 12)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dclip.ddim import (
    ddim_generate,
    ddim_invert,
    ddim_step,
    inversion_pairs,
    predict_x0,
    reconstruct,
)
from dclip.ddpm import q_sample
from dclip.exercises.harness import (
    SHAPE,
    Case,
    Check,
    Recorder,
    call,
    generator,
    images,
    matches,
    per_image,
    run_check,
)
from dclip.schedule import Schedule
from dclip.toy import GaussianEps

#: dclip's deterministic DDIM, from the outermost wrapper in: off limits where the student writes the steps.
DDIM_FUNCTIONS = (reconstruct, ddim_generate, ddim_invert, ddim_step)


def check_q_sample(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """The DDPM forward process (Eq. 1): ``fn(x0, t, schedule, noise)`` must give
    ``sqrt(a_t) x0 + sqrt(1 - a_t) noise`` (:func:`dclip.ddpm.q_sample`), for one time ``t`` (an int) and for
    one time per image (a (N,) long tensor). Off limits: :func:`dclip.ddpm.q_sample` (and so every dclip function
    that calls it)."""
    g, schedule = generator(seed), Schedule.linear()
    x0, noise = images(g), torch.randn(SHAPE, generator=g, dtype=torch.float64)

    def case(label: str, t: int | torch.Tensor, hint: str = "") -> Case:
        a, alpha = per_image(schedule.alpha_bar_at(t)), per_image(1 - schedule.betas[t])
        diagnoses = [
            matches(
                lambda: alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise,
                "Eq. 1 uses alpha_bar_t = prod_{s<=t} (1 - beta_s) (schedule.alpha_bar_at(t)), which the paper writes "
                "alpha_t; yours matches alpha_t = 1 - beta_t of the last step alone",
            ),
            matches(lambda: a * x0 + (1 - a) * noise, "the coefficients are square roots: sqrt(a_t) and sqrt(1 - a_t)"),
            matches(
                lambda: (1 - a).sqrt() * x0 + a.sqrt() * noise,
                "sqrt(a_t) multiplies x0 and sqrt(1 - a_t) the noise; yours has them swapped",
            ),
        ]
        given = lambda: {"x0": x0.clone(), "t": t.clone() if isinstance(t, torch.Tensor) else t}  # noqa: E731
        yours = lambda: call(fn, {**given(), "schedule": schedule, "noise": noise.clone()})  # noqa: E731
        return Case(label, yours, q_sample(x0, t, schedule, noise), diagnoses, hint)

    times = torch.tensor([20, 700])
    return run_check(
        "q_sample (Eq. 1)",
        "dclip.ddpm.q_sample",
        fn,
        [
            case("with t=300", 300),
            case(
                f"with one time per image, t=tensor({times.tolist()})",
                times,
                "with a (N,) tensor t, alpha_bar_t has shape (N,): reshape it to (N, 1, 1, 1) so that each image "
                "gets its own coefficient",
            ),
        ],
        forbidden=[q_sample],
    )


def _step_formula(eps: torch.Tensor, x_t: torch.Tensor, a_t: float, a_next: float, a_noise: float) -> torch.Tensor:
    """``sqrt(a_next) f(x_t) + sqrt(1 - a_noise) eps``: Eq. 12/13 when ``a_noise = a_next``."""
    return a_next**0.5 * predict_x0(x_t, eps, a_t) + (1 - a_noise) ** 0.5 * eps


def check_ddim_step(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """One deterministic DDIM step (eta = 0): ``fn(eps_model, x_t, t, t_next, schedule)`` must return
    ``x_next = sqrt(a_next) f_theta(x_t, t) + sqrt(1 - a_next) eps_theta(x_t, t)`` (:func:`dclip.ddim.ddim_step`),
    both as generation (Eq. 13, ``t_next < t``, down to the clean image at ``t_next = -1`` where
    ``alpha_bar(-1) = 1``) and as inversion (Eq. 12, ``t_next > t``, from ``t = -1``). The noise predictor is
    the exact one of Gaussian data (:class:`dclip.toy.GaussianEps`); it is never to be asked about ``t = -1``.
    Off limits: dclip's DDIM (:func:`dclip.ddim.ddim_step`, :func:`~dclip.ddim.predict_x0` (Eq. 6 is half the step),
    ``ddim_generate``, ``ddim_invert``, ``reconstruct``); ``schedule.alpha_bar_at`` is the helper to use."""
    g, schedule = generator(seed), Schedule.linear()
    model = GaussianEps(0.2, 0.5, schedule)

    def case(label: str, x: torch.Tensor, t: int, t_next: int) -> Case:
        recorder = Recorder(model)
        eps = model(x, torch.full((x.shape[0],), max(t, 0)))

        def indexed(i: int) -> float:  # Python's indexing: schedule.alpha_bar[-1] is the last time, T - 1
            return float(schedule.alpha_bar[i])

        def alpha(i: int) -> float:
            return 1.0 if i < 0 else float(1 - schedule.betas[i])

        a_t, a_next = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(t_next))

        def times(_: object) -> str | None:
            if recorder.times == [max(t, 0)]:
                return None
            when = f"at the current time t={t}" if t >= 0 else "at t=0 (from the clean image at t=-1: never ask t=-1)"
            return f"your step asked the noise predictor about t={recorder.times}; Eq. 12/13 ask it once, {when}"

        diagnoses = [
            times,
            matches(
                lambda: _step_formula(eps, x, indexed(t), indexed(t_next), indexed(t_next)),
                "schedule.alpha_bar[-1] is alpha_bar at the last time T-1 (Python's negative index), but the clean "
                "image at t=-1 has alpha_bar(-1) = 1: use schedule.alpha_bar_at(t)",
            ),
            matches(
                lambda: _step_formula(eps, x, alpha(t), alpha(t_next), alpha(t_next)),
                "the paper's alpha_t is alpha_bar_t = prod_{s<=t} (1 - beta_s) (schedule.alpha_bar_at(t)); yours "
                "matches 1 - beta_t",
            ),
            matches(
                lambda: _step_formula(eps, x, a_t, a_next, a_t),
                "the noise term of x_next is sqrt(1 - alpha_bar(t_next)) eps_theta(x_t, t); yours matches "
                "sqrt(1 - alpha_bar(t)) there",
            ),
            matches(
                lambda: predict_x0(x, eps, a_t),
                "yours returned f_theta(x_t, t), the predicted x0 (Eq. 6); the step goes on to "
                "x_next = sqrt(a_next) f_theta + sqrt(1 - a_next) eps_theta",
            ),
        ]
        yours = lambda: call(
            fn, {"eps_model": recorder, "x_t": x.clone(), "t": t, "t_next": t_next, "schedule": schedule}
        )  # noqa: E731
        expected = ddim_step(model, x, t, t_next, schedule).x_next
        return Case(label, yours, expected, diagnoses, "return x_next alone, as a tensor of x_t's shape")

    noisy, clean = torch.randn(SHAPE, generator=g, dtype=torch.float64), images(g)
    return run_check(
        "ddim_step (Eq. 12/13)",
        "dclip.ddim.ddim_step",
        fn,
        [
            case("on generation (Eq. 13) from t=500 to t=300", noisy, 500, 300),
            case("on generation (Eq. 13) from t=0 to the clean image at t=-1", clean, 0, -1),
            case("on inversion (Eq. 12) from the clean image at t=-1 to t=100", clean, -1, 100),
            case("on inversion (Eq. 12) from t=300 to t=500", noisy, 300, 500),
        ],
        forbidden=[*DDIM_FUNCTIONS, predict_x0],
    )


def check_ddim_invert(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """Deterministic DDIM inversion (Eq. 12): ``fn(eps_model, x0, schedule, t0, S_for)`` must walk the grid of
    :func:`dclip.ddim.inversion_pairs` upwards from the clean image (``(-1, tau_1), ..., (tau_{S-1}, t0)``) and
    give :func:`dclip.ddim.ddim_invert`'s latents; the noise predictor is :class:`dclip.toy.GaussianEps`. Off limits:
    dclip's DDIM steps (``ddim_invert``, ``ddim_generate``, ``reconstruct``, ``ddim_step``): the loop and the step
    are the exercise; :func:`dclip.ddim.predict_x0` (Eq. 6), ``inversion_pairs`` and ``time_sequence`` may be used."""
    g, schedule = generator(seed), Schedule.linear()
    model, x0 = GaussianEps(0.2, 0.5, schedule), images(g)

    def case(t0: int, S_for: int) -> Case:
        recorder = Recorder(model)
        expected_times = [max(t, 0) for t, _ in inversion_pairs(S_for, t0, schedule.T)]

        def times(_: object) -> str:
            if recorder.times == expected_times:
                return "your loop asks eps_theta at the right times: check its step with check_ddim_step"
            if recorder.times == expected_times[::-1]:
                return (
                    "your loop walks the steps in the reverse order: inversion goes upwards from the clean image, "
                    "(-1, tau_1), (tau_1, tau_2), ..., (tau_{S-1}, t0) (dclip.ddim.inversion_pairs)"
                )
            return (
                f"your loop asked eps_theta at t={recorder.times}; Eq. 12 over inversion_pairs(S_for={S_for}, "
                f"t0={t0}) asks at t={expected_times} (t=0 for the step that leaves the clean image at t=-1)"
            )

        given = {"schedule": schedule, "t0": t0, "S_for": S_for}
        yours = lambda: call(fn, {"eps_model": recorder, "x0": x0.clone(), **given})  # noqa: E731
        return Case(
            f"with t0={t0}, S_for={S_for}", yours, ddim_invert(model, x0, schedule, t0=t0, S_for=S_for), [times]
        )

    return run_check(
        "ddim_invert (Eq. 12)",
        "dclip.ddim.ddim_invert",
        fn,
        [case(400, 5), case(500, 3)],
        forbidden=DDIM_FUNCTIONS,
    )
