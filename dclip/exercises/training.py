"""Checks of the training side: the directional CLIP loss (Eq. 9), one iteration of Alg. 1 and one reverse step of
Alg. 2, each with Eq. 10 (the directional loss plus lambda_L1 times the mean |x - x0| of Eq. 11)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch.nn import functional as F

from dclip.ddim import ddim_generate, ddim_invert, ddim_step, generation_pairs, reconstruct
from dclip.exercises.harness import (
    SHAPE,
    TOLERANCE,
    Case,
    Check,
    Problem,
    call,
    generator,
    images,
    matches,
    run_check,
)
from dclip.exercises.standins import SGD, TinyUNet, ToyCLIP
from dclip.finetune import finetune, objective
from dclip.losses import directional_clip_loss, directional_similarity, identity_loss, text_direction
from dclip.models import DiffusionModel
from dclip.schedule import Schedule

#: The losses and dclip's DDIM, off limits where the student writes a training step from the equations.
_TRAINING = (finetune, objective, reconstruct, ddim_generate, ddim_invert, ddim_step)
_LOSSES = (directional_clip_loss, directional_similarity)


def check_directional_loss(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """The directional CLIP loss (Eq. 9): ``fn(clip, x_gen, x_ref, delta_t)`` must give
    ``1 - cos(E_I(x_gen) - E_I(x_ref), delta_t)`` averaged over the batch
    (:func:`dclip.losses.directional_clip_loss`), and the same gradient with respect to ``x_gen``: the loss trains
    the model, so it must stay differentiable. ``clip`` is a small random stand-in with CLIP's
    ``encode_image``/``encode_text``. Off limits: ``directional_clip_loss`` and ``directional_similarity`` of
    :mod:`dclip.losses`; ``torch.nn.functional.cosine_similarity`` may be used."""
    g, clip = generator(seed), ToyCLIP(seed)
    x_gen, x_ref = images(g), images(g)
    delta_t = text_direction(clip, "smiling face", "face")

    def gradient(loss_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
        x = x_gen.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = call(loss_fn, {"clip": clip, "x_gen": x, "x_ref": x_ref.clone(), "delta_t": delta_t.clone()})
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise Problem("your function returned no single-number tensor (the loss must be a scalar)")
            if not loss.requires_grad:
                raise Problem(
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
        matches(with_cos(lambda c: 1 + c), "Eq. 9 is 1 - cos(Delta I, Delta T); yours matches 1 + cos"),
        matches(
            with_cos(lambda c: -torch.log((1 + c) / 2)),
            "yours is the authors' code's -log((1 + cos) / 2) (form='log'); Eq. 9 is 1 - cos(Delta I, Delta T)",
        ),
        matches(
            without_ref,
            "Delta I is the change of the image embedding, E_I(x_gen) - E_I(x_ref); yours uses E_I(x_gen) alone",
        ),
        matches(
            unnormalised,
            "cos needs both directions normalised (F.cosine_similarity); yours matches the plain dot product",
        ),
    ]
    given = lambda: {"clip": clip, "x_gen": x_gen.clone(), "x_ref": x_ref.clone(), "delta_t": delta_t.clone()}  # noqa: E731
    loss_value = lambda: call(fn, given())  # noqa: E731
    return run_check(
        "directional_clip_loss (Eq. 9)",
        "dclip.losses.directional_clip_loss",
        fn,
        [
            Case(
                "on the loss value",
                loss_value,
                directional_clip_loss(clip, x_gen, x_ref, delta_t),
                diagnoses,
                "Eq. 9 is 1 - cos(E_I(x_gen) - E_I(x_ref), Delta T), averaged over the batch (.mean())",
            ),
            Case(
                "on the gradient with respect to x_gen",
                lambda: gradient(fn),
                gradient(directional_clip_loss),
                hint="the loss value matches but its gradient does not: is part of it detached?",
            ),
        ],
        forbidden=_LOSSES,
    )


def _l1(x: torch.Tensor, x0: torch.Tensor, lambda_l1: float, form: str) -> torch.Tensor:
    """The L1 term of Eq. 10/11 as dclip has it (``form="mean"``: :func:`dclip.losses.identity_loss`, the mean
    |x - x0| per image, averaged over the batch), or the literal norm of Eq. 11 written as a sum over all pixels
    (``"sum"``) or per image, averaged over the batch (``"image-sum"``): known mistakes."""
    if form == "sum":
        return lambda_l1 * (x - x0).abs().sum()
    if form == "image-sum":
        return lambda_l1 * (x - x0).abs().flatten(1).sum(1).mean()
    return identity_loss(x, x0, lambda_l1)


def _update(optimizer: SGD, loss: torch.Tensor) -> None:
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _alg1_iteration(
    model: DiffusionModel,
    clip: ToyCLIP,
    x0: torch.Tensor,
    x_t0: torch.Tensor,
    delta_t: torch.Tensor,
    t0: int,
    S_gen: int,
    optimizer: SGD,
    lambda_l1: float,
    *,
    detach: str | None = None,
    l1: str = "mean",
) -> None:
    """dclip's Alg. 1 iteration, as :func:`dclip.finetune.finetune` runs it (``ddim_generate(..., grad=True)``, here
    step by step): S_gen generation steps from x_t0 keeping the graph, Eq. 10 (Eq. 9 + lambda_L1 L1), one optimizer
    step. The known mistakes: ``detach="input"`` feeds each step's noise predictor a detached x_t (the ablation
    ``FinetuneConfig(recurrent_gradient=False)``), ``detach="state"`` detaches x_t between steps altogether; ``l1``
    (:func:`_l1`) writes the L1 term as a sum."""
    eps_model = (lambda x_t, t: model(x_t.detach(), t)) if detach == "input" else model
    x = x_t0
    for t, t_next in generation_pairs(S_gen, t0, model.schedule.T):
        x = ddim_step(eps_model, x.detach() if detach == "state" else x, t, t_next, model.schedule).x_next
    _update(optimizer, directional_clip_loss(clip, x, x0, delta_t) + _l1(x, x0, lambda_l1, l1))


def _l1_sum_hint(x: str) -> str:
    return (
        f"yours matches the L1 term written as a sum over pixels, the literal norm |x0 - {x}| of Eq. 11: dclip "
        f"(dclip.losses.identity_loss) takes the mean absolute difference per image, averaged over the batch, "
        f"lambda_l1 * ({x} - x0).abs().mean(); a sum multiplies the term by the number of values it adds up (192 per "
        "3 x 8 x 8 image here, 196,608 per 256 x 256 image) and drowns the directional loss"
    )


def _weight_check(
    base: DiffusionModel, args: Callable[[], dict[str, object]], lr: float, lambda_l1: float
) -> Callable[[Callable[..., object]], tuple[dict[str, torch.Tensor], object]]:
    """``run(step)``: the weight change that ``step(model, *args().values(), optimizer, lambda_l1)`` makes with
    plain SGD from a fresh trainable copy of ``base``, and what ``step`` returned; the inputs are checked for
    in-place changes."""

    def run(step: Callable[..., object]) -> tuple[dict[str, torch.Tensor], object]:
        tuned = copy.deepcopy(base).train().requires_grad_(True)
        before = {n: p.detach().clone() for n, p in tuned.named_parameters()}
        optimizer = SGD(tuned.parameters(), lr)
        given = {"model": tuned, **args(), "optimizer": optimizer, "lambda_l1": lambda_l1}
        with torch.enable_grad():
            out = call(step, given)
        return {n: p.detach() - before[n] for n, p in tuned.named_parameters()}, out

    return run


def check_alg1_iteration(fn: Callable[..., object], *, seed: int = 0) -> Check:
    """One iteration of Alg. 1: ``fn(model, clip, x0, x_t0, delta_t, t0, S_gen, optimizer, lambda_l1)`` must
    generate from ``x_t0`` in S_gen DDIM steps (Eq. 13) keeping the graph through all of them (the recurrent
    gradient of Fig. 3), compute Eq. 10 (the directional loss, Eq. 9, plus ``lambda_l1`` times the mean
    |x_gen - x0|) and take one ``optimizer`` step (``zero_grad()``, ``backward()``, ``step()``); its return value
    is not used. It is compared with dclip's iteration by the change of the weights after one plain SGD step
    (a gradient step shows the whole gradient; Adam's first step is about lr times its sign), from identical
    copies of a tiny random noise predictor (a :class:`dclip.models.DiffusionModel`, float64, 8 x 8 images).
    Off limits: ``finetune``, ``objective``, the losses of :mod:`dclip.losses` (``directional_clip_loss``,
    ``directional_similarity``, ``identity_loss``) and dclip's DDIM (``ddim_step``, ``ddim_generate``, ...);
    ``predict_x0`` and ``generation_pairs`` may be used."""
    g, clip = generator(seed), ToyCLIP(seed)
    base = DiffusionModel(TinyUNet(g), Schedule.linear(), SHAPE[-1], "exercise-tiny").requires_grad_(False)
    t0, S_gen, lambda_l1, lr = 300, 3, 0.3, 0.1
    x0 = images(g)
    x_t0 = ddim_invert(base, x0, base.schedule, t0=t0, S_for=4)
    delta_t = text_direction(clip, "smiling face", "face")
    run = _weight_check(
        base,
        lambda: {
            "clip": clip,
            "x0": x0.clone(),
            "x_t0": x_t0.clone(),
            "delta_t": delta_t.clone(),
            "t0": t0,
            "S_gen": S_gen,
        },
        lr,
        lambda_l1,
    )

    def change(**kwargs: object) -> Callable[[], dict[str, torch.Tensor]]:
        """The weight change of dclip's iteration with ``kwargs`` (a known mistake)."""
        return lambda: run(lambda *a: _alg1_iteration(*a, **kwargs))[0]

    expected = change()()
    tolerance = TOLERANCE * max(float(v.abs().max()) for v in expected.values())
    recurrent = (
        "Alg. 1 keeps the graph through all S_gen steps (no .detach(), no torch.no_grad() between them): the model "
        "is shared across steps like a recurrent net, and the gradient flows back through every later step (Fig. 3)"
    )
    diagnoses = [
        matches(
            change(detach="state"),
            f"yours matches x_t detached between steps, where the loss reaches only the last step. {recurrent}",
            tolerance,
        ),
        matches(
            change(detach="input"),
            "yours matches the ablation without the recurrent gradient (FinetuneConfig(recurrent_gradient=False)): "
            f"each step's noise predictor sees a detached x_t. {recurrent}",
            tolerance,
        ),
        matches(
            lambda: run(lambda *a: None)[0],
            "your function left the weights unchanged: optimizer.zero_grad(), loss.backward(), optimizer.step()",
            tolerance,
        ),
        matches(
            lambda: run(lambda *a: _alg1_iteration(*a[:-1], 0.0))[0],
            "yours matches the directional loss alone: Eq. 10 adds lambda_l1 * mean |x_gen - x0| (Eq. 11)",
            tolerance,
        ),
        matches(change(l1="sum"), _l1_sum_hint("x_gen"), tolerance),
        matches(change(l1="image-sum"), _l1_sum_hint("x_gen"), tolerance),
    ]
    return run_check(
        "Alg. 1 iteration (Eq. 10)",
        "dclip's Alg. 1 iteration (dclip.finetune.finetune)",
        fn,
        [
            Case(
                f"on the weight change after one SGD step (t0={t0}, S_gen={S_gen}, lambda_l1={lambda_l1}, lr={lr})",
                lambda: run(fn)[0],
                expected,
                diagnoses,
                "check the steps (check_ddim_step), the loss (check_directional_loss) and that x_gen is the last "
                "of S_gen steps of generation from x_t0 with `model`",
                tolerance,
            )
        ],
        forbidden=[*_TRAINING, *_LOSSES, identity_loss],
    )


def _alg2_step(
    model: DiffusionModel,
    clip: ToyCLIP,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: int,
    t_next: int,
    delta_t: torch.Tensor,
    optimizer: SGD,
    lambda_l1: float,
    *,
    loss_on: str = "x0_pred",
    l1: str = "mean",
) -> torch.Tensor:
    """dclip's reverse step of Alg. 2, as :func:`dclip.finetune.finetune` runs it for ``algorithm=2``: the DDIM step
    with the trainable model (Eq. 13) gives x_{t_next} and the predicted x0 (Eq. 6); Eq. 10 on the predicted x0;
    one optimizer step; x_{t_next} detached. The known mistakes: ``loss_on="x_next"`` puts the loss on
    x_{t_next}; ``l1`` (:func:`_l1`) writes the L1 term as a sum."""
    x_next, x0_pred = ddim_step(model, x_t, t, t_next, model.schedule)
    x = x0_pred if loss_on == "x0_pred" else x_next
    _update(optimizer, directional_clip_loss(clip, x, x0, delta_t) + _l1(x, x0, lambda_l1, l1))
    return x_next.detach()


def check_alg2_step(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> Check:
    """One reverse step of Alg. 2 (GPU-efficient fine-tuning):
    ``fn(model, clip, x0, x_t, t, t_next, delta_t, optimizer, lambda_l1)`` must take the DDIM step from ``x_t`` at
    ``t`` to ``t_next`` with the trainable ``model`` (Eq. 13), which gives the next state x_{t_next} and the
    predicted x0 (Eq. 6, ``f_theta(x_t, t)``); compute Eq. 10 on the **predicted x0** (the directional loss, Eq. 9,
    plus ``lambda_l1`` times the mean |x0_pred - x0|); take one ``optimizer`` step (``zero_grad()``, ``backward()``,
    ``step()``); and return x_{t_next}, computed before the update and detached (Alg. 2 goes on from it), as
    :func:`dclip.finetune.finetune` does for ``algorithm=2``. Compared with dclip's step by the change of the weights
    after one plain SGD step and by the returned state, from identical copies of a tiny random noise predictor
    (float64, 8 x 8 images). Off limits: as for :func:`check_alg1_iteration` (``finetune``, ``objective``, the
    losses, dclip's DDIM); ``predict_x0`` may be used."""
    g, clip = generator(seed), ToyCLIP(seed)
    base = DiffusionModel(TinyUNet(g), Schedule.linear(), SHAPE[-1], "exercise-tiny").requires_grad_(False)
    t0, lambda_l1, lr = 300, 0.3, 0.1
    t, t_next = generation_pairs(3, t0, base.schedule.T)[0]
    x0 = images(g)
    x_t = ddim_invert(base, x0, base.schedule, t0=t0, S_for=4)
    delta_t = text_direction(clip, "smiling face", "face")
    run = _weight_check(
        base,
        lambda: {
            "clip": clip,
            "x0": x0.clone(),
            "x_t": x_t.clone(),
            "t": t,
            "t_next": t_next,
            "delta_t": delta_t.clone(),
        },
        lr,
        lambda_l1,
    )

    def change(**kwargs: object) -> Callable[[], dict[str, torch.Tensor]]:
        """The weight change of dclip's step with ``kwargs`` (a known mistake)."""
        return lambda: run(lambda *a: _alg2_step(*a, **kwargs))[0]

    def state(out: object) -> torch.Tensor:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            raise Problem(
                "your function returned x_{t_next} attached to the graph (requires_grad=True): return "
                "x_next.detach(); Alg. 2 goes on from the detached next state, each step is updated on its own"
            )
        return out

    expected = change()()
    tolerance = TOLERANCE * max(float(v.abs().max()) for v in expected.values())
    x_next, x0_pred = ddim_step(base, x_t, t, t_next, base.schedule)

    def after_update() -> torch.Tensor:
        tuned = copy.deepcopy(base)
        with torch.no_grad():
            for (_, p), d in zip(tuned.named_parameters(), expected.values()):
                p.add_(d)
            return ddim_step(tuned, x_t, t, t_next, base.schedule).x_next

    weight_diagnoses = [
        matches(
            change(loss_on="x_next"),
            "yours matches Eq. 10 on the next state x_{t_next}: Alg. 2 puts the loss on the predicted x0, "
            "f_theta(x_t, t) = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) (Eq. 6), a clean image CLIP can judge",
            tolerance,
        ),
        matches(
            lambda: run(lambda *a: a[3])[0],
            "your function left the weights unchanged: optimizer.zero_grad(), loss.backward(), optimizer.step()",
            tolerance,
        ),
        matches(
            lambda: run(lambda *a: _alg2_step(*a[:-1], 0.0))[0],
            "yours matches the directional loss alone: Eq. 10 adds lambda_l1 * mean |x0_pred - x0| (Eq. 11)",
            tolerance,
        ),
        matches(change(l1="sum"), _l1_sum_hint("x0_pred"), tolerance),
        matches(change(l1="image-sum"), _l1_sum_hint("x0_pred"), tolerance),
    ]
    state_diagnoses = [
        matches(lambda: x0_pred, "yours returned the predicted x0 (Eq. 6): return the next state x_{t_next}"),
        matches(
            after_update,
            "yours matches x_{t_next} computed with the updated model: take the DDIM step first, return that "
            "x_{t_next} (detached) and update the weights with the loss of the same step",
        ),
        matches(lambda: x_t, "yours returned x_t itself: return the next state x_{t_next} of the DDIM step"),
    ]
    label = f"(t={t}, t_next={t_next}, lambda_l1={lambda_l1}, lr={lr})"
    return run_check(
        "Alg. 2 step (Eq. 10 on f_theta)",
        "dclip's Alg. 2 step (dclip.finetune.finetune, algorithm=2)",
        fn,
        [
            Case(
                f"on the weight change after one SGD step {label}",
                lambda: run(fn)[0],
                expected,
                weight_diagnoses,
                "check the step (check_ddim_step), the loss (check_directional_loss) and that the loss is on the "
                "predicted x0 of this one step",
                tolerance,
            ),
            Case(
                f"on the returned x_(t_next) {label}",
                lambda: state(run(fn)[1]),
                x_next,
                state_diagnoses,
                "return x_{t_next} = sqrt(a_next) f_theta + sqrt(1 - a_next) eps_theta of the step, detached",
            ),
        ],
        forbidden=[*_TRAINING, *_LOSSES, identity_loss],
    )
