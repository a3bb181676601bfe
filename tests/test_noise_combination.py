import pytest
import torch

from dclip.ddim import ddim_generate, ddim_step, predict_x0
from dclip.noise_combination import mix_noise_predictors, transition_gammas


def models():
    return [lambda x, t: 0.3 * x, lambda x, t: torch.sin(x), lambda x, t: -0.2 * x + 0.1]


def test_one_model_with_gamma_one_is_the_plain_step(schedule, gen):
    m = models()[1]
    x = torch.randn(3, 3, 4, 4, generator=gen)
    assert torch.equal(
        ddim_generate(mix_noise_predictors([m], [1.0]), x, schedule, t0=300, S_gen=5),
        ddim_generate(m, x, schedule, t0=300, S_gen=5),
    )


def test_combined_step_is_eq14(schedule, gen):
    """sqrt(a_s) sum_i g_i f_i + sqrt(1 - a_s) sum_i g_i eps_i, written out term by term."""
    ms, g = models(), [0.5, 0.2, 0.3]
    x = torch.randn(2, 3, 4, 4, generator=gen)
    t = torch.full((2,), 400)
    a_t, a_s = schedule.alpha_bar_at(400).item(), schedule.alpha_bar_at(350).item()
    eps = [m(x, t) for m in ms]
    expected = a_s**0.5 * sum(gi * predict_x0(x, e, a_t) for gi, e in zip(g, eps)) + (1 - a_s) ** 0.5 * sum(
        gi * e for gi, e in zip(g, eps)
    )
    out, _ = ddim_step(mix_noise_predictors(ms, g), x, 400, 350, schedule)
    assert torch.allclose(out, expected, atol=1e-6)


def test_time_dependent_weights_switch_models(schedule, gen):
    ms = models()[:2]
    x = torch.randn(1, 3, 4, 4, generator=gen)
    early_first = mix_noise_predictors(ms, lambda t: [1.0, 0.0] if t > 150 else [0.0, 1.0])
    t = torch.full((1,), 200)
    assert torch.equal(early_first(x, t), ms[0](x, t))
    assert torch.equal(early_first(x, torch.full((1,), 100)), ms[1](x, t))


def test_weights_must_sum_to_one_and_match_the_models():
    with pytest.raises(ValueError, match="sum to 1"):
        mix_noise_predictors(models()[:2], [0.5, 0.6])
    with pytest.raises(ValueError, match="one gamma per model"):
        mix_noise_predictors(models()[:2], [1.0])
    bad = mix_noise_predictors(models()[:2], lambda t: [0.9, 0.9])
    with pytest.raises(ValueError, match="sum to 1"):
        bad(torch.zeros(1, 3, 2, 2), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        transition_gammas(1.5)
    assert transition_gammas(0.25) == [0.75, 0.25]
