import pytest
import torch

from dclip.ddpm import ddpm_loss, ddpm_sample, ddpm_step, q_sample
from dclip.toy import GaussianEps


def test_forward_process_has_the_statistics_of_eq1(schedule, gen):
    x0 = torch.full((20000, 1, 2, 2), 0.7)
    for t in (0, 250, 999):
        a = schedule.alpha_bar_at(t).item()
        xt = q_sample(x0, t, schedule, generator=gen)
        assert xt.mean().item() == pytest.approx(a**0.5 * 0.7, abs=0.01)
        assert xt.std().item() == pytest.approx((1 - a) ** 0.5, rel=0.02)


def test_forward_process_takes_one_time_per_image(schedule):
    x0 = torch.zeros(3, 1, 2, 2)
    noise = torch.ones_like(x0)
    xt = q_sample(x0, torch.tensor([0, 500, 999]), schedule, noise)
    expected = (1 - schedule.alpha_bar_at(torch.tensor([0, 500, 999]))).sqrt().float()
    assert torch.allclose(xt[:, 0, 0, 0], expected)


def test_forward_process_rejects_mismatched_shapes(schedule):
    with pytest.raises(ValueError, match="same shape"):
        q_sample(torch.zeros(2, 3, 4, 4), 10, schedule, noise=torch.zeros(3, 3, 4, 4))
    with pytest.raises(ValueError, match="one time per image"):
        q_sample(torch.zeros(2, 3, 4, 4), torch.tensor([1, 2, 3]), schedule)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        q_sample(torch.zeros(3, 4, 4), 10, schedule)


def test_ddpm_loss_of_the_exact_predictor_is_the_posterior_variance(schedule, gen):
    """Eq. 2 with the optimal eps: E||w - E[w|x_t]||^2 = E_t[1 - (1-a)/(a s^2 + 1 - a)] per dimension."""
    mu, s = 0.2, 0.5
    x0 = mu + s * torch.randn(4000, 1, 4, 4, generator=gen, dtype=torch.float64)
    eps = GaussianEps(mu, s, schedule)
    loss = sum(ddpm_loss(eps, x0, schedule, gen).item() for _ in range(5)) / 5
    a = schedule.alpha_bar
    expected = (1 - (1 - a) / (a * s**2 + 1 - a)).mean().item()
    assert loss == pytest.approx(expected, rel=0.03)
    assert ddpm_loss(lambda x, t: torch.zeros_like(x), x0, schedule, gen).item() == pytest.approx(1.0, rel=0.03)


def test_ancestral_sampling_reaches_the_data_distribution(schedule, gen):
    mu, s = -0.3, 0.4
    x = ddpm_sample(GaussianEps(mu, s, schedule), (2000, 1, 2, 2), schedule, gen)
    assert x.mean().item() == pytest.approx(mu, abs=0.02)
    assert x.std().item() == pytest.approx(s, rel=0.04)


def test_clipping_x0_changes_nothing_while_the_predicted_x0_stays_in_range(schedule):
    """With x0 inside [-1, 1] the posterior mean of the clipped step is Eq. 3's mean, noise for noise."""
    x_t = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for t in (999, 500, 10, 0):
        a = float(schedule.alpha_bar_at(t))
        inside = torch.rand(x_t.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64) * 1.8 - 0.9
        eps_model = lambda x, tt, x0=inside, a=a: (x - a**0.5 * x0) / (1 - a) ** 0.5  # noqa: E731
        plain = ddpm_step(eps_model, x_t, t, schedule, torch.Generator().manual_seed(1))
        clipped = ddpm_step(eps_model, x_t, t, schedule, torch.Generator().manual_seed(1), clip_x0=True)
        assert torch.allclose(plain, clipped, atol=1e-10), (t, (plain - clipped).abs().max())


def test_ancestral_step_is_eq3_and_clipping_bounds_its_x0(schedule):
    """Eq. 3 written out independently; with an x0 far outside [-1, 1] the clipped step uses x0 clamped."""
    x_t = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t, beta, a = 300, float(schedule.betas[300]), float(schedule.alpha_bar[300])
    a_prev = float(schedule.alpha_bar[299])
    eps = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 3
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7)).double()  # drawn as ddpm_step does
    plain = ddpm_step(lambda x, tt: eps, x_t, t, schedule, torch.Generator().manual_seed(7))
    eq3 = (x_t - beta / (1 - a) ** 0.5 * eps) / (1 - beta) ** 0.5 + beta**0.5 * z
    assert torch.allclose(plain, eq3, atol=1e-12)
    x0 = ((x_t - (1 - a) ** 0.5 * eps) / a**0.5).clamp(-1, 1)
    posterior = a_prev**0.5 * beta / (1 - a) * x0 + (1 - beta) ** 0.5 * (1 - a_prev) / (1 - a) * x_t + beta**0.5 * z
    clipped = ddpm_step(lambda x, tt: eps, x_t, t, schedule, torch.Generator().manual_seed(7), clip_x0=True)
    assert torch.allclose(clipped, posterior, atol=1e-12)
    assert not torch.allclose(clipped, plain, atol=1e-3)


def test_ddpm_sample_reports_every_steps_predicted_x0_and_keeps_its_noise_with_clipping(schedule):
    seen = []
    eps_model = GaussianEps(0.1, 0.3, schedule)
    x = ddpm_sample(
        eps_model,
        (2, 1, 2, 2),
        schedule,
        torch.Generator().manual_seed(0),
        on_step=lambda t, x0: seen.append((t, x0.shape)),
    )
    assert [t for t, _ in seen] == list(range(999, -1, -1)) and all(s == (2, 1, 2, 2) for _, s in seen)
    y = ddpm_sample(eps_model, (2, 1, 2, 2), schedule, torch.Generator().manual_seed(0), clip_x0=True)
    assert torch.allclose(x, y, atol=0.05)  # the exact predictor's x0 rarely leaves [-1, 1]: the same chain
