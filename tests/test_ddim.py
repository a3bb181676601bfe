import math

import pytest
import torch

from dclip.ddim import (
    ddim_generate,
    ddim_invert,
    ddim_step,
    generation_pairs,
    inversion_pairs,
    predict_x0,
    reconstruct,
    sigma,
)
from dclip.toy import GaussianEps, exact_flow

MU, S = 0.3, 0.5


@pytest.fixture
def gaussian(schedule, gen):
    x0 = (MU + S * torch.randn(64, 3, 4, 4, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    return x0, GaussianEps(MU, S, schedule)


def test_predicted_x0_inverts_the_forward_process(schedule, gen):
    x0 = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    w = torch.randn(4, 3, 8, 8, generator=gen)
    a = schedule.alpha_bar_at(400).item()
    xt = a**0.5 * x0 + (1 - a) ** 0.5 * w
    assert torch.allclose(predict_x0(xt, w, a), x0, atol=1e-5)


def test_eta_zero_step_is_exactly_eq13(schedule, gen):
    x = torch.randn(2, 3, 4, 4, generator=gen)
    eps_model = lambda x, t: 0.5 * x + 0.01 * t[:, None, None, None]  # noqa: E731
    a_t, a_s = schedule.alpha_bar_at(500).item(), schedule.alpha_bar_at(450).item()
    e = eps_model(x, torch.full((2,), 500))
    expected = a_s**0.5 * (x - (1 - a_t) ** 0.5 * e) / a_t**0.5 + (1 - a_s) ** 0.5 * e
    out, x0 = ddim_step(eps_model, x, 500, 450, schedule, eta=0.0)
    assert torch.allclose(out, expected, atol=1e-6) and torch.allclose(x0, (x - (1 - a_t) ** 0.5 * e) / a_t**0.5)


def test_eta_one_sigma_is_the_ddpm_posterior_std(schedule):
    """With adjacent steps, eta = 1 gives sigma_t^2 = beta_tilde_t = (1 - a_{t-1}) / (1 - a_t) * beta_t (Eq. 5)."""
    a_t, a_s = schedule.alpha_bar_at(300).item(), schedule.alpha_bar_at(299).item()
    beta = schedule.betas[300].item()
    assert sigma(a_t, a_s, 1.0) ** 2 == pytest.approx((1 - a_s) / (1 - a_t) * beta, rel=1e-9)
    assert sigma(a_t, a_s, 0.0) == 0.0


def test_grids_walk_the_same_times_in_opposite_directions():
    assert generation_pairs(3, 300, 1000) == [(300, 150), (150, 0), (0, -1)]
    assert inversion_pairs(3, 300, 1000) == [(-1, 0), (0, 150), (150, 300)]


def test_inversion_follows_the_exact_ode_and_its_error_falls(gaussian, schedule):
    x0, eps = gaussian
    exact = exact_flow(x0, 500, MU, S, schedule)
    errors = [(ddim_invert(eps, x0, schedule, t0=500, S_for=n) - exact).abs().mean().item() for n in (10, 40, 160)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01


def test_round_trip_error_falls_first_order(gaussian, schedule):
    """DDIM is Euler's method on the ODE of Eq. 7: doubling S halves the reconstruction error."""
    x0, eps = gaussian
    steps = [10, 20, 40, 80]
    errors = [(reconstruct(eps, x0, schedule, t0=500, S_for=n, S_gen=n) - x0).abs().mean().item() for n in steps]
    orders = [math.log(e1 / e2, 2) for e1, e2 in zip(errors, errors[1:])]
    assert all(0.85 < p < 1.15 for p in orders), orders
    assert errors[-1] < 0.02


def test_generation_from_noise_reaches_the_data_distribution(schedule, gen):
    eps = GaussianEps(MU, S, schedule)
    x_T = torch.randn(4000, 1, 2, 2, generator=gen, dtype=torch.float64)
    x = ddim_generate(eps, x_T, schedule, t0=999, S_gen=200)
    assert x.mean().item() == pytest.approx(MU, abs=0.02)
    assert x.std().item() == pytest.approx(S, rel=0.03)


def test_stochastic_generation_is_seeded_and_reaches_the_data_distribution(schedule):
    eps = GaussianEps(MU, S, schedule)
    x_T = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = ddim_generate(eps, x_T, schedule, t0=999, S_gen=200, eta=1.0, generator=torch.Generator().manual_seed(2))
    b = ddim_generate(eps, x_T, schedule, t0=999, S_gen=200, eta=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert a.mean().item() == pytest.approx(MU, abs=0.02) and a.std().item() == pytest.approx(S, rel=0.05)


def test_batched_generation_equals_one_image_at_a_time(schedule, gen):
    eps = lambda x, t: torch.tanh(x) * (t[:, None, None, None] / 1000)  # noqa: E731
    x = torch.randn(5, 3, 4, 4, generator=gen)
    batched = ddim_generate(eps, x, schedule, t0=400, S_gen=8)
    single = torch.cat([ddim_generate(eps, x[i : i + 1], schedule, t0=400, S_gen=8) for i in range(5)])
    assert torch.allclose(batched, single, atol=1e-6)


def test_graph_is_kept_only_when_asked_and_checkpointing_gives_the_same_gradients(schedule, gen):
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    eps = lambda x, t: net(x)  # noqa: E731
    x = torch.randn(2, 3, 8, 8, generator=gen)
    assert not ddim_generate(eps, x, schedule, t0=300, S_gen=4).requires_grad
    grads = []
    for ckpt in (False, True):
        net.zero_grad()
        out = ddim_generate(eps, x, schedule, t0=300, S_gen=4, grad=True, checkpoint=ckpt)
        out.square().mean().backward()
        grads.append(net.weight.grad.clone())
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bad_inputs_are_clear_errors(schedule):
    eps = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ddim_invert(eps, torch.zeros(3, 8, 8), schedule, t0=300, S_for=4)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        ddim_invert(eps, torch.full((1, 3, 8, 8), 200.0), schedule, t0=300, S_for=4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ddim_invert(eps, torch.full((1, 3, 8, 8), 1.5), schedule, t0=300, S_for=4)
    with pytest.raises(ValueError, match="t0=1200 is out of range"):
        ddim_invert(eps, torch.zeros(1, 3, 8, 8), schedule, t0=1200, S_for=4)
    with pytest.raises(ValueError, match="number of steps"):
        ddim_generate(eps, torch.zeros(1, 3, 8, 8), schedule, t0=300, S_gen=0)
    with pytest.raises(ValueError, match="eta"):
        ddim_generate(eps, torch.zeros(1, 3, 8, 8), schedule, t0=300, S_gen=4, eta=-1)
    ddim_invert(
        eps, torch.linspace(-1, 1.02, 192).reshape(1, 3, 8, 8), schedule, t0=300, S_for=4
    )  # rounding past 1 is fine


def test_clipping_the_predicted_x0_keeps_sampling_from_noise_in_range(schedule, gen):
    """From t0 = 999, 1/sqrt(a_t) ~ 157 amplifies any error of eps; clip_x0 clamps f_theta to [-1, 1]."""
    poor = lambda x, t: 0.9 * x  # noqa: E731  (a poor noise predictor)
    x_T = torch.randn(8, 3, 4, 4, generator=gen)
    wild = ddim_generate(poor, x_T, schedule, t0=999, S_gen=10)
    tame = ddim_generate(poor, x_T, schedule, t0=999, S_gen=10, clip_x0=True)
    assert wild.abs().max() > 1.5 and tame.abs().max() <= 1.0 + 1e-6
