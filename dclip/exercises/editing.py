"""Checks of the editing side: noise combination (Eq. 14), manipulation (Alg. 3) and the first part of
unseen-domain translation (Alg. 4)."""

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
    run_check,
)
from dclip.exercises.sampling import DDIM_FUNCTIONS
from dclip.exercises.standins import GaussianUNet, TinyUNet, wavy_eps
from dclip.models import DiffusionModel
from dclip.noise_combination import mix_noise_predictors
from dclip.schedule import Schedule
from dclip.toy import GaussianEps


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
        forbidden=[translate, to_pretrained_domain, q_sample, *DDIM_FUNCTIONS],
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
        forbidden=[manipulate, *DDIM_FUNCTIONS],
    )
