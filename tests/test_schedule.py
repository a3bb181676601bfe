import numpy as np
import pytest
import torch

from dclip.schedule import (
    PAPER_BETA_END,
    PAPER_BETA_START,
    PAPER_STEPS,
    PAPER_T,
    Schedule,
    TimeGrid,
    linear_betas,
    time_sequence,
)


def test_linear_betas_match_ddpm_endpoints_in_float64():
    b = linear_betas()
    assert (PAPER_T, PAPER_BETA_START, PAPER_BETA_END, tuple(PAPER_STEPS)) == (1000, 1e-4, 0.02, (40, 6))
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b[1:] - b[:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))


def test_alpha_bar_is_the_cumulative_product_with_one_at_minus_one(schedule):
    betas = np.linspace(1e-4, 0.02, 1000)
    expected = np.cumprod(1 - betas)
    assert np.allclose(schedule.alpha_bar.numpy(), expected, rtol=1e-12)
    assert schedule.alpha_bar_at(-1).item() == 1.0
    assert schedule.alpha_bar_at(0).item() == pytest.approx(1 - 1e-4)
    assert schedule.alpha_bar_at(999).item() == pytest.approx(4.036e-5, rel=1e-3)  # the DDPM value
    assert torch.equal(
        schedule.alpha_bar_at(torch.tensor([-1, 10])), torch.tensor([1.0, expected[10]], dtype=torch.float64)
    )


def test_alpha_bar_rejects_times_outside_the_schedule(schedule):
    with pytest.raises(ValueError, match="out of range"):
        schedule.alpha_bar_at(1000)
    with pytest.raises(ValueError, match="out of range"):
        schedule.alpha_bar_at(-2)


def test_time_sequence_is_the_authors_grid():
    assert time_sequence(6, 300, PAPER_T) == [0, 60, 120, 180, 240, 300]
    assert time_sequence(2, 500, PAPER_T) == [0, 500]
    assert time_sequence(1, 400, PAPER_T) == [400]
    seq = time_sequence(40, 601, PAPER_T)
    assert seq[0] == 0 and seq[-1] == 601 and len(seq) == 40 and all(b > a for a, b in zip(seq, seq[1:]))


@pytest.mark.parametrize("t0", [0, 1000, 1200, -5, 300.5])
def test_t0_out_of_range_is_a_clear_error(t0):
    with pytest.raises(ValueError, match=r"t0=.* (out of range|must be an integer).*T=1000"):
        time_sequence(6, t0, PAPER_T)


@pytest.mark.parametrize("S", [0, -1, 2.5])
def test_fewer_than_one_step_is_a_clear_error(S):
    with pytest.raises(ValueError, match="number of steps"):
        time_sequence(S, 300, PAPER_T)


def test_schedule_rejects_bad_betas():
    with pytest.raises(ValueError):
        Schedule.linear(T=1)
    with pytest.raises(ValueError):
        Schedule.linear(beta_start=0.1, beta_end=0.01)


def test_time_grid_holds_the_grid_and_its_steps(schedule):
    grid = schedule.grid(t0=300, S=3)
    assert (grid.t0, grid.S, grid.T) == (300, 3, 1000) and grid.times == [0, 150, 300]
    assert grid.generation_pairs == [(300, 150), (150, 0), (0, -1)]
    assert grid.inversion_pairs == [(-1, 0), (0, 150), (150, 300)]
    assert grid.with_steps(6).times == time_sequence(6, 300, PAPER_T) == [0, 60, 120, 180, 240, 300]
    with pytest.raises(AttributeError):
        grid.t0 = 400  # frozen: checked once, never changed


@pytest.mark.parametrize("t0", [0, 1000, True, torch.tensor(300)])
def test_time_grid_with_a_bad_t0_is_a_clear_error_when_built(schedule, t0):
    with pytest.raises(ValueError, match=r"t0=.* (out of range|must be an integer).*T=1000"):
        schedule.grid(t0=t0, S=6)
    with pytest.raises(ValueError, match=r"t0=.*T=50"):
        TimeGrid(t0=50, S=6, T=50)


def test_time_sequence_and_pairs_need_the_schedules_T():
    from dclip.ddim import generation_pairs, inversion_pairs

    for grid_of in (time_sequence, generation_pairs, inversion_pairs):
        with pytest.raises(TypeError, match="T"):
            grid_of(6, 300)
    assert time_sequence(3, 30, 50) == [0, 15, 30]
