"""Checks for the code students write in the chapters: each compares a student's function with dclip's.

    def my_ddim_step(eps_model, x_t, t, t_next, schedule): ...
    check_ddim_step(my_ddim_step)   # OK  ddim_step (Eq. 12/13): matches dclip.ddim.ddim_step on 4 inputs ...

Every check takes the student's callable and returns a :class:`Check`. Inputs are small (2 x 3 x 8 x 8), float64
and drawn from a seeded generator (the global RNG is left alone); the noise predictors are closed-form or a tiny
conv net and the CLIP a fixed random stand-in, so a check runs in milliseconds on a CPU with no download.
A function that raises, returns no tensor or the wrong shape, or differs gets ``passed=False`` and a message with
the input, the largest difference and where it is, and a hint when the output matches a known mistake.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
from torch.nn import functional as F

from dclip.ddim import (
    NoisePredictor,
    ddim_generate,
    ddim_invert,
    ddim_step,
    generation_pairs,
    inversion_pairs,
    predict_x0,
)
from dclip.ddpm import q_sample
from dclip.editing import manipulate, to_pretrained_domain
from dclip.losses import directional_clip_loss, identity_loss, text_direction
from dclip.models import DiffusionModel
from dclip.noise_combination import mix_noise_predictors
from dclip.schedule import Schedule
from dclip.toy import GaussianEps

#: The largest |difference| from dclip's output that passes (on values of order 1; relative for Alg. 1's weight
#: change): arithmetic in float32 passes, every known mistake fails by far more.
TOLERANCE = 1e-5
_SHAPE = (2, 3, 8, 8)

Output = torch.Tensor | dict[str, torch.Tensor]
#: Looks at the student's output (None when their function raised) and returns a hint, or None if it does not apply.
Diagnosis = Callable[[object], str | None]


@dataclass(frozen=True, repr=False)
class Check:
    """The verdict of one check: ``passed``, the largest |difference| from dclip's output (``inf`` when there was
    no output to compare), the ``tolerance`` it was held to and a ``message``; prints as one line."""

    name: str
    passed: bool
    max_error: float
    tolerance: float
    message: str

    def __str__(self) -> str:
        return f"{'OK' if self.passed else 'DIFFERS'}  {self.name}: {self.message}"

    __repr__ = __str__


class _Problem(Exception):
    """What is wrong with the student's output, found by a check (not raised by the student's code)."""


@dataclass
class _Case:
    """One input: ``label`` names it, ``yours`` runs the student's function on it, ``expected`` is dclip's output;
    on a difference the first hint the ``diagnoses`` give is shown, else ``hint``."""

    label: str
    yours: Callable[[], object]
    expected: Output
    diagnoses: Sequence[Diagnosis] = field(default_factory=list)
    hint: str = ""


def _difference(yours: object, expected: Output) -> tuple[float, str]:
    """The largest |yours - expected| and where it is; a :class:`_Problem` unless ``yours`` has the same type and
    shapes."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(yours, torch.Tensor):
            raise _Problem(f"your function returned a {type(yours).__name__}, not a tensor")
        yours, expected = {"": yours}, {"": expected}
    worst, where = -1.0, ""
    for key, e in expected.items():
        y = yours[key]
        if y.shape != e.shape:
            raise _Problem(f"your function returned shape {tuple(y.shape)} where dclip's gives {tuple(e.shape)}")
        err = (y.detach().to(e) - e).abs()
        err = err.masked_fill(err.isnan(), math.inf)
        if err.numel() and float(err.max()) > worst:
            idx = tuple(int(i) for i in np.unravel_index(int(err.argmax()), e.shape))
            worst = float(err.max())
            at = (f" in {key!r}" if key else "") + (f" at index {idx}" if idx else "")
            where = f"max |difference| {worst:.3g}{at}; yours gave {float(y[idx]):.3g}, dclip {float(e[idx]):.3g}"
    return worst, where


def _matches(variant: Callable[[], Output], hint: str, tolerance: float = TOLERANCE) -> Diagnosis:
    """A diagnosis: ``hint`` when the student's output equals what a known mistake (``variant``) gives."""

    def diagnose(yours: object) -> str | None:
        if yours is None:  # the student's function raised
            return None
        try:
            return hint if _difference(yours, variant())[0] <= tolerance else None
        except _Problem:
            return None

    return diagnose


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _check(name: str, reference: str, cases: Sequence[_Case], tolerance: float = TOLERANCE) -> Check:
    """Run the cases in order; the first that differs gives the verdict."""
    worst = 0.0
    for case in cases:
        yours = None
        try:
            yours = case.yours()
            error, where = _difference(yours, case.expected)
        except _Problem as e:
            error, where = math.inf, str(e)
        except Exception as e:  # the student's code raised: report it, do not crash the notebook
            error, where = math.inf, f"your function raised {_first_line(e)}"
        if not error <= tolerance:
            hint = next((h for d in case.diagnoses if (h := d(yours)) is not None), case.hint)
            return Check(name, False, error, tolerance, f"{case.label}, {where}" + (f". Hint: {hint}" if hint else ""))
        worst = max(worst, error)
    return Check(
        name,
        True,
        worst,
        tolerance,
        f"matches {reference} on {len(cases)} input{'s' * (len(cases) > 1)} (within {tolerance:.0e})",
    )


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(g: torch.Generator) -> torch.Tensor:
    """Random images in [-1, 1], float64, (2, 3, 8, 8)."""
    return torch.rand(_SHAPE, generator=g, dtype=torch.float64) * 2 - 1


def _per_image(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(-1, 1, 1, 1)


def check_q_sample(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """The DDPM forward process (Eq. 1): ``fn(x0, t, schedule, noise)`` must give
    ``sqrt(a_t) x0 + sqrt(1 - a_t) noise`` (:func:`dclip.ddpm.q_sample`), for one time ``t`` (an int) and for
    one time per image (a (N,) long tensor)."""
    g, schedule = _generator(seed), Schedule.linear()
    x0, noise = _images(g), torch.randn(_SHAPE, generator=g, dtype=torch.float64)

    def case(label: str, t: int | torch.Tensor, hint: str = "") -> _Case:
        a, alpha = _per_image(schedule.alpha_bar_at(t)), _per_image(1 - schedule.betas[t])
        diagnoses = [
            _matches(
                lambda: alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise,
                "Eq. 1 uses alpha_bar_t = prod_{s<=t} (1 - beta_s) (schedule.alpha_bar_at(t)), which the paper writes "
                "alpha_t; yours matches alpha_t = 1 - beta_t of the last step alone",
            ),
            _matches(
                lambda: a * x0 + (1 - a) * noise, "the coefficients are square roots: sqrt(a_t) and sqrt(1 - a_t)"
            ),
            _matches(
                lambda: (1 - a).sqrt() * x0 + a.sqrt() * noise,
                "sqrt(a_t) multiplies x0 and sqrt(1 - a_t) the noise; yours has them swapped",
            ),
        ]
        yours = lambda: fn(x0.clone(), t.clone() if isinstance(t, torch.Tensor) else t, schedule, noise.clone())  # noqa: E731
        return _Case(label, yours, q_sample(x0, t, schedule, noise), diagnoses, hint)

    times = torch.tensor([20, 700])
    return _check(
        "q_sample (Eq. 1)",
        "dclip.ddpm.q_sample",
        [
            case("with t=300", 300),
            case(
                f"with one time per image, t=tensor({times.tolist()})",
                times,
                "with a (N,) tensor t, alpha_bar_t has shape (N,): reshape it to (N, 1, 1, 1) so that each image "
                "gets its own coefficient",
            ),
        ],
    )


class _Recorder:
    """A noise predictor that remembers the times it is asked about."""

    def __init__(self, eps_model: NoisePredictor):
        self.eps_model, self.times = eps_model, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        self.times.append(int(torch.as_tensor(t).flatten()[0]))
        return self.eps_model(x, t)


def _step_formula(eps: torch.Tensor, x_t: torch.Tensor, a_t: float, a_next: float, a_noise: float) -> torch.Tensor:
    """``sqrt(a_next) f(x_t) + sqrt(1 - a_noise) eps``: Eq. 12/13 when ``a_noise = a_next``."""
    return a_next**0.5 * predict_x0(x_t, eps, a_t) + (1 - a_noise) ** 0.5 * eps


def check_ddim_step(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """One deterministic DDIM step (eta = 0): ``fn(eps_model, x_t, t, t_next, schedule)`` must return
    ``x_next = sqrt(a_next) f_theta(x_t, t) + sqrt(1 - a_next) eps_theta(x_t, t)`` (:func:`dclip.ddim.ddim_step`),
    both as generation (Eq. 13, ``t_next < t``, down to the clean image at ``t_next = -1`` where
    ``alpha_bar(-1) = 1``) and as inversion (Eq. 12, ``t_next > t``, from ``t = -1``). The noise predictor is
    the exact one of Gaussian data (:class:`dclip.toy.GaussianEps`); it is never to be asked about ``t = -1``."""
    g, schedule = _generator(seed), Schedule.linear()
    model = GaussianEps(0.2, 0.5, schedule)

    def case(label: str, x: torch.Tensor, t: int, t_next: int) -> _Case:
        recorder = _Recorder(model)
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
            _matches(
                lambda: _step_formula(eps, x, indexed(t), indexed(t_next), indexed(t_next)),
                "schedule.alpha_bar[-1] is alpha_bar at the last time T-1 (Python's negative index), but the clean "
                "image at t=-1 has alpha_bar(-1) = 1: use schedule.alpha_bar_at(t)",
            ),
            _matches(
                lambda: _step_formula(eps, x, alpha(t), alpha(t_next), alpha(t_next)),
                "the paper's alpha_t is alpha_bar_t = prod_{s<=t} (1 - beta_s) (schedule.alpha_bar_at(t)); yours "
                "matches 1 - beta_t",
            ),
            _matches(
                lambda: _step_formula(eps, x, a_t, a_next, a_t),
                "the noise term of x_next is sqrt(1 - alpha_bar(t_next)) eps_theta(x_t, t); yours matches "
                "sqrt(1 - alpha_bar(t)) there",
            ),
            _matches(
                lambda: predict_x0(x, eps, a_t),
                "yours returned f_theta(x_t, t), the predicted x0 (Eq. 6); the step goes on to "
                "x_next = sqrt(a_next) f_theta + sqrt(1 - a_next) eps_theta",
            ),
        ]
        yours = lambda: fn(recorder, x.clone(), t, t_next, schedule)  # noqa: E731
        expected = ddim_step(model, x, t, t_next, schedule)[0]
        return _Case(label, yours, expected, diagnoses, "return x_next alone, as a tensor of x_t's shape")

    noisy, clean = torch.randn(_SHAPE, generator=g, dtype=torch.float64), _images(g)
    return _check(
        "ddim_step (Eq. 12/13)",
        "dclip.ddim.ddim_step",
        [
            case("on generation (Eq. 13) from t=500 to t=300", noisy, 500, 300),
            case("on generation (Eq. 13) from t=0 to the clean image at t=-1", clean, 0, -1),
            case("on inversion (Eq. 12) from the clean image at t=-1 to t=100", clean, -1, 100),
            case("on inversion (Eq. 12) from t=300 to t=500", noisy, 300, 500),
        ],
    )


def check_ddim_invert(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """Deterministic DDIM inversion (Eq. 12): ``fn(eps_model, x0, schedule, t0, S_for)`` must walk the grid of
    :func:`dclip.ddim.inversion_pairs` upwards from the clean image (``(-1, tau_1), ..., (tau_{S-1}, t0)``) and
    give :func:`dclip.ddim.ddim_invert`'s latents; the noise predictor is :class:`dclip.toy.GaussianEps`."""
    g, schedule = _generator(seed), Schedule.linear()
    model, x0 = GaussianEps(0.2, 0.5, schedule), _images(g)

    def case(t0: int, S_for: int) -> _Case:
        recorder = _Recorder(model)
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

        yours = lambda: fn(recorder, x0.clone(), schedule, t0, S_for)  # noqa: E731
        return _Case(f"with t0={t0}, S_for={S_for}", yours, ddim_invert(model, x0, schedule, t0, S_for), [times])

    return _check("ddim_invert (Eq. 12)", "dclip.ddim.ddim_invert", [case(400, 5), case(500, 3)])


class _ToyCLIP:
    """A stand-in CLIP (dimension 8): a fixed random conv encoder for images, a seeded random unit vector for
    each text. Its embeddings are normalised, as CLIP's are."""

    def __init__(self, seed: int = 0):
        self.weight = torch.randn(8, 3, 3, 3, generator=_generator(seed), dtype=torch.float64) * 0.5

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.tanh(F.conv2d(x, self.weight.to(x), stride=2, padding=1)).mean((2, 3)), dim=-1)

    def encode_text(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        codes = [torch.randn(8, generator=_generator(zlib.crc32(t.encode())), dtype=torch.float64) for t in texts]
        return F.normalize(torch.stack(codes), dim=-1)


def check_directional_loss(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """The directional CLIP loss (Eq. 9): ``fn(clip, x_gen, x_ref, delta_t)`` must give
    ``1 - cos(E_I(x_gen) - E_I(x_ref), delta_t)`` averaged over the batch
    (:func:`dclip.losses.directional_clip_loss`), and the same gradient with respect to ``x_gen``: the loss trains
    the model, so it must stay differentiable. ``clip`` is a small random stand-in with CLIP's
    ``encode_image``/``encode_text``."""
    g, clip = _generator(seed), _ToyCLIP(seed)
    x_gen, x_ref = _images(g), _images(g)
    delta_t = text_direction(clip, "smiling face", "face")

    def gradient(loss_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
        x = x_gen.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(clip, x, x_ref.clone(), delta_t.clone())
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise _Problem("your function returned no single-number tensor (the loss must be a scalar)")
            if not loss.requires_grad:
                raise _Problem(
                    "your loss carries no gradient to x_gen: keep it a torch computation of x_gen (no .detach(), "
                    ".item(), .numpy() or torch.no_grad())"
                )
            (grad,) = torch.autograd.grad(loss, x)
        return grad

    def with_cos(form: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], torch.Tensor]:
        delta_i = clip.encode_image(x_gen) - clip.encode_image(x_ref)
        return lambda: form(F.cosine_similarity(delta_i, delta_t[None], dim=-1)).mean()

    def without_ref() -> torch.Tensor:
        return (1 - F.cosine_similarity(clip.encode_image(x_gen), delta_t[None], dim=-1)).mean()

    def unnormalised() -> torch.Tensor:
        return (1 - (clip.encode_image(x_gen) - clip.encode_image(x_ref)) @ delta_t).mean()

    diagnoses = [
        _matches(with_cos(lambda c: 1 + c), "Eq. 9 is 1 - cos(Delta I, Delta T); yours matches 1 + cos"),
        _matches(
            with_cos(lambda c: -torch.log((1 + c) / 2)),
            "yours is the authors' code's -log((1 + cos) / 2) (form='log'); Eq. 9 is 1 - cos(Delta I, Delta T)",
        ),
        _matches(
            without_ref,
            "Delta I is the change of the image embedding, E_I(x_gen) - E_I(x_ref); yours uses E_I(x_gen) alone",
        ),
        _matches(
            unnormalised,
            "cos needs both directions normalised (F.cosine_similarity); yours matches the plain dot product",
        ),
    ]
    loss_value = lambda: fn(clip, x_gen.clone(), x_ref.clone(), delta_t.clone())  # noqa: E731
    return _check(
        "directional_clip_loss (Eq. 9)",
        "dclip.losses.directional_clip_loss",
        [
            _Case(
                "on the loss value",
                loss_value,
                directional_clip_loss(clip, x_gen, x_ref, delta_t),
                diagnoses,
                "Eq. 9 is 1 - cos(E_I(x_gen) - E_I(x_ref), Delta T), averaged over the batch (.mean())",
            ),
            _Case(
                "on the gradient with respect to x_gen",
                lambda: gradient(fn),
                gradient(directional_clip_loss),
                hint="the loss value matches but its gradient does not: is part of it detached?",
            ),
        ],
    )


class _TinyUNet(torch.nn.Module):
    """A tiny time-conditioned conv noise predictor (float64), in the role of diffusers' UNet2DModel (it returns
    an object with ``.sample``)."""

    def __init__(self, g: torch.Generator):
        super().__init__()

        def weight(*shape: int, scale: float) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64) * scale)

        self.conv_in, self.time = weight(8, 3, 3, 3, scale=0.4), weight(8, scale=1.0)
        self.conv_out = weight(3, 8, 3, 3, scale=0.3)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> SimpleNamespace:
        t = _per_image(torch.as_tensor(t, dtype=x.dtype, device=x.device)) / 1000
        h = torch.tanh(F.conv2d(x, self.conv_in, padding=1) + self.time.reshape(1, -1, 1, 1) * t)
        return SimpleNamespace(sample=F.conv2d(h, self.conv_out, padding=1))


class _SGD:
    """Plain SGD, ``p <- p - lr * p.grad``, with torch.optim's ``zero_grad()`` and ``step()`` (a torch optimizer's
    first use imports torch._dynamo, seconds that a check need not cost)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float):
        self.params, self.lr = list(params), lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.sub_(self.lr * p.grad)


def _alg1_iteration(
    model: DiffusionModel,
    clip: _ToyCLIP,
    x0: torch.Tensor,
    x_t0: torch.Tensor,
    delta_t: torch.Tensor,
    t0: int,
    S_gen: int,
    optimizer: _SGD,
    lambda_l1: float,
    detach: str | None = None,
) -> None:
    """dclip's Alg. 1 iteration, as :func:`dclip.finetune.finetune` runs it (``ddim_generate(..., grad=True)``, here
    step by step): S_gen generation steps from x_t0 keeping the graph, Eq. 10 (Eq. 9 + lambda_L1 L1), one optimizer
    step. The known mistakes: ``detach="input"`` feeds each step's noise predictor a detached x_t (the ablation
    ``FinetuneConfig(recurrent_gradient=False)``), ``detach="state"`` detaches x_t between steps altogether."""
    eps_model = (lambda x_t, t: model(x_t.detach(), t)) if detach == "input" else model
    x = x_t0
    for t, t_next in generation_pairs(S_gen, t0, model.schedule.T):
        x = ddim_step(eps_model, x.detach() if detach == "state" else x, t, t_next, model.schedule)[0]
    loss = directional_clip_loss(clip, x, x0, delta_t) + identity_loss(x, x0, lambda_l1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def check_alg1_iteration(fn: Callable[..., object], *, seed: int = 0) -> Check:
    """One iteration of Alg. 1: ``fn(model, clip, x0, x_t0, delta_t, t0, S_gen, optimizer, lambda_l1)`` must
    generate from ``x_t0`` in S_gen DDIM steps (Eq. 13) keeping the graph through all of them (the recurrent
    gradient of Fig. 3), compute Eq. 10 (the directional loss, Eq. 9, plus ``lambda_l1`` times the mean
    |x_gen - x0|) and take one ``optimizer`` step (``zero_grad()``, ``backward()``, ``step()``); its return value
    is not used. It is compared with dclip's iteration by the change of the weights after one plain SGD step
    (a gradient step shows the whole gradient; Adam's first step is about lr times its sign), from identical
    copies of a tiny random noise predictor (a :class:`dclip.models.DiffusionModel`, float64, 8 x 8 images)."""
    g, clip = _generator(seed), _ToyCLIP(seed)
    base = DiffusionModel(_TinyUNet(g), Schedule.linear(), _SHAPE[-1], "exercise-tiny").requires_grad_(False)
    t0, S_gen, lambda_l1, lr = 300, 3, 0.3, 0.1
    x0 = _images(g)
    x_t0 = ddim_invert(base, x0, base.schedule, t0, 4)
    delta_t = text_direction(clip, "smiling face", "face")

    def change(step: Callable[..., object]) -> dict[str, torch.Tensor]:
        """The weight change that ``step`` makes from a fresh trainable copy of the model, with SGD."""
        tuned = copy.deepcopy(base).train().requires_grad_(True)
        before = {n: p.detach().clone() for n, p in tuned.named_parameters()}
        optimizer = _SGD(tuned.parameters(), lr)
        with torch.enable_grad():
            step(tuned, clip, x0.clone(), x_t0.clone(), delta_t.clone(), t0, S_gen, optimizer, lambda_l1)
        return {n: p.detach() - before[n] for n, p in tuned.named_parameters()}

    expected = change(_alg1_iteration)
    tolerance = TOLERANCE * max(float(v.abs().max()) for v in expected.values())
    recurrent = (
        "Alg. 1 keeps the graph through all S_gen steps (no .detach(), no torch.no_grad() between them): the model "
        "is shared across steps like a recurrent net, and the gradient flows back through every later step (Fig. 3)"
    )
    diagnoses = [
        _matches(
            lambda: change(lambda *args: _alg1_iteration(*args, detach="state")),
            f"yours matches x_t detached between steps, where the loss reaches only the last step. {recurrent}",
            tolerance,
        ),
        _matches(
            lambda: change(lambda *args: _alg1_iteration(*args, detach="input")),
            "yours matches the ablation without the recurrent gradient (FinetuneConfig(recurrent_gradient=False)): "
            f"each step's noise predictor sees a detached x_t. {recurrent}",
            tolerance,
        ),
        _matches(
            lambda: change(lambda *args: None),
            "your function left the weights unchanged: optimizer.zero_grad(), loss.backward(), optimizer.step()",
            tolerance,
        ),
        _matches(
            lambda: change(lambda *args: _alg1_iteration(*args[:-1], 0.0)),
            "yours matches the directional loss alone: Eq. 10 adds lambda_l1 * mean |x_gen - x0| (Eq. 11)",
            tolerance,
        ),
    ]
    return _check(
        "Alg. 1 iteration (Eq. 10)",
        "dclip's Alg. 1 iteration (dclip.finetune.finetune)",
        [
            _Case(
                f"on the weight change after one SGD step (t0={t0}, S_gen={S_gen}, lambda_l1={lambda_l1}, lr={lr})",
                lambda: change(fn),
                expected,
                diagnoses,
                "check the steps (check_ddim_step), the loss (check_directional_loss) and that x_gen is the last "
                "of S_gen steps of generation from x_t0 with `model`",
            )
        ],
        tolerance,
    )


def _wavy_eps(x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """A nonlinear closed-form noise predictor for the mixing check."""
    return torch.sin(2 * x + _per_image(torch.as_tensor(t, dtype=x.dtype)) / 100)


def check_mixing(fn: Callable[..., NoisePredictor], *, seed: int = 0) -> Check:
    """Noise combination (Eq. 14): ``fn(eps_models, gammas)`` must return a noise predictor
    ``eps(x, t) = sum_i gamma_i eps_i(x, t)`` (:func:`dclip.noise_combination.mix_noise_predictors`), here with
    constant weights that sum to 1. On a difference it names the weights the student's mix uses."""
    g, schedule = _generator(seed), Schedule.linear()
    models = [GaussianEps(-0.3, 0.4, schedule), GaussianEps(0.5, 0.8, schedule), _wavy_eps]
    gammas = [0.2, 0.5, 0.3]
    x = torch.randn(_SHAPE, generator=g, dtype=torch.float64)

    def case(time: int) -> _Case:
        t = torch.full((_SHAPE[0],), time)

        def yours() -> object:
            mixed = fn(list(models), list(gammas))
            if not callable(mixed):
                raise _Problem(f"your function returned a {type(mixed).__name__}, not a noise predictor eps(x, t)")
            return mixed(x.clone(), t.clone())

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

        return _Case(f"at t={time}", yours, mix_noise_predictors(models, gammas)(x, t), [weights])

    cases = [case(300), case(50)]
    return _check("mix_noise_predictors (Eq. 14)", "dclip.noise_combination.mix_noise_predictors", cases)


class _GaussianUNet(torch.nn.Module):
    """Nearly the exact noise predictor of Gaussian data (:class:`dclip.toy.GaussianEps`, plus a small
    nonlinear term), in the role of diffusers' UNet2DModel: generation from it gives images of mean ``mu`` and
    spread ``s``, mostly inside [-1, 1], so that a clamp changes a few values, not all."""

    def __init__(self, mu: float, s: float, schedule: Schedule):
        super().__init__()
        self.exact = GaussianEps(mu, s, schedule)
        self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64), requires_grad=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> SimpleNamespace:
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        return SimpleNamespace(sample=self.scale * self.exact(x, t) + 0.05 * torch.sin(3 * x))


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
            x = ddim_step(eps_model, x, t, t_next, schedule)[0]
        x = x.clamp(-1, 1) if clamp else x
    return x


def check_to_pretrained_domain(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """Alg. 4, step 1 (source unseen domain -> pretrained domain): ``fn(eps_model, x0, schedule, t0, S_gen, noises)``
    must run ``K_DDPM = len(noises)`` rounds, each noising the previous round's ``x'_0`` (the input at first) to
    ``t0`` with the stochastic DDPM forward of Eq. 1 and that round's noise ``w = noises[k]``, then generating back
    with deterministic DDIM (Eq. 13) over :func:`dclip.ddim.generation_pairs` ``(S_gen, t0)`` and clamping to
    [-1, 1], as :func:`dclip.editing.to_pretrained_domain` does (its noises are drawn from a seeded generator and
    handed to ``fn``). The noise predictor is nearly that of Gaussian data (float64, 8 x 8 images)."""
    g, schedule = _generator(seed), Schedule.linear()
    model = DiffusionModel(_GaussianUNet(0.2, 0.5, schedule), schedule, _SHAPE[-1], "exercise-gaussian")
    x0 = _images(g)

    def case(t0: int, S_gen: int, k_ddpm: int) -> _Case:
        draws = _generator(seed + 1000 * k_ddpm)
        noises = [torch.randn(_SHAPE, generator=draws).to(x0.dtype) for _ in range(k_ddpm)]
        expected = to_pretrained_domain(model, x0, t0, S_gen, k_ddpm, generator=_generator(seed + 1000 * k_ddpm))
        recorder = _Recorder(model)
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
            _matches(
                run(clamp=False),
                "yours matches Alg. 4 without clamping: dclip clamps each round's x'_0 to the image range [-1, 1] "
                "(.clamp(-1, 1)) before the next round noises it",
            ),
            _matches(
                lambda: ddim_generate(model, ddim_invert(model, x0, schedule, t0, S_gen), schedule, t0, S_gen).clamp(
                    -1, 1
                ),
                "yours matches a deterministic DDIM inversion (Eq. 12) to t0: Alg. 4 noises with the stochastic "
                "DDPM forward of Eq. 1, x'_t0 = sqrt(a_t0) x'_0 + sqrt(1 - a_t0) w, with the given w",
            ),
        ]
        if k_ddpm > 1:
            diagnoses += [
                _matches(
                    run(restart=True),
                    "every round of yours noises the input x0; Alg. 4 sets x'_0 <- x0 once, before the loop, and each "
                    "round noises the previous round's x'_0",
                ),
                _matches(
                    lambda: _round_trips(model, x0, schedule, t0, S_gen, noises[:1]),
                    f"yours matches a single round: Alg. 4 repeats the round K_DDPM = len(noises) = {k_ddpm} times",
                ),
                _matches(
                    lambda: _round_trips(model, x0, schedule, t0, S_gen, noises[:1] * k_ddpm),
                    "yours uses noises[0] in every round: round k draws a fresh w, noises[k]",
                ),
            ]
        diagnoses.append(times)
        yours = lambda: fn(recorder, x0.clone(), schedule, t0, S_gen, [w.clone() for w in noises])  # noqa: E731
        return _Case(
            f"with t0={t0}, S_gen={S_gen}, K_DDPM={k_ddpm}",
            yours,
            expected,
            diagnoses,
            "each round: x'_t0 = sqrt(a_t0) x'_0 + sqrt(1 - a_t0) w (Eq. 1), S_gen DDIM steps back (Eq. 13), clamp",
        )

    return _check(
        "to_pretrained_domain (Alg. 4, Eq. 1 + Eq. 13)",
        "dclip.editing.to_pretrained_domain",
        [case(400, 4, 1), case(500, 3, 2)],
    )


def check_manipulation(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """Manipulation (Alg. 3): ``fn(base, tuned, x0, t0, S_for, S_gen)`` must invert the images ``x0`` to ``t0`` with
    the **pretrained** ``base`` (Eq. 12, S_for steps) and generate from that latent with the **fine-tuned**
    ``tuned`` (Eq. 13, S_gen steps), and return the edited images (:func:`dclip.editing.manipulate`). The models are
    a tiny random noise predictor and a perturbed copy of it (:class:`dclip.models.DiffusionModel`, float64, 8 x 8
    images); the known mistakes (the wrong model on either pass, the step counts swapped, the latent returned) are
    named."""
    g = _generator(seed)
    base = DiffusionModel(_TinyUNet(g), Schedule.linear(), _SHAPE[-1], "exercise-tiny").requires_grad_(False)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x0 = _images(g)
    t0, S_for, S_gen = 400, 5, 3

    def alg3(invert_with: DiffusionModel, generate_with: DiffusionModel, s_for: int, s_gen: int) -> torch.Tensor:
        x_t0 = ddim_invert(invert_with, x0, invert_with.schedule, t0, s_for)
        return ddim_generate(generate_with, x_t0, generate_with.schedule, t0, s_gen)

    trained_from = "the fine-tuned model was trained to generate from latents of the pretrained model (Alg. 1, step 1)"
    diagnoses = [
        _matches(
            lambda: alg3(base, base, S_for, S_gen),
            "yours matches the reconstruction (the pretrained model both ways): Alg. 3 generates with the "
            "fine-tuned model, which is where the edit comes from",
        ),
        _matches(
            lambda: alg3(tuned, tuned, S_for, S_gen),
            f"yours inverted with the fine-tuned model: Alg. 3 inverts with the pretrained one, because {trained_from}",
        ),
        _matches(
            lambda: alg3(tuned, base, S_for, S_gen),
            "yours has the two models swapped: invert with the pretrained `base`, generate with the fine-tuned `tuned`",
        ),
        _matches(
            lambda: alg3(base, tuned, S_gen, S_for),
            f"yours matches S_for and S_gen swapped: invert in S_for={S_for} steps, generate in S_gen={S_gen}",
        ),
        _matches(
            lambda: ddim_invert(base, x0, base.schedule, t0, S_for),
            "yours returned the latent x_t0: go on and generate from it with the fine-tuned model (Eq. 13)",
        ),
    ]
    yours = lambda: fn(base, tuned, x0.clone(), t0, S_for, S_gen)  # noqa: E731
    return _check(
        "manipulate (Alg. 3)",
        "dclip.editing.manipulate",
        [
            _Case(
                f"with t0={t0}, S_for={S_for}, S_gen={S_gen}",
                yours,
                manipulate(base, tuned, x0, t0, S_for, S_gen),
                diagnoses,
                "check the inversion (check_ddim_invert) and that you generate with `tuned` from `base`'s latent",
            )
        ],
    )
