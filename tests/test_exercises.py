"""The checks of the students' code (dclip.exercises): dclip's own functions pass, plausible mistakes fail with a
message that names the mistake, and a function that raises is reported, not propagated."""

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from dclip import exercises as ex
from dclip.ddim import ddim_generate, ddim_invert, ddim_step, generation_pairs, inversion_pairs
from dclip.ddpm import q_sample
from dclip.finetune import FinetuneConfig, Latents, finetune
from dclip.losses import directional_clip_loss, identity_loss, text_direction
from dclip.models import DiffusionModel
from dclip.noise_combination import mix_noise_predictors
from dclip.schedule import Schedule, time_sequence


def dclip_step(eps_model, x_t, t, t_next, schedule):
    return ddim_step(eps_model, x_t, t, t_next, schedule)[0]


def dclip_alg1(model, clip, x0, x_t0, delta_t, t0, S_gen, optimizer, lambda_l1, detach=None, l1=True):
    """Alg. 1 written with dclip's functions; ``detach`` and ``l1`` make the students' mistakes."""
    if detach is None:
        x = ddim_generate(model, x_t0, model.schedule, t0, S_gen, grad=True)
    else:
        eps_model = (lambda x_t, t: model(x_t.detach(), t)) if detach == "input" else model
        x = x_t0
        for t, t_next in generation_pairs(S_gen, t0, model.schedule.T):
            x = dclip_step(eps_model, x.detach() if detach == "state" else x, t, t_next, model.schedule)
    loss = directional_clip_loss(clip, x, x0, delta_t) + identity_loss(x, x0, lambda_l1 if l1 else 0.0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


#: Each check with dclip's own function in the student's signature.
DCLIP = {
    "q_sample": (ex.check_q_sample, lambda x0, t, schedule, noise: q_sample(x0, t, schedule, noise)),
    "ddim_step": (ex.check_ddim_step, dclip_step),
    "ddim_invert": (ex.check_ddim_invert, lambda m, x0, schedule, t0, S: ddim_invert(m, x0, schedule, t0, S)),
    "directional_loss": (ex.check_directional_loss, lambda clip, g, r, d: directional_clip_loss(clip, g, r, d)),
    "alg1_iteration": (ex.check_alg1_iteration, dclip_alg1),
    "mixing": (ex.check_mixing, mix_noise_predictors),
}


def assert_differs(check: ex.Check, *phrases: str) -> None:
    text = str(check)
    assert not check.passed and check.max_error > check.tolerance, text
    assert text.startswith(f"DIFFERS  {check.name}: "), text
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in {text!r}"


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", DCLIP)
def test_dclips_own_function_passes_and_leaves_the_global_rng_alone(name, seed):
    check, fn = DCLIP[name]
    state = torch.get_rng_state()
    result = check(fn, seed=seed)
    assert torch.equal(torch.get_rng_state(), state)
    assert result.passed and result.max_error <= result.tolerance, str(result)
    assert str(result).startswith(f"OK  {result.name}: matches "), str(result)
    assert repr(result) == str(result)


@pytest.mark.parametrize("name", DCLIP)
def test_a_function_that_raises_is_reported_with_its_exception(name):
    def broken(*args):
        raise KeyError("not written yet")

    result = DCLIP[name][0](broken)
    assert not result.passed and math.isinf(result.max_error)
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


def coefficient_step(alpha_bar, noise_at="next"):
    """A DDIM step with the alpha_bar lookup ``alpha_bar(schedule, t)`` and the noise term's time."""

    def step(eps_model, x_t, t, t_next, schedule):
        a, a_next = alpha_bar(schedule, t), alpha_bar(schedule, t_next)
        eps = eps_model(x_t, torch.full((x_t.shape[0],), max(t, 0)))
        x0 = (x_t - (1 - a) ** 0.5 * eps) / a**0.5
        return a_next**0.5 * x0 + (1 - (a_next if noise_at == "next" else a)) ** 0.5 * eps

    return step


def test_ddim_step_with_the_noise_term_of_the_current_time_is_named():
    result = ex.check_ddim_step(coefficient_step(lambda s, t: float(s.alpha_bar_at(t)), noise_at="current"))
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
    result = ex.check_ddim_step(coefficient_step(lambda s, t: float(s.alpha_bar[t])))
    assert_differs(result, "from t=0 to the clean image at t=-1", "Python's negative index", "alpha_bar(-1) = 1")


def test_ddim_step_that_asks_the_model_about_minus_one_is_named():
    def asks_minus_one(eps_model, x_t, t, t_next, schedule):
        return ddim_step(eps_model, x_t, t, t_next, schedule, eps=eps_model(x_t, torch.full((2,), t)))[0]

    result = ex.check_ddim_step(asks_minus_one)
    assert_differs(result, "on inversion (Eq. 12) from the clean image at t=-1 to t=100", "t=[-1]", "at t=0")


def test_ddim_step_returning_the_predicted_x0_or_a_tuple_or_a_wrong_shape_is_named():
    assert_differs(ex.check_ddim_step(lambda *args: ddim_step(*args)[1]), "the predicted x0 (Eq. 6)")
    assert_differs(ex.check_ddim_step(lambda *args: ddim_step(*args)), "returned a tuple, not a tensor", "x_next")
    assert_differs(
        ex.check_ddim_step(lambda *args: dclip_step(*args)[:, :1]),
        "returned shape (2, 1, 8, 8) where dclip's gives (2, 3, 8, 8)",
    )


# ddim_invert (Eq. 12)


def test_inversion_over_the_pairs_in_the_wrong_order_is_named():
    def reversed_loop(eps_model, x0, schedule, t0, S_for):
        x = x0
        for t, t_next in reversed(inversion_pairs(S_for, t0, schedule.T)):
            x = dclip_step(eps_model, x, t, t_next, schedule)
        return x

    result = ex.check_ddim_invert(reversed_loop)
    assert_differs(result, "with t0=400, S_for=5", "reverse order", "inversion_pairs")


def test_inversion_that_skips_the_step_from_the_clean_image_names_the_times():
    def from_zero(eps_model, x0, schedule, t0, S_for):
        seq, x = time_sequence(S_for, t0, schedule.T), x0
        for t, t_next in zip(seq[:-1], seq[1:]):
            x = dclip_step(eps_model, x, t, t_next, schedule)
        return x

    result = ex.check_ddim_invert(from_zero)
    assert_differs(result, "asked eps_theta at t=[0, 100, 200, 300]", "asks at t=[0, 0, 100, 200, 300]")


# directional_clip_loss (Eq. 9)


def direction_cos(clip, x_gen, x_ref, delta_t):
    return F.cosine_similarity(clip.encode_image(x_gen) - clip.encode_image(x_ref), delta_t[None], dim=-1)


def test_directional_loss_with_one_plus_cos_is_named():
    result = ex.check_directional_loss(lambda *args: (1 + direction_cos(*args)).mean())
    assert_differs(result, "on the loss value, max |difference|", "yours matches 1 + cos")
    assert result.max_error > 0.1


def test_directional_loss_in_the_authors_log_form_is_named():
    result = ex.check_directional_loss(lambda *args: (-torch.log((1 + direction_cos(*args)) / 2)).mean())
    assert_differs(result, "form='log'")


def test_directional_loss_without_a_gradient_or_batch_mean_is_named():
    detached = ex.check_directional_loss(lambda clip, g, r, d: directional_clip_loss(clip, g.detach(), r, d))
    assert_differs(detached, "on the gradient with respect to x_gen", "no gradient to x_gen")
    per_image = ex.check_directional_loss(lambda *args: 1 - direction_cos(*args))
    assert_differs(per_image, "returned shape (2,) where dclip's gives ()", ".mean()")


# Alg. 1 iteration (Eq. 10)


def test_alg1_with_x_detached_between_steps_gets_the_recurrent_gradient_hint():
    result = ex.check_alg1_iteration(lambda *args: dclip_alg1(*args, detach="state"))
    assert_differs(result, "on the weight change after one SGD step", "detached between steps", "recurrent", "Fig. 3")


def test_alg1_matching_the_recurrent_gradient_ablation_is_told_so():
    result = ex.check_alg1_iteration(lambda *args: dclip_alg1(*args, detach="input"))
    assert_differs(result, "recurrent_gradient=False", "Fig. 3")


def test_alg1_without_the_l1_term_or_without_a_step_is_named():
    assert_differs(ex.check_alg1_iteration(lambda *args: dclip_alg1(*args, l1=False)), "directional loss alone")
    assert_differs(ex.check_alg1_iteration(lambda *args: None), "left the weights unchanged", "yours gave 0")


def test_the_alg1_reference_is_what_finetune_runs():
    """dclip.finetune.finetune (Adam, one batch) and the exercise's reference iteration with the same Adam give
    the same weights."""
    g = torch.Generator().manual_seed(0)
    base = DiffusionModel(ex._TinyUNet(g), Schedule.linear(), 8, "exercise-tiny").requires_grad_(False)
    clip, x0 = ex._ToyCLIP(), ex._images(g)
    x_t0 = ddim_invert(base, x0, base.schedule, 300, 4)
    cfg = FinetuneConfig("smiling face", "face", t0=300, S_gen=3, lambda_l1=0.3, lr=1e-3, batch_size=2)
    tuned = finetune(base, clip, Latents(x0, x_t0, 300, 4), cfg, progress=False).model
    ours = copy.deepcopy(base).requires_grad_(True)
    delta_t = text_direction(clip, "smiling face", "face")
    ex._alg1_iteration(ours, clip, x0, x_t0, delta_t, 300, 3, torch.optim.Adam(ours.parameters(), lr=1e-3), 0.3)
    for (name, p), q in zip(tuned.named_parameters(), ours.parameters()):
        assert not torch.equal(p, base.get_parameter(name))
        assert torch.allclose(p, q, atol=1e-7), name


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


def dclip_round_trips(eps_model, x0, schedule, t0, S_gen, noises, restart=False, clamp=True):
    """Alg. 4's first part written with dclip's q_sample and ddim_generate; ``restart`` and ``clamp`` make the
    students' mistakes."""
    x = x0
    for w in noises:
        x = ddim_generate(eps_model, q_sample(x0 if restart else x, t0, schedule, w), schedule, t0, S_gen)
        x = x.clamp(-1, 1) if clamp else x
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_round_trips_written_with_dclip_pass_the_alg4_check_and_leave_the_global_rng_alone(seed):
    state = torch.get_rng_state()
    result = ex.check_to_pretrained_domain(dclip_round_trips, seed=seed)
    assert torch.equal(torch.get_rng_state(), state)
    assert result.passed and result.max_error <= result.tolerance, str(result)
    assert str(result).startswith("OK  to_pretrained_domain (Alg. 4, Eq. 1 + Eq. 13): matches "), str(result)


def test_the_alg4_check_compares_with_to_pretrained_domain_itself():
    """The check's noises are the draws of dclip.editing.to_pretrained_domain: its reference is that function."""
    from dclip.editing import to_pretrained_domain

    schedule = Schedule.linear()
    model = DiffusionModel(ex._GaussianUNet(0.2, 0.5, schedule), schedule, 8, "exercise-gaussian")
    x0 = ex._images(torch.Generator().manual_seed(0))
    draws = torch.Generator().manual_seed(7)
    noises = [torch.randn(x0.shape, generator=draws).double() for _ in range(3)]
    ours = dclip_round_trips(model, x0, schedule, 500, 3, noises)
    theirs = to_pretrained_domain(model, x0, 500, 3, 3, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(ours, theirs, atol=1e-12)


def test_alg4_check_reports_a_function_that_raises():
    def broken(*args):
        raise KeyError("not written yet")

    result = ex.check_to_pretrained_domain(broken)
    assert math.isinf(result.max_error)
    assert_differs(result, "with t0=400, S_gen=4, K_DDPM=1", "your function raised KeyError: 'not written yet'")


def test_alg4_without_the_clamp_or_with_a_deterministic_inversion_is_named():
    no_clamp = ex.check_to_pretrained_domain(lambda *args: dclip_round_trips(*args, clamp=False))
    assert_differs(no_clamp, "with t0=400, S_gen=4, K_DDPM=1, max |difference|", "without clamping", "[-1, 1]")

    def inverted(eps_model, x0, schedule, t0, S_gen, noises):
        x_t0 = ddim_invert(eps_model, x0, schedule, t0, S_gen)
        return ddim_generate(eps_model, x_t0, schedule, t0, S_gen).clamp(-1, 1)

    assert_differs(ex.check_to_pretrained_domain(inverted), "deterministic DDIM inversion (Eq. 12)", "Eq. 1")


def test_alg4_rounds_that_restart_from_the_input_reuse_the_noise_or_stop_after_one_are_named():
    restart = ex.check_to_pretrained_domain(lambda *args: dclip_round_trips(*args, restart=True))
    assert_differs(restart, "with t0=500, S_gen=3, K_DDPM=2", "previous round's x'_0")
    once = ex.check_to_pretrained_domain(lambda e, x, s, t, S, n: dclip_round_trips(e, x, s, t, S, n[:1]))
    assert_differs(once, "a single round", "K_DDPM = len(noises) = 2")
    same = ex.check_to_pretrained_domain(lambda e, x, s, t, S, n: dclip_round_trips(e, x, s, t, S, n[:1] * len(n)))
    assert_differs(same, "noises[0] in every round", "noises[k]")


def test_alg4_on_the_wrong_time_grid_names_the_times():
    def one_step_more(eps_model, x0, schedule, t0, S_gen, noises):
        return dclip_round_trips(eps_model, x0, schedule, t0, S_gen + 1, noises)

    result = ex.check_to_pretrained_domain(one_step_more)
    assert_differs(result, "asked eps_theta at t=[400, 300, 200, 100, 0]", "ask at t=[400, 266, 133, 0]")


# manipulate (Alg. 3)


def dclip_manipulate(base, tuned, x0, t0, S_for, S_gen, invert_with="base", generate_with="tuned", swap=False):
    """Alg. 3 written with dclip's inversion and generation; the keywords make the students' mistakes."""
    models = {"base": base, "tuned": tuned}
    if swap:
        S_for, S_gen = S_gen, S_for
    x_t0 = ddim_invert(models[invert_with], x0, base.schedule, t0, S_for)
    return ddim_generate(models[generate_with], x_t0, base.schedule, t0, S_gen)


def test_manipulation_check_passes_dclips_own_and_a_step_by_step_loop():
    def loop(base, tuned, x0, t0, S_for, S_gen):
        x = x0
        for t, t_next in inversion_pairs(S_for, t0, base.schedule.T):
            x = dclip_step(base, x, t, t_next, base.schedule)
        for t, t_next in generation_pairs(S_gen, t0, base.schedule.T):
            x = dclip_step(tuned, x, t, t_next, base.schedule)
        return x

    for seed in (0, 1):
        for fn in (dclip_manipulate, loop):
            state = torch.get_rng_state()
            result = ex.check_manipulation(fn, seed=seed)
            assert torch.equal(torch.get_rng_state(), state)
            assert result.passed and result.max_error <= result.tolerance, str(result)
            assert str(result).startswith("OK  manipulate (Alg. 3): matches dclip.editing.manipulate on 1 input")


def test_manipulation_reference_differs_from_every_known_mistake():
    """The check's inputs tell the mistakes apart: the edit, the reconstruction and the swapped variants differ."""
    result = ex.check_manipulation(lambda *args: dclip_manipulate(*args, generate_with="base"))
    assert result.max_error > 1e-2, str(result)


def test_manipulation_with_the_wrong_model_on_either_pass_is_named():
    assert_differs(
        ex.check_manipulation(lambda *a: dclip_manipulate(*a, generate_with="base")),
        "with t0=400, S_for=5, S_gen=3",
        "matches the reconstruction",
        "generates with the fine-tuned model",
    )
    assert_differs(
        ex.check_manipulation(lambda *a: dclip_manipulate(*a, invert_with="tuned")),
        "inverted with the fine-tuned model",
        "latents of the pretrained model",
    )
    assert_differs(
        ex.check_manipulation(lambda *a: dclip_manipulate(*a, invert_with="tuned", generate_with="base")),
        "the two models swapped",
    )


def test_manipulation_with_swapped_step_counts_or_returning_the_latent_is_named():
    assert_differs(ex.check_manipulation(lambda *a: dclip_manipulate(*a, swap=True)), "S_for and S_gen swapped")

    def latent_only(base, tuned, x0, t0, S_for, S_gen):
        return ddim_invert(base, x0, base.schedule, t0, S_for)

    assert_differs(ex.check_manipulation(latent_only), "returned the latent x_t0")
    assert_differs(ex.check_manipulation(lambda *a: None), "returned a NoneType, not a tensor")
    assert_differs(ex.check_manipulation(lambda *a: 1 / 0), "your function raised ZeroDivisionError")
