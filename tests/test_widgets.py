"""The chapters' controls: each explorer computes what the paper's algorithm computes, and a control recomputes
once per release, shows that it is working, and survives a bad value."""

import io

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from fakes import small_model
from PIL import Image

from dclip.ddim import ddim_generate, ddim_invert
from dclip.ddpm import q_sample
from dclip.editing import manipulate, to_pretrained_domain
from dclip.explorers import (
    CombinationExplorer,
    EditExplorer,
    EtaExplorer,
    NoisingExplorer,
    ReconstructionExplorer,
    StochasticEditExplorer,
    StrokeExplorer,
    SwitchExplorer,
)
from dclip.widgets import (
    combination_control,
    control,
    edit_t0_control,
    eta_control,
    noising_control,
    reconstruction_control,
    stochastic_edit_control,
    stroke_t0_control,
    switch_control,
)


@pytest.fixture(scope="module")
def tuned():
    return small_model(seed=7)


def _pixels(png: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(png)).convert("L"))).float()


def test_control_recomputes_once_per_release_and_replaces_its_figure():
    calls = []

    def draw(t: int):
        calls.append(t)
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.imshow(torch.full((4, 4), float(t)).numpy(), vmin=0, vmax=10, cmap="gray")
        return fig

    open_before = set(plt.get_fignums())
    c = control(draw, {"t": w.IntSlider(2, 0, 10)})
    first = c.image.value
    assert calls == [2] and c.redraws == 1 and first[:8] == b"\x89PNG\r\n\x1a\n"
    assert c.sliders["t"].continuous_update is False
    assert "t = 2: drawn in" in c.status.value
    c.sliders["t"].value = 9
    assert calls == [2, 9] and c.redraws == 2
    assert _pixels(c.image.value).mean() > _pixels(first).mean() + 50  # the brighter image replaced the dark one
    assert set(plt.get_fignums()) <= open_before  # its figures are closed: the notebook shows only the control


def test_control_says_it_is_working_while_it_draws():
    built: dict = {}
    seen = []

    def draw(t: int):
        if "control" in built:
            seen.append(built["control"].status.value)
        return plt.figure()

    built["control"] = c = control(draw, {"t": w.IntSlider(1, 0, 3)})
    c.sliders["t"].value = 3
    assert seen == ["<i>working: t = 3 ...</i>"] and c.status.value.startswith("t = 3: drawn in")


def test_control_shows_an_error_and_keeps_the_last_figure():
    def draw(t: int):
        if t == 5:
            raise ValueError("t0=5 is out of range")
        return plt.figure()

    c = control(draw, {"t": w.IntSlider(1, 0, 10)})
    before = c.image.value
    c.sliders["t"].value = 5
    assert "error" in c.status.value and "t0=5 is out of range" in c.status.value
    assert c.image.value == before and c.redraws == 1


def test_control_rejects_no_slider_and_non_sliders():
    with pytest.raises(ValueError, match="at least one slider"):
        control(lambda: plt.figure(), {})
    with pytest.raises(TypeError, match="is not a slider"):
        control(lambda b: plt.figure(), {"b": w.Button()})


def test_noising_explorer_is_eq1_with_one_noise_for_every_t(base, images, schedule):
    explorer = NoisingExplorer(schedule, images, seed=4)
    for t in (1, 400, 999):
        a = schedule.alpha_bar[t]
        assert torch.allclose(explorer(t), a.sqrt() * images + (1 - a).sqrt() * explorer.noise, atol=1e-6)
    assert torch.equal(explorer(300), q_sample(images, 300, schedule, noise=explorer.noise))
    ctl = noising_control(explorer, n_show=2)
    assert ctl.sliders["t"].max == schedule.T - 1 and ctl.redraws == 1


def test_reconstruction_explorer_inverts_once_per_t0_and_s_for(base, images):
    explorer = ReconstructionExplorer(base, images)
    rec, mae = explorer(300, 4, 3)
    x_t0 = ddim_invert(base, images, base.schedule, t0=300, S_for=4)
    expected = ddim_generate(base, x_t0, base.schedule, t0=300, S_gen=3).clamp(-1, 1)
    assert torch.allclose(rec, expected, atol=1e-6)
    assert mae == pytest.approx(((expected - images).abs() / 2).mean().item(), rel=1e-5)
    explorer(300, 4, 5)
    assert list(explorer._latents) == [(300, 4)]
    ctl = reconstruction_control(explorer, n_show=2)
    assert set(ctl.sliders) == {"t0", "S_for", "S_gen"} and ctl.redraws == 1
    assert ctl.sliders["S_for"].max == ctl.sliders["S_gen"].max == 200  # (6, 200) and (200, 6), as chapter 03 asks


def test_reconstruction_explorer_prepares_a_table_in_batches_equal_to_single_round_trips(base, images):
    explorer = ReconstructionExplorer(base, images)
    explorer.prepare([200, 300], [2, 4], [3])
    assert sorted(explorer._round_trips) == [(200, 2, 3), (200, 4, 3), (300, 2, 3), (300, 4, 3)]
    for t0, S_for in [(200, 2), (300, 4)]:
        x_t0 = ddim_invert(base, images, base.schedule, t0=t0, S_for=S_for)
        alone = ddim_generate(base, x_t0, base.schedule, t0=t0, S_gen=3).clamp(-1, 1)
        rec, mae = explorer(t0, S_for, 3)
        assert torch.allclose(rec, alone, atol=1e-5)
        assert mae == pytest.approx(((alone - images).abs() / 2).mean().item(), rel=1e-4)
    cached = explorer(300, 4, 3)
    assert explorer(300, 4, 3) is cached  # a revisited slider position costs nothing


def test_reconstruction_control_titles_the_mae_of_the_images_shown(base, images):
    explorer = ReconstructionExplorer(base, images)
    ctl = reconstruction_control(explorer, n_show=1)
    fig = ctl.draw(t0=300, S_for=4, S_gen=3)
    rec, mae_all = explorer(300, 4, 3)
    shown = ((rec[:1] - images[:1]).abs() / 2).mean().item()
    assert f"{shown:.4f}" != f"{mae_all:.4f}"  # the images differ, so the two means tell the titles apart
    assert fig._suptitle.get_text().endswith(f"MAE {shown:.4f}")
    plt.close(fig)


def test_edit_explorer_is_alg3_at_each_t0(base, tuned, images):
    explorer = EditExplorer(base, tuned, images, S_for=4, S_gen=3)
    e = explorer(300)
    assert torch.allclose(e.edit, manipulate(base, tuned, images, t0=300, S_for=4, S_gen=3).clamp(-1, 1), atol=1e-6)
    x_t0 = ddim_invert(base, images, base.schedule, t0=300, S_for=4)
    assert torch.allclose(
        e.reconstruction, ddim_generate(base, x_t0, base.schedule, t0=300, S_gen=3).clamp(-1, 1), atol=1e-6
    )
    assert e.mae == pytest.approx(((e.edit - images).abs() / 2).mean().item(), rel=1e-5)
    assert explorer(300) is e  # cached: moving back to a t0 costs nothing
    # a larger t0 lets the other model change the image more (the t0 trade-off)
    assert explorer(800).mae > explorer(100).mae
    ctl = edit_t0_control(explorer, t0=300)
    assert ctl.sliders["t0"].value == 300 and ctl.sliders["t0"].min == 100 and ctl.sliders["t0"].max == 900


def test_stroke_explorer_is_alg4s_first_part_with_a_fixed_seed(base, images):
    explorer = StrokeExplorer(base, images, S_gen=3, seed=2)
    expected = to_pretrained_domain(base, images, t0=500, S_gen=3, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(explorer(500), expected, atol=1e-6)
    assert torch.equal(explorer(500), explorer(500))
    near = lambda t0: (explorer(t0) - images).abs().mean().item()  # noqa: E731
    assert near(100) < near(900)  # small t0 keeps the strokes, large t0 forgets them
    assert stroke_t0_control(explorer, t0=200).redraws == 1


def test_switch_explorer_gamma_t_runs_first_model_then_second(base, tuned, images):
    x_t0 = ddim_invert(base, images, base.schedule, t0=300, S_for=4)
    explorer = SwitchExplorer(base, base, tuned, x_t0, 300, S_gen=3)
    only = lambda m: ddim_generate(m, x_t0, base.schedule, t0=300, S_gen=3).clamp(-1, 1)  # noqa: E731
    assert torch.allclose(explorer(0), only(base), atol=1e-6)
    assert torch.allclose(explorer(301), only(tuned), atol=1e-6)
    # the generation steps are t = 299, 199, 99: switching at 150 runs base at 299 and 199, tuned at 99
    g = explorer.gammas(150)
    assert [g(299), g(199), g(99)] == [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    mid = explorer(150)
    assert not torch.allclose(mid, only(base)) and not torch.allclose(mid, only(tuned))
    ctl = switch_control(explorer, names=("pretrained", "tuned"))
    assert ctl.sliders["t_switch"].max == 330 and ctl.redraws == 1


def test_combination_control_gives_the_pretrained_model_the_rest(base, tuned, images):
    x_t0 = ddim_invert(base, images, base.schedule, t0=300, S_for=4)
    explorer = CombinationExplorer(base, {"other": tuned}, x_t0, 300, S_gen=3)
    ctl = combination_control(explorer)
    ctl.sliders["other"].value = 1.0
    assert ctl.sliders["other"].value == 1.0 and ctl.redraws == 2 and "other = 1.00: drawn in" in ctl.status.value
    assert torch.allclose(
        explorer({"other": 1.0}), ddim_generate(tuned, x_t0, base.schedule, t0=300, S_gen=3).clamp(-1, 1)
    )


def test_stochastic_edit_explorer_eta_zero_is_deterministic_and_eta_one_follows_the_seed(base, tuned, images):
    x_t0 = ddim_invert(base, images, base.schedule, t0=300, S_for=4)
    explorer = StochasticEditExplorer(base, tuned, x_t0, 300, S_gen=3)
    deterministic = manipulate(base, tuned, None, t0=300, S_gen=3, x_t0=x_t0).clamp(-1, 1)
    assert torch.allclose(explorer(0.0, 0), deterministic, atol=1e-6)
    assert torch.equal(explorer(0.0, 0), explorer(0.0, 5))
    assert torch.equal(explorer(1.0, 3), explorer(1.0, 3))
    assert not torch.allclose(explorer(1.0, 3), explorer(1.0, 4))
    ctl = stochastic_edit_control(explorer)
    assert set(ctl.sliders) == {"eta", "seed"} and ctl.redraws == 1


def _level_control():
    """A control whose figure is one grey square of brightness t (and a second slider that only darkens)."""
    calls = []

    def draw(t: int, dim: float):
        calls.append((t, dim))
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.imshow(torch.full((4, 4), t * (1 - dim)).numpy(), vmin=0, vmax=10, cmap="gray")
        ax.axis("off")
        return fig

    return control(draw, {"t": w.IntSlider(2, 0, 10), "dim": w.FloatSlider(0.0, min=0.0, max=0.5)}), calls


def test_snapshot_tiles_one_labelled_panel_per_setting_and_keeps_the_sliders():
    c, calls = _level_control()
    open_before = set(plt.get_fignums())
    fig = c.snapshot([{"t": 0}, {"t": 5}, {"t": 10, "dim": 0.5}, {}], title="brightness")
    assert len(fig.axes) == 4
    labels = [ax.get_title(loc="left") for ax in fig.axes]
    assert labels == ["t = 0", "t = 5", "t = 10, dim = 0.50", "t = 2, dim = 0.00"]
    assert fig._suptitle.get_text() == "brightness"
    # settings missing a slider take its current value; the sliders themselves do not move
    assert calls[1:] == [(0, 0.0), (5, 0.0), (10, 0.5), (2, 0.0)]
    assert c.values() == {"t": 2, "dim": 0.0} and c.redraws == 1
    # each panel is the control's own figure at that setting: brightness grows with t (centre pixel, 0..1)
    panels = [ax.images[0].get_array() for ax in fig.axes]  # each panel: the control's PNG, RGBA in [0, 1]
    centre = [float(p[p.shape[0] // 2, p.shape[1] // 2, 0]) for p in panels]
    assert centre[0] < 0.05 and 0.4 < centre[1] < 0.6 and 0.4 < centre[2] < 0.6 and 0.15 < centre[3] < 0.25
    assert set(plt.get_fignums()) - open_before == {fig.number}  # the panels' own figures were closed
    plt.close(fig)


def test_snapshot_rejects_unknown_sliders_and_values_off_the_range():
    c, calls = _level_control()
    with pytest.raises(ValueError, match=r"no slider named \['t0'\]; the sliders are \['t', 'dim'\]"):
        c.snapshot([{"t": 3}, {"t0": 300}])
    with pytest.raises(ValueError, match=r"t = 11 is outside the slider's range \[0, 10\]"):
        c.snapshot([{"t": 11}])
    with pytest.raises(ValueError, match=r"dim = -0.1 is outside the slider's range"):
        c.snapshot([{"dim": -0.1}])
    with pytest.raises(ValueError, match="at least one setting"):
        c.snapshot([])
    assert len(calls) == 1  # nothing was drawn for a bad list: every setting is checked first


def test_eta_explorer_is_eq5_with_sigma_eta_and_a_seeded_z(base, images):
    x_t = ddim_invert(base, images, base.schedule, t0=300, S_for=4)
    explorer = EtaExplorer(base, x_t, 300, S=3)
    ddim = ddim_generate(base, x_t, base.schedule, t0=300, S_gen=3).clamp(-1, 1)
    assert torch.allclose(explorer(0.0), ddim, atol=1e-6) and torch.equal(explorer(0.0, 7), explorer(0.0, 0))
    g = torch.Generator().manual_seed(2)
    expected = ddim_generate(base, x_t, base.schedule, t0=300, S_gen=3, eta=1.0, generator=g).clamp(-1, 1)
    assert torch.allclose(explorer(1.0, 2), expected, atol=1e-6)
    assert not torch.allclose(explorer(1.0, 2), explorer(1.0, 3))
    assert explorer(0.3 + 1e-12, 1) is explorer(0.3, 1)  # a slider's 0.30000000000000004 hits the cache
    assert explorer.distance(0.0) == 0.0
    near, far = explorer.distance(0.2, 0), explorer.distance(1.0, 0)
    assert 0 < near < far  # more fresh noise, further from the DDIM images
    ctl = eta_control(explorer, sources=images)
    assert set(ctl.sliders) == {"eta", "seed"} and ctl.redraws == 1 and ctl.sliders["eta"].max == 1.0
    fig = ctl.snapshot([{"eta": 0.0}, {"eta": 1.0, "seed": 2}])
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["eta = 0.00", "eta = 1.00, seed = 2"]
    plt.close(fig)
