"""The checks of the students' code (dclip.exercises): hand-written solutions pass, plausible mistakes fail with a
message that names the mistake, a function that raises is reported, not propagated, and a check cannot be fooled by
calling dclip's own function or by changing an input in place; the student edition's stub is "not implemented"."""

import copy
import functools
import math
import sys

import pytest
import torch
from torch.nn import functional as F

import dclip
from dclip import exercises as ex
from dclip.ddim import ddim_generate, ddim_invert, generation_pairs, inversion_pairs
from dclip.ddpm import q_sample
from dclip.editing import manipulate
from dclip.exercises.harness import images
from dclip.exercises.standins import GaussianUNet, TinyUNet, ToyCLIP
from dclip.exercises.training import _alg1_iteration, _alg2_step
from dclip.finetune import FinetuneConfig, Latents, finetune
from dclip.losses import directional_clip_loss, identity_loss, text_direction
from dclip.models import DiffusionModel
from dclip.schedule import Schedule, time_sequence

# Hand-written solutions, as a student writes them (the checks forbid calling dclip's DDIM and losses).


def alpha_bar(schedule, t):
    return float(schedule.alpha_bar_at(t))


def hand_step(eps_model, x_t, t, t_next, schedule, alpha=alpha_bar, noise_at="next", ask=None):
    """One DDIM step (Eq. 12/13) by hand: (x_next, x0_pred). ``alpha``, ``noise_at`` and ``ask`` (the time the
    noise predictor is asked about) make the students' mistakes."""
    a, a_next = alpha(schedule, t), alpha(schedule, t_next)
    eps = eps_model(x_t, torch.full((x_t.shape[0],), max(t, 0) if ask is None else ask))
    x0 = (x_t - (1 - a) ** 0.5 * eps) / a**0.5
    return a_next**0.5 * x0 + (1 - (a_next if noise_at == "next" else a)) ** 0.5 * eps, x0


def my_step(eps_model, x_t, t, t_next, schedule):
    return hand_step(eps_model, x_t, t, t_next, schedule)[0]


def my_invert(eps_model, x0, schedule, t0, S_for):
    x = x0
    for t, t_next in inversion_pairs(S_for, t0, schedule.T):
        x = my_step(eps_model, x, t, t_next, schedule)
    return x


def my_generate(eps_model, x, schedule, t0, S_gen, detach=None):
    """DDIM generation by hand; ``detach`` ("input" or "state") makes the mistakes of Alg. 1."""
    eps = (lambda x_t, t: eps_model(x_t.detach(), t)) if detach == "input" else eps_model
    for t, t_next in generation_pairs(S_gen, t0, schedule.T):
        x = my_step(eps, x.detach() if detach == "state" else x, t, t_next, schedule)
    return x


def my_q_sample(x0, t, schedule, noise):
    a = schedule.alpha_bar_at(t).reshape(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def direction_cos(clip, x_gen, x_ref, delta_t):
    return F.cosine_similarity(clip.encode_image(x_gen) - clip.encode_image(x_ref), delta_t[None], dim=-1)


def my_directional_loss(clip, x_gen, x_ref, delta_t):
    return (1 - direction_cos(clip, x_gen, x_ref, delta_t)).mean()


def l1_term(x, x0, lambda_l1, form="mean"):
    if form == "sum":
        return lambda_l1 * (x - x0).abs().sum()
    return lambda_l1 * (x - x0).abs().mean() if form == "mean" else 0.0


def sgd_step(optimizer, loss):
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def my_alg1(model, clip, x0, x_t0, delta_t, t0, S_gen, optimizer, lambda_l1, detach=None, l1="mean"):
    """Alg. 1 by hand; ``detach`` and ``l1`` ("mean", "sum", "none") make the students' mistakes."""
    x = my_generate(model, x_t0, model.schedule, t0, S_gen, detach)
    loss = my_directional_loss(clip, x, x0, delta_t) + l1_term(x, x0, lambda_l1, l1)
    sgd_step(optimizer, loss)
    return loss.item()


def my_alg2(model, clip, x0, x_t, t, t_next, delta_t, optimizer, lambda_l1, loss_on="x0", l1="mean", out="next"):
    """One step of Alg. 2 by hand; ``loss_on``, ``l1`` and ``out`` ("next", "graph", "x0", "after") make the
    students' mistakes."""
    x_next, x0_pred = hand_step(model, x_t, t, t_next, model.schedule)
    x = x0_pred if loss_on == "x0" else x_next
    sgd_step(optimizer, my_directional_loss(clip, x, x0, delta_t) + l1_term(x, x0, lambda_l1, l1))
    if out == "after":
        with torch.no_grad():
            return hand_step(model, x_t, t, t_next, model.schedule)[0]
    return {"next": x_next.detach(), "graph": x_next, "x0": x0_pred.detach()}[out]


def my_mixing(eps_models, gammas):
    return lambda x, t: sum(g * m(x, t) for g, m in zip(gammas, eps_models))


def my_round_trips(eps_model, x0, schedule, t0, S_gen, noises, restart=False, clamp=True):
    """Alg. 4's first part by hand; ``restart`` and ``clamp`` make the students' mistakes."""
    x = x0
    for w in noises:
        x = my_generate(eps_model, my_q_sample(x0 if restart else x, t0, schedule, w), schedule, t0, S_gen)
        x = x.clamp(-1, 1) if clamp else x
    return x


def my_manipulate(base, tuned, x0, t0, S_for, S_gen, invert_with="base", generate_with="tuned", swap=False):
    """Alg. 3 by hand; the keywords make the students' mistakes."""
    models = {"base": base, "tuned": tuned}
    if swap:
        S_for, S_gen = S_gen, S_for
    x_t0 = my_invert(models[invert_with], x0, base.schedule, t0, S_for)
    return my_generate(models[generate_with], x_t0, base.schedule, t0, S_gen)


#: Each check with a correct hand-written solution.
SOLUTIONS = {
    "q_sample": (ex.check_q_sample, my_q_sample),
    "ddim_step": (ex.check_ddim_step, my_step),
    "ddim_invert": (ex.check_ddim_invert, my_invert),
    "directional_loss": (ex.check_directional_loss, my_directional_loss),
    "alg1_iteration": (ex.check_alg1_iteration, my_alg1),
    "alg2_step": (ex.check_alg2_step, my_alg2),
    "mixing": (ex.check_mixing, my_mixing),
    "to_pretrained_domain": (ex.check_to_pretrained_domain, my_round_trips),
    "manipulation": (ex.check_manipulation, my_manipulate),
}


def dclip_alg1(model, clip, x0, x_t0, delta_t, t0, S_gen, optimizer, lambda_l1):
    x = ddim_generate(model, x_t0, model.schedule, t0=t0, S_gen=S_gen, grad=True)
    sgd_step(optimizer, directional_clip_loss(clip, x, x0, delta_t) + identity_loss(x, x0, lambda_l1))


def dclip_alg2(model, clip, x0, x_t, t, t_next, delta_t, optimizer, lambda_l1):
    x_next, x0_pred = dclip.ddim.ddim_step(model, x_t, t, t_next, model.schedule)
    sgd_step(optimizer, directional_clip_loss(clip, x0_pred, x0, delta_t) + identity_loss(x0_pred, x0, lambda_l1))
    return x_next.detach()


#: Each check with a one-line wrapper around dclip's own function (or the dclip functions that make it up), and the
#: function the check names.
WRAPPERS = {
    "q_sample": (ex.check_q_sample, lambda x0, t, s, noise: dclip.q_sample(x0, t, s, noise), "dclip.ddpm.q_sample"),
    "ddim_step": (ex.check_ddim_step, lambda e, x, t, n, s: dclip.ddim.ddim_step(e, x, t, n, s)[0], "ddim.ddim_step"),
    "ddim_invert": (
        ex.check_ddim_invert,
        lambda e, x0, s, t0, S: ddim_invert(e, x0, s, t0=t0, S_for=S),
        "ddim.ddim_invert",
    ),
    "directional_loss": (
        ex.check_directional_loss,
        lambda clip, g, r, d: directional_clip_loss(clip, g, r, d),
        "dclip.losses.directional_clip_loss",
    ),
    "alg1_iteration": (ex.check_alg1_iteration, dclip_alg1, "dclip.ddim.ddim_generate"),
    "alg2_step": (ex.check_alg2_step, dclip_alg2, "dclip.ddim.ddim_step"),
    "mixing": (ex.check_mixing, dclip.mix_noise_predictors, "dclip.noise_combination.mix_noise_predictors"),
    "to_pretrained_domain": (
        ex.check_to_pretrained_domain,
        lambda e, x0, s, t0, S, ws: ddim_generate(e, q_sample(x0, t0, s, ws[0]), s, t0=t0, S_gen=S).clamp(-1, 1),
        "dclip.ddpm.q_sample",
    ),
    "manipulation": (
        ex.check_manipulation,
        lambda b, tuned, x0, t0, S_for, S_gen: manipulate(b, tuned, x0, t0=t0, S_for=S_for, S_gen=S_gen),
        "dclip.editing.manipulate",
    ),
}


def mutating(fn, index):
    """``fn``, which then changes its ``index``-th argument in place (a tensor, or the first of a list)."""

    def changed(*args):
        out = fn(*args)
        target = args[index][0] if isinstance(args[index], list) else args[index]
        with torch.no_grad():
            target.add_(1.0)
        return out

    return changed


#: Each check with a correct solution that changes one of its inputs in place, and the input's name.
MUTATING = {
    "q_sample": (ex.check_q_sample, mutating(my_q_sample, 0), "x0"),
    "ddim_step": (ex.check_ddim_step, mutating(my_step, 1), "x_t"),
    "ddim_invert": (ex.check_ddim_invert, mutating(my_invert, 1), "x0"),
    "directional_loss": (ex.check_directional_loss, mutating(my_directional_loss, 2), "x_ref"),
    "alg1_iteration": (ex.check_alg1_iteration, mutating(my_alg1, 2), "x0"),
    "alg2_step": (ex.check_alg2_step, mutating(my_alg2, 3), "x_t"),
    "mixing": (ex.check_mixing, lambda ms, gs: mutating(my_mixing(ms, gs), 0), "x"),
    "to_pretrained_domain": (ex.check_to_pretrained_domain, mutating(my_round_trips, 5), "noises[0]"),
    "manipulation": (ex.check_manipulation, mutating(my_manipulate, 2), "x0"),
}


def assert_differs(check: ex.Check, *phrases: str) -> None:
    text = str(check)
    assert not check.passed and check.max_error > check.tolerance, text
    assert text.startswith(f"DIFFERS  {check.name}: "), text
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in {text!r}"


def test_every_check_is_tested():
    checks = {name for name in ex.__all__ if name.startswith("check_")}
    assert {c.__name__ for c, _ in SOLUTIONS.values()} == checks
    assert {c.__name__ for c, *_ in WRAPPERS.values()} == checks
    assert {c.__name__ for c, *_ in MUTATING.values()} == checks


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", SOLUTIONS)
def test_a_hand_written_solution_passes_and_leaves_the_global_rng_and_profiler_alone(name, seed):
    check, fn = SOLUTIONS[name]
    state = torch.get_rng_state()
    result = check(fn, seed=seed)
    assert torch.equal(torch.get_rng_state(), state)
    assert sys.getprofile() is None
    assert result.passed and result.max_error <= result.tolerance, str(result)
    assert str(result).startswith(f"OK  {result.name}: matches "), str(result)
    assert repr(result) == str(result)


@pytest.mark.parametrize("name", WRAPPERS)
def test_a_wrapper_around_dclips_own_function_fails_and_names_it(name):
    check, wrapper, called = WRAPPERS[name]
    result = check(wrapper)
    assert math.isinf(result.max_error)
    assert_differs(result, "your function called ", called, "write it from the equations, not by calling ")
    assert sys.getprofile() is None
    assert check(SOLUTIONS[name][1]).passed, "the check's own reference still works after a caught call"


def test_dclips_function_is_caught_however_the_student_reaches_it():
    """By name from the package, from its module, imported into the student's namespace, as a partial, passed as
    the function itself, or called inside another dclip function: each is the same code, and is caught."""
    from dclip import q_sample as bound

    late = functools.partial(dclip.ddpm.q_sample)

    def via_editing(x0, t, schedule, noise):  # the name dclip.editing imported
        return dclip.editing.q_sample(x0, t, schedule, noise)

    for fn in (lambda *a: bound(*a), late, dclip.q_sample, via_editing):
        assert_differs(ex.check_q_sample(fn), "not by calling dclip.ddpm.q_sample")

    def nested(x0, t, schedule, noise):  # dclip.ddpm.ddpm_loss noises with q_sample inside
        dclip.ddpm.ddpm_loss(lambda x, s: x, x0, schedule, generator=torch.Generator().manual_seed(0))
        return my_q_sample(x0, t, schedule, noise)

    assert_differs(ex.check_q_sample(nested), "not by calling dclip.ddpm.q_sample")
    outer = ex.check_ddim_step(lambda e, x, t, n, s: dclip.reconstruct(e, x, s, t0=100, S_for=1, S_gen=1))
    assert_differs(outer, "not by calling dclip.ddim.reconstruct")


def test_helpers_the_student_may_use_stay_allowed():
    def with_helpers(eps_model, x0, schedule, t0, S_for):
        x = x0
        for t, t_next in zip([-1] + time_sequence(S_for, t0, schedule.T)[:-1], time_sequence(S_for, t0, schedule.T)):
            a, a_next = alpha_bar(schedule, t), alpha_bar(schedule, t_next)
            eps = eps_model(x, torch.full((len(x),), max(t, 0)))
            x = a_next**0.5 * dclip.predict_x0(x, eps, a) + (1 - a_next) ** 0.5 * eps
        return x

    assert ex.check_ddim_invert(with_helpers).passed

    def step_with_predict_x0(eps_model, x_t, t, t_next, schedule):  # Eq. 6 is half of the step: not allowed there
        a, a_next = alpha_bar(schedule, t), alpha_bar(schedule, t_next)
        eps = eps_model(x_t, torch.full((len(x_t),), max(t, 0)))
        return a_next**0.5 * dclip.predict_x0(x_t, eps, a) + (1 - a_next) ** 0.5 * eps

    assert_differs(ex.check_ddim_step(step_with_predict_x0), "not by calling dclip.ddim.predict_x0")


@pytest.mark.parametrize("name", MUTATING)
def test_a_function_that_changes_its_input_in_place_fails_and_names_the_input(name):
    check, fn, given = MUTATING[name]
    result = check(fn)
    assert math.isinf(result.max_error)
    assert_differs(result, f"your function changed its input {given} in place", "compute into a new tensor")
    assert "Hint" not in str(result), "no hint about the output: the output is not what is wrong"


def test_an_in_place_q_sample_with_the_right_values_fails():
    def in_place(x0, t, schedule, noise):
        a = schedule.alpha_bar_at(t).reshape(-1, 1, 1, 1)
        return x0.mul_(a.sqrt()).add_((1 - a).sqrt() * noise)

    assert_differs(ex.check_q_sample(in_place), "with t=300, your function changed its input x0 in place")


@pytest.mark.parametrize("name", SOLUTIONS)
def test_the_student_editions_stub_is_not_implemented_yet(name):
    def my_function(*args):
        raise NotImplementedError()

    result = SOLUTIONS[name][0](my_function)
    assert not result.passed and not result.implemented and math.isinf(result.max_error)
    assert str(result) == (
        f"TO DO  {result.name}: not implemented yet: write my_function in the cell above (the stub raises "
        "NotImplementedError)"
    )


@pytest.mark.parametrize("name", SOLUTIONS)
def test_a_function_that_raises_is_reported_with_its_exception(name):
    def broken(*args):
        raise KeyError("not written yet")

    result = SOLUTIONS[name][0](broken)
    assert not result.passed and result.implemented and math.isinf(result.max_error)
    assert_differs(result, "your function raised KeyError: 'not written yet'")


def test_the_tolerance_lets_float32_arithmetic_pass():
    def step32(eps_model, x_t, t, t_next, schedule):
        a, a_next = (schedule.alpha_bar_at(s).float() for s in (t, t_next))
        x = x_t.float()
        eps = eps_model(x, torch.full((x.shape[0],), max(t, 0)))
        return a_next.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt() + (1 - a_next).sqrt() * eps

    result = ex.check_ddim_step(step32)
    assert result.passed and 1e-9 < result.max_error < 1e-5, str(result)


# q_sample (Eq. 1)


def test_q_sample_with_alpha_instead_of_alpha_bar_is_named():
    def with_alpha(x0, t, schedule, noise):
        alpha = (1 - schedule.betas[t]).reshape(-1, 1, 1, 1)
        return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise

    result = ex.check_q_sample(with_alpha)
    assert_differs(result, "with t=300, max |difference|", "alpha_t = 1 - beta_t", "schedule.alpha_bar_at(t)")
    assert result.max_error > 0.5


def test_q_sample_that_does_not_broadcast_one_time_per_image_is_told_to_reshape():
    def scalar_only(x0, t, schedule, noise):
        a = schedule.alpha_bar_at(t)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    assert_differs(
        ex.check_q_sample(scalar_only), "with one time per image, t=tensor([20, 700])", "raised", "(N, 1, 1, 1)"
    )


def test_q_sample_with_swapped_coefficients_is_named():
    def swapped(x0, t, schedule, noise):
        a = schedule.alpha_bar_at(t).reshape(-1, 1, 1, 1)
        return (1 - a).sqrt() * x0 + a.sqrt() * noise

    assert_differs(ex.check_q_sample(swapped), "swapped")


# ddim_step (Eq. 12/13)


def test_ddim_step_with_the_noise_term_of_the_current_time_is_named():
    result = ex.check_ddim_step(lambda *args: hand_step(*args, noise_at="current")[0])
    assert_differs(
        result,
        "on generation (Eq. 13) from t=500 to t=300, max |difference|",
        "at index (",
        "; yours gave ",
        "sqrt(1 - alpha_bar(t_next))",
        "sqrt(1 - alpha_bar(t)) there",
    )
    assert result.max_error > 0.1


def test_ddim_step_that_indexes_alpha_bar_minus_one_is_told_alpha_bar_of_minus_one_is_one():
    result = ex.check_ddim_step(lambda *args: hand_step(*args, alpha=lambda s, t: float(s.alpha_bar[t]))[0])
    assert_differs(result, "from t=0 to the clean image at t=-1", "Python's negative index", "alpha_bar(-1) = 1")


def test_ddim_step_that_asks_the_model_about_minus_one_is_named():
    result = ex.check_ddim_step(lambda e, x, t, n, s: hand_step(e, x, t, n, s, ask=t)[0])
    assert_differs(result, "on inversion (Eq. 12) from the clean image at t=-1 to t=100", "t=[-1]", "at t=0")


def test_ddim_step_returning_the_predicted_x0_or_a_tuple_or_a_wrong_shape_is_named():
    assert_differs(ex.check_ddim_step(lambda *args: hand_step(*args)[1]), "the predicted x0 (Eq. 6)")
    assert_differs(ex.check_ddim_step(hand_step), "returned a tuple, not a tensor", "x_next")
    assert_differs(
        ex.check_ddim_step(lambda *args: my_step(*args)[:, :1]),
        "returned shape (2, 1, 8, 8) where dclip's gives (2, 3, 8, 8)",
    )


# ddim_invert (Eq. 12)


def test_inversion_over_the_pairs_in_the_wrong_order_is_named():
    def reversed_loop(eps_model, x0, schedule, t0, S_for):
        x = x0
        for t, t_next in reversed(inversion_pairs(S_for, t0, schedule.T)):
            x = my_step(eps_model, x, t, t_next, schedule)
        return x

    result = ex.check_ddim_invert(reversed_loop)
    assert_differs(result, "with t0=400, S_for=5", "reverse order", "inversion_pairs")


def test_inversion_that_skips_the_step_from_the_clean_image_names_the_times():
    def from_zero(eps_model, x0, schedule, t0, S_for):
        seq, x = time_sequence(S_for, t0, schedule.T), x0
        for t, t_next in zip(seq[:-1], seq[1:]):
            x = my_step(eps_model, x, t, t_next, schedule)
        return x

    result = ex.check_ddim_invert(from_zero)
    assert_differs(result, "asked eps_theta at t=[0, 100, 200, 300]", "asks at t=[0, 0, 100, 200, 300]")


# directional_clip_loss (Eq. 9)


def test_directional_loss_with_one_plus_cos_is_named():
    result = ex.check_directional_loss(lambda *args: (1 + direction_cos(*args)).mean())
    assert_differs(result, "on the loss value, max |difference|", "yours matches 1 + cos")
    assert result.max_error > 0.1


def test_directional_loss_in_the_authors_log_form_is_named():
    result = ex.check_directional_loss(lambda *args: (-torch.log((1 + direction_cos(*args)) / 2)).mean())
    assert_differs(result, "form='log'")


def test_directional_loss_without_a_gradient_or_batch_mean_is_named():
    detached = ex.check_directional_loss(lambda clip, g, r, d: my_directional_loss(clip, g.detach(), r, d))
    assert_differs(detached, "on the gradient with respect to x_gen", "no gradient to x_gen")
    per_image = ex.check_directional_loss(lambda *args: 1 - direction_cos(*args))
    assert_differs(per_image, "returned shape (2,) where dclip's gives ()", ".mean()")


# Alg. 1 iteration (Eq. 10)


def test_alg1_with_x_detached_between_steps_gets_the_recurrent_gradient_hint():
    result = ex.check_alg1_iteration(lambda *args: my_alg1(*args, detach="state"))
    assert_differs(result, "on the weight change after one SGD step", "detached between steps", "recurrent", "Fig. 3")


def test_alg1_matching_the_recurrent_gradient_ablation_is_told_so():
    result = ex.check_alg1_iteration(lambda *args: my_alg1(*args, detach="input"))
    assert_differs(result, "recurrent_gradient=False", "Fig. 3")


def test_alg1_without_the_l1_term_or_without_a_step_is_named():
    assert_differs(ex.check_alg1_iteration(lambda *args: my_alg1(*args, l1="none")), "directional loss alone")
    assert_differs(ex.check_alg1_iteration(lambda *args: None), "left the weights unchanged", "yours gave 0")


def test_alg1_with_the_l1_term_as_a_sum_gets_its_own_hint():
    result = ex.check_alg1_iteration(lambda *args: my_alg1(*args, l1="sum"))
    assert_differs(
        result, "the L1 term written as a sum over pixels", "|x0 - x_gen| of Eq. 11", "192 per 3 x 8 x 8 image"
    )

    def per_image_sum(model, clip, x0, x_t0, delta_t, t0, S_gen, optimizer, lambda_l1):
        x = my_generate(model, x_t0, model.schedule, t0, S_gen)
        l1 = lambda_l1 * (x - x0).abs().flatten(1).sum(1).mean()
        sgd_step(optimizer, my_directional_loss(clip, x, x0, delta_t) + l1)

    assert_differs(ex.check_alg1_iteration(per_image_sum), "the L1 term written as a sum over pixels")


def test_the_alg1_reference_is_what_finetune_runs():
    """dclip.finetune.finetune (Adam, one batch) and the exercise's reference iteration with the same Adam give
    the same weights."""
    g = torch.Generator().manual_seed(0)
    base = DiffusionModel(TinyUNet(g), Schedule.linear(), 8, "exercise-tiny").requires_grad_(False)
    clip, x0 = ToyCLIP(), images(g)
    x_t0 = ddim_invert(base, x0, base.schedule, t0=300, S_for=4)
    cfg = FinetuneConfig("smiling face", "face", t0=300, S_gen=3, lambda_l1=0.3, lr=1e-3, batch_size=2)
    tuned = finetune(base, clip, Latents(x0, x_t0, 300, 4), cfg, progress=False).model
    ours = copy.deepcopy(base).requires_grad_(True)
    delta_t = text_direction(clip, "smiling face", "face")
    _alg1_iteration(ours, clip, x0, x_t0, delta_t, 300, 3, torch.optim.Adam(ours.parameters(), lr=1e-3), 0.3)
    for (name, p), q in zip(tuned.named_parameters(), ours.parameters()):
        assert not torch.equal(p, base.get_parameter(name))
        assert torch.allclose(p, q, atol=1e-7), name


# Alg. 2 step (Eq. 10 on the predicted x0)


def test_alg2_with_the_loss_on_the_next_state_is_named():
    result = ex.check_alg2_step(lambda *args: my_alg2(*args, loss_on="next"))
    assert_differs(result, "on the weight change after one SGD step (t=300, t_next=150", "on the predicted x0")


def test_alg2_returning_the_state_with_its_graph_is_told_to_detach():
    result = ex.check_alg2_step(lambda *args: my_alg2(*args, out="graph"))
    assert_differs(result, "on the returned x_(t_next)", "requires_grad=True", "x_next.detach()")


def test_alg2_returning_the_predicted_x0_or_the_state_after_the_update_is_named():
    assert_differs(ex.check_alg2_step(lambda *args: my_alg2(*args, out="x0")), "returned the predicted x0 (Eq. 6)")
    after = ex.check_alg2_step(lambda *args: my_alg2(*args, out="after"))
    assert_differs(after, "computed with the updated model", "take the DDIM step first")


def test_alg2_without_a_step_without_l1_or_with_l1_as_a_sum_is_named():
    def no_update(model, clip, x0, x_t, t, t_next, delta_t, optimizer, lambda_l1):
        return hand_step(model, x_t, t, t_next, model.schedule)[0].detach()

    assert_differs(ex.check_alg2_step(no_update), "left the weights unchanged", "optimizer.step()")
    assert_differs(ex.check_alg2_step(lambda *args: my_alg2(*args, l1="none")), "directional loss alone")
    summed = ex.check_alg2_step(lambda *args: my_alg2(*args, l1="sum"))
    assert_differs(summed, "the L1 term written as a sum over pixels", "|x0 - x0_pred|")


def test_the_alg2_reference_is_what_finetune_runs():
    """dclip.finetune.finetune with algorithm=2 (Adam, one batch: one update per reverse step) and the exercise's
    reference step over the same grid, with the same Adam, give the same weights."""
    g = torch.Generator().manual_seed(0)
    base = DiffusionModel(TinyUNet(g), Schedule.linear(), 8, "exercise-tiny").requires_grad_(False)
    clip, x0 = ToyCLIP(), images(g)
    x_t0 = ddim_invert(base, x0, base.schedule, t0=300, S_for=4)
    cfg = FinetuneConfig("smiling face", "face", t0=300, S_gen=3, lambda_l1=0.3, lr=1e-3, batch_size=2, algorithm=2)
    tuned = finetune(base, clip, Latents(x0, x_t0, 300, 4), cfg, progress=False).model
    ours = copy.deepcopy(base).requires_grad_(True)
    delta_t, adam = text_direction(clip, "smiling face", "face"), torch.optim.Adam(ours.parameters(), lr=1e-3)
    x = x_t0
    for t, t_next in generation_pairs(3, 300, base.schedule.T):
        x = _alg2_step(ours, clip, x0, x, t, t_next, delta_t, adam, 0.3)
        assert not x.requires_grad
    for (name, p), q in zip(tuned.named_parameters(), ours.parameters()):
        assert not torch.equal(p, base.get_parameter(name))
        assert torch.allclose(p, q, atol=1e-7), name


def test_alg2_check_misses_a_function_that_returns_x_t_by_far_more_than_its_tolerance():
    result = ex.check_alg2_step(lambda *args: args[3])
    assert_differs(result, "left the weights unchanged")
    assert result.max_error > 100 * result.tolerance, str(result)


# mix_noise_predictors (Eq. 14)


def test_mixer_whose_weights_do_not_sum_to_one_is_told_its_weights():
    result = ex.check_mixing(lambda models, gammas: lambda x, t: sum(m(x, t) for m in models))
    assert_differs(result, "at t=300", "weighs the predictors by [1, 1, 1], which sum to 3", "sum to 1")


def test_mixer_with_the_weights_in_the_wrong_order_or_no_predictor_is_named():
    def reversed_weights(models, gammas):
        return lambda x, t: sum(g * m(x, t) for g, m in zip(reversed(gammas), models))

    assert_differs(ex.check_mixing(reversed_weights), "by [0.3, 0.5, 0.2]", "gamma = [0.2, 0.5, 0.3]")
    assert_differs(ex.check_mixing(lambda models, gammas: 0.0), "returned a float, not a noise predictor")


# to_pretrained_domain (Alg. 4, step 1: Eq. 1 then Eq. 13, K_DDPM rounds)


def test_the_alg4_check_compares_with_to_pretrained_domain_itself():
    """The check's noises are the draws of dclip.editing.to_pretrained_domain: its reference is that function."""
    from dclip.editing import to_pretrained_domain

    schedule = Schedule.linear()
    model = DiffusionModel(GaussianUNet(0.2, 0.5, schedule), schedule, 8, "exercise-gaussian")
    x0 = images(torch.Generator().manual_seed(0))
    draws = torch.Generator().manual_seed(7)
    noises = [torch.randn(x0.shape, generator=draws).double() for _ in range(3)]
    ours = my_round_trips(model, x0, schedule, 500, 3, noises)
    theirs = to_pretrained_domain(model, x0, t0=500, S_gen=3, k_ddpm=3, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(ours, theirs, atol=1e-12)


def test_alg4_without_the_clamp_or_with_a_deterministic_inversion_is_named():
    no_clamp = ex.check_to_pretrained_domain(lambda *args: my_round_trips(*args, clamp=False))
    assert_differs(no_clamp, "with t0=400, S_gen=4, K_DDPM=1, max |difference|", "without clamping", "[-1, 1]")

    def inverted(eps_model, x0, schedule, t0, S_gen, noises):
        x_t0 = my_invert(eps_model, x0, schedule, t0, S_gen)
        return my_generate(eps_model, x_t0, schedule, t0, S_gen).clamp(-1, 1)

    assert_differs(ex.check_to_pretrained_domain(inverted), "deterministic DDIM inversion (Eq. 12)", "Eq. 1")


def test_alg4_rounds_that_restart_from_the_input_reuse_the_noise_or_stop_after_one_are_named():
    restart = ex.check_to_pretrained_domain(lambda *args: my_round_trips(*args, restart=True))
    assert_differs(restart, "with t0=500, S_gen=3, K_DDPM=2", "previous round's x'_0")
    once = ex.check_to_pretrained_domain(lambda e, x, s, t, S, n: my_round_trips(e, x, s, t, S, n[:1]))
    assert_differs(once, "a single round", "K_DDPM = len(noises) = 2")
    same = ex.check_to_pretrained_domain(lambda e, x, s, t, S, n: my_round_trips(e, x, s, t, S, n[:1] * len(n)))
    assert_differs(same, "noises[0] in every round", "noises[k]")


def test_alg4_on_the_wrong_time_grid_names_the_times():
    def one_step_more(eps_model, x0, schedule, t0, S_gen, noises):
        return my_round_trips(eps_model, x0, schedule, t0, S_gen + 1, noises)

    result = ex.check_to_pretrained_domain(one_step_more)
    assert_differs(result, "asked eps_theta at t=[400, 300, 200, 100, 0]", "ask at t=[400, 266, 133, 0]")


# manipulate (Alg. 3)


def test_manipulation_reference_differs_from_every_known_mistake():
    """The check's inputs tell the mistakes apart: the edit, the reconstruction and the swapped variants differ."""
    result = ex.check_manipulation(lambda *args: my_manipulate(*args, generate_with="base"))
    assert result.max_error > 1e-2, str(result)


def test_manipulation_with_the_wrong_model_on_either_pass_is_named():
    assert_differs(
        ex.check_manipulation(lambda *a: my_manipulate(*a, generate_with="base")),
        "with t0=400, S_for=5, S_gen=3",
        "matches the reconstruction",
        "generates with the fine-tuned model",
    )
    assert_differs(
        ex.check_manipulation(lambda *a: my_manipulate(*a, invert_with="tuned")),
        "inverted with the fine-tuned model",
        "latents of the pretrained model",
    )
    assert_differs(
        ex.check_manipulation(lambda *a: my_manipulate(*a, invert_with="tuned", generate_with="base")),
        "the two models swapped",
    )


def test_manipulation_with_swapped_step_counts_or_returning_the_latent_is_named():
    assert_differs(ex.check_manipulation(lambda *a: my_manipulate(*a, swap=True)), "S_for and S_gen swapped")

    def latent_only(base, tuned, x0, t0, S_for, S_gen):
        return my_invert(base, x0, base.schedule, t0, S_for)

    assert_differs(ex.check_manipulation(latent_only), "returned the latent x_t0")
    assert_differs(ex.check_manipulation(lambda *a: None), "returned a NoneType, not a tensor")
    assert_differs(ex.check_manipulation(lambda *a: 1 / 0), "your function raised ZeroDivisionError")
