"""Checks of the sampling side: the forward process (Eq. 1), the DDIM step (Eq. 12/13), inversion (Eq. 12), noise
combination (Eq. 14), manipulation (Alg. 3) and the first part of unseen-domain translation (Alg. 4)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import torch

from dclip.ddim import (
    NoisePredictor,
    ddim_generate,
    ddim_invert,
    ddim_step,
    generation_pairs,
    inversion_pairs,
    predict_x0,
    reconstruct,
)
from dclip.ddpm import q_sample
from dclip.editing import UnstableEditWarning, combine, manipulate, to_pretrained_domain, translate
from dclip.exercises.harness import (
    SHAPE,
    TOLERANCE,
    Case,
    Check,
    Problem,
    Recorder,
    call,
    generator,
    images,
    matches,
    per_image,
    run_check,
)
from dclip.exercises.standins import GaussianUNet, TinyUNet, wavy_eps
from dclip.models import DiffusionModel
from dclip.noise_combination import mix_noise_predictors
from dclip.schedule import Schedule
from dclip.toy import GaussianEps

#: dclip's deterministic DDIM, from the outermost wrapper in: off limits where the student writes the steps.
_DDIM = (reconstruct, ddim_generate, ddim_invert, ddim_step)


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
        forbidden=[*_DDIM, predict_x0],
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
        forbidden=_DDIM,
    )


def check_mixing(fn: Callable[..., NoisePredictor], *, seed: int = 0) -> Check:
    """Noise combination (Eq. 14): ``fn(eps_models, gammas)`` must return a noise predictor
    ``eps(x, t) = sum_i gamma_i eps_i(x, t)`` (:func:`dclip.noise_combination.mix_noise_predictors`), here with
    constant weights that sum to 1. On a difference it names the weights the student's mix uses. Off limits:
    :func:`~dclip.noise_combination.mix_noise_predictors` and :func:`dclip.editing.combine`."""
    g, schedule = generator(seed), Schedule.linear()
    models = [GaussianEps(-0.3, 0.4, schedule), GaussianEps(0.5, 0.8, schedule), wavy_eps]
    gammas = [0.2, 0.5, 0.3]
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)

    def case(time: int) -> Case:
        t = torch.full((SHAPE[0],), time)

        def yours() -> object:
            mixed = fn(list(models), list(gammas))
            if not callable(mixed):
                raise Problem(f"your function returned a {type(mixed).__name__}, not a noise predictor eps(x, t)")
            return call(mixed, {"x": x.clone(), "t": t.clone()})

        def weights(out: object) -> str | None:
            """The weights of the student's mix, when it is a linear mix of the predictors."""
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                return None
            basis = torch.stack([m(x, t).flatten() for m in models], 1)
            w = torch.linalg.lstsq(basis, out.detach().flatten().to(basis)).solution
            if float((basis @ w - out.flatten()).abs().max()) > TOLERANCE:
                return None
            shown = "[" + ", ".join(f"{v:.3g}" for v in w.tolist()) + "]"
            if abs(float(w.sum()) - 1) > TOLERANCE:
                return (
                    f"your mix weighs the predictors by {shown}, which sum to {float(w.sum()):.3g}: Eq. 14's weights "
                    f"gamma_i sum to 1 (here {gammas}); eps = sum_i gamma_i eps_i"
                )
            return f"your mix weighs the predictors by {shown}; Eq. 14 gives gamma = {gammas}, in eps_models' order"

        return Case(f"at t={time}", yours, mix_noise_predictors(models, gammas)(x, t), [weights])

    cases = [case(300), case(50)]
    return run_check(
        "mix_noise_predictors (Eq. 14)",
        "dclip.noise_combination.mix_noise_predictors",
        fn,
        cases,
        forbidden=[combine, mix_noise_predictors],
    )


def _round_trips(
    eps_model: NoisePredictor,
    x0: torch.Tensor,
    schedule: Schedule,
    t0: int,
    S_gen: int,
    noises: Sequence[torch.Tensor],
    *,
    clamp: bool = True,
    restart: bool = False,
) -> torch.Tensor:
    """Alg. 4's first part with given noises, as :func:`dclip.editing.to_pretrained_domain` runs it; ``clamp`` and
    ``restart`` (every round noises the input, not the previous round's x'_0) make known mistakes."""
    x = x0
    for w in noises:
        a = float(schedule.alpha_bar_at(t0))
        x = a**0.5 * (x0 if restart else x) + (1 - a) ** 0.5 * w
        for t, t_next in generation_pairs(S_gen, t0, schedule.T):
            x = ddim_step(eps_model, x, t, t_next, schedule).x_next
        x = x.clamp(-1, 1) if clamp else x
    return x


def check_to_pretrained_domain(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """Alg. 4, step 1 (source unseen domain -> pretrained domain): ``fn(eps_model, x0, schedule, t0, S_gen, noises)``
    must run ``K_DDPM = len(noises)`` rounds, each noising the previous round's ``x'_0`` (the input at first) to
    ``t0`` with the stochastic DDPM forward of Eq. 1 and that round's noise ``w = noises[k]``, then generating back
    with deterministic DDIM (Eq. 13) over :func:`dclip.ddim.generation_pairs` ``(S_gen, t0)`` and clamping to
    [-1, 1], as :func:`dclip.editing.to_pretrained_domain` does (its noises are drawn from a seeded generator and
    handed to ``fn``). The noise predictor is nearly that of Gaussian data (float64, 8 x 8 images). Off limits:
    ``to_pretrained_domain``, ``translate``, :func:`dclip.ddpm.q_sample` and dclip's DDIM (``ddim_step``,
    ``ddim_generate``, ``ddim_invert``, ``reconstruct``); ``predict_x0`` and ``generation_pairs`` may be used."""
    g, schedule = generator(seed), Schedule.linear()
    model = DiffusionModel(GaussianUNet(0.2, 0.5, schedule), schedule, SHAPE[-1], "exercise-gaussian")
    x0 = images(g)

    def case(t0: int, S_gen: int, k_ddpm: int) -> Case:
        draws = generator(seed + 1000 * k_ddpm)
        noises = [torch.randn(SHAPE, generator=draws).to(x0.dtype) for _ in range(k_ddpm)]
        expected = to_pretrained_domain(
            model, x0, t0=t0, S_gen=S_gen, k_ddpm=k_ddpm, generator=generator(seed + 1000 * k_ddpm)
        )
        recorder = Recorder(model)
        expected_times = [t for t, _ in generation_pairs(S_gen, t0, schedule.T)] * k_ddpm

        def run(**kwargs: object) -> Callable[[], torch.Tensor]:
            return lambda: _round_trips(model, x0, schedule, t0, S_gen, noises, **kwargs)

        def times(_: object) -> str | None:
            if recorder.times == expected_times:
                return None
            return (
                f"your function asked eps_theta at t={recorder.times}; {k_ddpm} round(s) of DDIM generation over "
                f"generation_pairs(S_gen={S_gen}, t0={t0}) ask at t={expected_times}"
            )

        diagnoses = [
            matches(
                run(clamp=False),
                "yours matches Alg. 4 without clamping: dclip clamps each round's x'_0 to the image range [-1, 1] "
                "(.clamp(-1, 1)) before the next round noises it",
            ),
            matches(
                lambda: ddim_generate(
                    model, ddim_invert(model, x0, schedule, t0=t0, S_for=S_gen), schedule, t0=t0, S_gen=S_gen
                ).clamp(-1, 1),
                "yours matches a deterministic DDIM inversion (Eq. 12) to t0: Alg. 4 noises with the stochastic "
                "DDPM forward of Eq. 1, x'_t0 = sqrt(a_t0) x'_0 + sqrt(1 - a_t0) w, with the given w",
            ),
        ]
        if k_ddpm > 1:
            diagnoses += [
                matches(
                    run(restart=True),
                    "every round of yours noises the input x0; Alg. 4 sets x'_0 <- x0 once, before the loop, and each "
                    "round noises the previous round's x'_0",
                ),
                matches(
                    lambda: _round_trips(model, x0, schedule, t0, S_gen, noises[:1]),
                    f"yours matches a single round: Alg. 4 repeats the round K_DDPM = len(noises) = {k_ddpm} times",
                ),
                matches(
                    lambda: _round_trips(model, x0, schedule, t0, S_gen, noises[:1] * k_ddpm),
                    "yours uses noises[0] in every round: round k draws a fresh w, noises[k]",
                ),
            ]
        diagnoses.append(times)
        given = lambda: {"eps_model": recorder, "x0": x0.clone(), "schedule": schedule, "t0": t0, "S_gen": S_gen}  # noqa: E731
        yours = lambda: call(fn, {**given(), "noises": [w.clone() for w in noises]})  # noqa: E731
        return Case(
            f"with t0={t0}, S_gen={S_gen}, K_DDPM={k_ddpm}",
            yours,
            expected,
            diagnoses,
            "each round: x'_t0 = sqrt(a_t0) x'_0 + sqrt(1 - a_t0) w (Eq. 1), S_gen DDIM steps back (Eq. 13), clamp",
        )

    return run_check(
        "to_pretrained_domain (Alg. 4, Eq. 1 + Eq. 13)",
        "dclip.editing.to_pretrained_domain",
        fn,
        [case(400, 4, 1), case(500, 3, 2)],
        forbidden=[translate, to_pretrained_domain, q_sample, *_DDIM],
    )


def check_manipulation(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """Manipulation (Alg. 3): ``fn(base, tuned, x0, t0, S_for, S_gen)`` must invert the images ``x0`` to ``t0`` with
    the **pretrained** ``base`` (Eq. 12, S_for steps) and generate from that latent with the **fine-tuned**
    ``tuned`` (Eq. 13, S_gen steps), and return the edited images (:func:`dclip.editing.manipulate`). The models are
    a tiny random noise predictor and a perturbed copy of it (:class:`dclip.models.DiffusionModel`, float64, 8 x 8
    images); the known mistakes (the wrong model on either pass, the step counts swapped, the latent returned) are
    named. Off limits: ``manipulate`` and dclip's DDIM (``ddim_invert``, ``ddim_generate``, ``reconstruct``,
    ``ddim_step``); ``predict_x0``, ``inversion_pairs`` and ``generation_pairs`` may be used."""
    with warnings.catch_warnings():  # random stand-ins: their edits leave [-1, 1], which is not the student's doing
        warnings.simplefilter("ignore", UnstableEditWarning)
        return _check_manipulation(fn, seed=seed)


def _check_manipulation(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """The body of :func:`check_manipulation`."""
    g = generator(seed)
    base = DiffusionModel(TinyUNet(g), Schedule.linear(), SHAPE[-1], "exercise-tiny").requires_grad_(False)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x0 = images(g)
    t0, S_for, S_gen = 400, 5, 3

    def alg3(invert_with: DiffusionModel, generate_with: DiffusionModel, s_for: int, s_gen: int) -> torch.Tensor:
        x_t0 = ddim_invert(invert_with, x0, invert_with.schedule, t0=t0, S_for=s_for)
        return ddim_generate(generate_with, x_t0, generate_with.schedule, t0=t0, S_gen=s_gen)

    trained_from = "the fine-tuned model was trained to generate from latents of the pretrained model (Alg. 1, step 1)"
    diagnoses = [
        matches(
            lambda: alg3(base, base, S_for, S_gen),
            "yours matches the reconstruction (the pretrained model both ways): Alg. 3 generates with the "
            "fine-tuned model, which is where the edit comes from",
        ),
        matches(
            lambda: alg3(tuned, tuned, S_for, S_gen),
            f"yours inverted with the fine-tuned model: Alg. 3 inverts with the pretrained one, because {trained_from}",
        ),
        matches(
            lambda: alg3(tuned, base, S_for, S_gen),
            "yours has the two models swapped: invert with the pretrained `base`, generate with the fine-tuned `tuned`",
        ),
        matches(
            lambda: alg3(base, tuned, S_gen, S_for),
            f"yours matches S_for and S_gen swapped: invert in S_for={S_for} steps, generate in S_gen={S_gen}",
        ),
        matches(
            lambda: ddim_invert(base, x0, base.schedule, t0=t0, S_for=S_for),
            "yours returned the latent x_t0: go on and generate from it with the fine-tuned model (Eq. 13)",
        ),
    ]
    yours = lambda: call(fn, {"base": base, "tuned": tuned, "x0": x0.clone(), "t0": t0, "S_for": S_for, "S_gen": S_gen})  # noqa: E731
    return run_check(
        "manipulate (Alg. 3)",
        "dclip.editing.manipulate",
        fn,
        [
            Case(
                f"with t0={t0}, S_for={S_for}, S_gen={S_gen}",
                yours,
                manipulate(base, tuned, x0, t0=t0, S_for=S_for, S_gen=S_gen),
                diagnoses,
                "check the inversion (check_ddim_invert) and that you generate with `tuned` from `base`'s latent",
            )
        ],
        forbidden=[manipulate, *_DDIM],
    )
