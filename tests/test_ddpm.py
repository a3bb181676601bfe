import pytest
import torch

from dclip.ddpm import ddpm_loss, ddpm_sample, q_sample
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
