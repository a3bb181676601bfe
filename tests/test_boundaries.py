"""Bad input at the public API is a clear error (or the right result), found before any expensive work: a NaN, a
wrong shape or type, a batch that does not agree, a file that cannot be read or would be overwritten."""

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import FakeCLIP
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import dclip
import dclip.finetune
import dclip.store
from dclip.ddim import check_image, ddim_generate, ddim_invert, nonnegative_images_ok
from dclip.editing import combine, manipulate, translate
from dclip.finetune import FinetuneConfig, Latents, finetune
from dclip.images import load_image, save_images, to_pil
from dclip.noise_combination import mix_noise_predictors
from dclip.schedule import time_sequence
from dclip.store import precompute_latents


def _nan_pixel(images: torch.Tensor) -> torch.Tensor:
    bad = images.clone()
    bad[1, 2, 3, 4] = float("nan")
    return bad


@pytest.fixture(scope="module")
def latents(base, images) -> Latents:
    return precompute_latents(base, images, t0=300, S_for=2, cache_dir=None, progress=False)


# --- non-finite values -------------------------------------------------------------------------------------


def test_one_nan_pixel_is_a_clear_error_everywhere_images_enter(base, images):
    bad = _nan_pixel(images)
    calls = [
        lambda: check_image(bad),
        lambda: manipulate(base, base, bad, t0=300, S_gen=2),
        lambda: precompute_latents(base, bad, t0=300, S_for=2, cache_dir=None),
        lambda: translate(base, base, bad, t0=300, S_gen=2),
        lambda: manipulate(base, base, None, t0=300, S_gen=2, x_t0=bad),
        lambda: ddim_generate(base, bad, base.schedule, t0=300, S_gen=2),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="holds 1 non-finite values"):
            call()


def test_nan_settings_are_clear_errors(base, latents):
    with pytest.raises(ValueError, match="eta=nan must be a finite number"):
        manipulate(base, base, None, t0=300, S_gen=2, x_t0=latents.x_t0, eta=float("nan"))
    with pytest.raises(ValueError, match="gamma_i must be finite"):
        combine(base, [base, base], [float("nan"), 1.0], None, t0=300, S_gen=2, x_t0=latents.x_t0)
    mixed = mix_noise_predictors([base, base], lambda t: [float("nan"), 1.0])
    with pytest.raises(ValueError, match="gamma_i must be finite"):
        ddim_generate(mixed, latents.x_t0, base.schedule, t0=300, S_gen=2)
    for name in ("lambda_l1", "lambda_id", "lambda_clip", "lr"):
        with pytest.raises(ValueError, match=f"{name}=nan must be a finite number"):
            FinetuneConfig("a", "b", t0=300, **{name: float("nan")})


# --- shapes and batch sizes ----------------------------------------------------------------------------------


def test_images_and_latents_must_agree_in_number(base, images, latents):
    with pytest.raises(ValueError, match="got 4 images and 2 latents"):
        manipulate(base, base, images, t0=300, S_gen=2, x_t0=latents.x_t0[:2])
    both = manipulate(base, base, images, t0=300, S_gen=2, x_t0=latents.x_t0)
    assert torch.equal(both, manipulate(base, base, None, t0=300, S_gen=2, x_t0=latents.x_t0))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 3, 8, 8), r"x_t0 must be \(N, 3, 16, 16\) for this model, got \(2, 3, 8, 8\)"),
        ((2, 1, 16, 16), r"got \(2, 1, 16, 16\)"),
        ((2, 16, 16, 3), r"channels last\? use x.permute"),
        ((0, 3, 16, 16), "empty batch"),
    ],
)
def test_latents_of_another_shape_are_a_clear_error(base, shape, message):
    with pytest.raises(ValueError, match=message):
        manipulate(base, base, None, t0=300, S_gen=2, x_t0=torch.zeros(shape))


def test_finetuning_checks_its_latents_against_the_model(base, images):
    small = Latents(images[:, :, :8, :8], torch.zeros(4, 3, 8, 8), 300, 2)
    with pytest.raises(ValueError, match=r"takes \(N, 3, 16, 16\)"):
        finetune(base, FakeCLIP(), small, FinetuneConfig("a", "b", t0=300), progress=False)
    with pytest.raises(ValueError, match="lambda_id=0.5 needs an identity term"):
        finetune(base, FakeCLIP(), Latents(images, images, 300, 2), FinetuneConfig("a", "b", 300, lambda_id=0.5))


def test_latents_must_pair_each_image_with_its_latent(images):
    with pytest.raises(ValueError, match=r"Latents.x0 \(4, 3, 16, 16\) and Latents.x_t0 \(2, 3, 16, 16\)"):
        Latents(images, images[:2], 300, 40)
    with pytest.raises(ValueError, match="Latents.t0=True must be an integer"):
        Latents(images, images, True, 40)


def test_an_empty_batch_is_a_clear_error(base):
    with pytest.raises(ValueError, match=r"image is an empty batch \(0, 3, 16, 16\)"):
        precompute_latents(base, torch.zeros(0, 3, 16, 16), t0=300, S_for=2, cache_dir=None)


# --- types and counts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "t0, message",
    [(True, "t0=True must be an integer, not a bool"), (torch.tensor(500), r"not a Tensor \(use int\(x\)")],
)
def test_t0_must_be_a_plain_integer(base, images, t0, message):
    with pytest.raises(ValueError, match=message):
        ddim_invert(base, images, base.schedule, t0=t0, S_for=2)
    with pytest.raises(ValueError, match=message):
        precompute_latents(base, images, t0=t0, S_for=2, cache_dir=None)


def test_more_steps_than_distinct_times_are_lowered_with_a_warning(schedule):
    with pytest.warns(UserWarning, match="S=2000 steps over \\[0, t0=500\\] would repeat times: using the 501"):
        grid = time_sequence(2000, 500, 1000)
    assert grid == time_sequence(501, 500, 1000) == list(range(501))
    eps = lambda x, t: 0.1 * x  # noqa: E731
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="would repeat times"):
        many = ddim_generate(eps, x, schedule, t0=500, S_gen=2000)
    assert torch.equal(many, ddim_generate(eps, x, schedule, t0=500, S_gen=501))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at or below t0 + 1
        time_sequence(501, 500, 1000)
    with pytest.warns(UserWarning, match="S_gen=2000 > t0 \\+ 1 would repeat times: using S_gen=501"):
        assert FinetuneConfig("a", "b", t0=500, S_gen=2000) == FinetuneConfig("a", "b", t0=500, S_gen=501)


@pytest.mark.parametrize(
    "settings_, message",
    [
        ({"epochs": 2.5}, "epochs=2.5 must be an integer"),
        ({"batch_size": True}, "batch_size=True must be an integer"),
        ({"clip_views": -3}, "clip_views=-3 must be >= 0"),
        ({"templates": ()}, "templates must be a non-empty tuple"),
        ({"templates": ("a photo",)}, "needs exactly one '{}'"),
        ({"templates": "a photo of {}"}, "templates must be a non-empty tuple"),
        ({"t0": 500.0}, "t0=500.0 must be an integer"),
        ({"lr": 0.0}, "must be > 0"),
        ({"lambda_l1": -1.0}, "lambda_l1=-1.0 must be a finite number >= 0"),
    ],
)
def test_finetune_settings_are_checked_when_made(settings_, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig("angry", "face", **{"t0": 500, **settings_})


def test_texts_must_be_non_empty_strings():
    with pytest.raises(ValueError, match="target must be a non-empty text, got None"):
        FinetuneConfig(None, "face", t0=500)


def test_prompts_past_the_clip_context_are_warned():
    clip = dclip.load_clip("tinyclip", device="cpu")
    with pytest.warns(UserWarning, match=r"is \d+ tokens long; tinyclip reads only the first 32"):
        clip.encode_text(["a face " * 40])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip.encode_text(["an angry face"])


def test_finetuning_leaves_the_global_rng_alone_and_is_seeded(base, latents):
    cfg = FinetuneConfig("a", "b", t0=300, S_gen=2, clip_views=2, batch_size=2)
    clip = FakeCLIP()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    one = finetune(base, clip, latents, cfg, progress=False).history
    assert torch.equal(torch.get_rng_state(), state)
    two = finetune(base, clip, latents, cfg, progress=False).history
    other = finetune(base, clip, latents, dataclasses.replace(cfg, seed=1), progress=False).history
    assert one == two and one != other


# --- images in and out ---------------------------------------------------------------------------------------


def test_a_16_bit_grey_png_keeps_its_range(tmp_path):
    grey = np.full((8, 8), 32768, np.uint16)  # mid-grey
    Image.fromarray(grey).save(tmp_path / "g16.png")
    x = load_image(tmp_path / "g16.png", 8)
    assert x.shape == (1, 3, 8, 8) and x.abs().max() < 0.01
    assert load_image(grey, 8).abs().max() < 0.01  # a uint16 array too


def test_a_float_tiff_in_0_1_is_not_black(tmp_path):
    Image.fromarray(np.full((8, 8), 0.75, np.float32)).save(tmp_path / "f.tif")
    assert load_image(tmp_path / "f.tif", 8).mean().item() == pytest.approx(0.5, abs=0.01)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[:8] = (255, 0, 0)  # red on top, blue below
    arr[8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated by 180 degrees
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif, quality=95)
    x = load_image(tmp_path / "r.jpg", 16)
    assert x[0, 2, :4].mean() > 0.8 and x[0, 0, :4].mean() < -0.8  # upright: blue on top


def test_a_palette_image_loads_its_colours(tmp_path):
    im = Image.fromarray(np.full((8, 8, 3), (255, 0, 0), np.uint8)).convert("P")
    im.save(tmp_path / "p.png")
    x = load_image(tmp_path / "p.png", 8)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


def test_folders_skip_sub_folders_and_name_a_bad_file(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "x.png").mkdir()
    assert load_image(tmp_path, 8).shape == (1, 3, 8, 8)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cannot read image {tmp_path / 'b.png'}"):
        load_image(tmp_path, 8)


def test_load_image_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no images given"):
        load_image([], 8)
    with pytest.raises(ValueError, match="size=32.0 must be an integer"):
        load_image(np.zeros((8, 8), np.uint8), 32.0)
    with pytest.raises(ValueError, match="non-finite"):
        load_image(np.full((8, 8), np.nan, np.float32), 8)


def test_save_images_never_overwrites_unless_asked(tmp_path):
    first, second = torch.full((2, 3, 4, 4), -0.5), torch.full((1, 3, 4, 4), 0.5)
    paths = save_images(first, tmp_path)
    with pytest.raises(FileExistsError, match=f"{paths[0]} exists.*overwrite=True"):
        save_images(second, tmp_path)
    assert torch.equal(load_image(paths[0], 4), load_image(to_pil(first[0])[0], 4))  # kept
    save_images(second, tmp_path, overwrite=True)
    assert load_image(paths[0], 4).mean() > 0 and load_image(paths[1], 4).mean() < 0


@pytest.mark.parametrize(
    "x, kwargs, message",
    [
        (torch.zeros(1, 3, 4, 4), {"prefix": "../escape"}, "without path separators"),
        (torch.full((1, 3, 4, 4), float("nan")), {}, "non-finite"),
        (torch.full((1, 3, 4, 4), 200.0), {}, r"looks like \[0, 255\]"),
        (torch.zeros(1, 1, 4, 4), {}, r"\(N, 3, H, W\)"),
        (torch.zeros(4, 4), {}, r"\(N, C, H, W\)"),
    ],
)
def test_save_images_checks_what_it_writes(tmp_path, x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        save_images(x, tmp_path / "out", **kwargs)
    assert not (tmp_path / "escape_000.png").exists() and not (tmp_path / "out").exists()


def test_the_tiny_world_resumes_only_plain_data(tmp_path):
    from dclip.tinyworld.train import _Resumable

    ckpt = _Resumable(tmp_path)
    ckpt.save({"step": 3, "gen": torch.Generator().get_state(), "losses": [1.0]})
    assert ckpt.load()["step"] == 3
    torch.save({"step": 3, "code": Path}, ckpt.path)  # a pickled class: would run code on load
    with pytest.raises(ValueError, match=f"cannot resume from {ckpt.path.resolve()}"):
        ckpt.load()


# --- property-based: the image and tensor boundary --------------------------------------------------------------

values = st.one_of(
    st.floats(-1, 1, width=32), st.floats(width=32, allow_nan=True, allow_infinity=True), st.just(float("nan"))
)


@settings(max_examples=60, deadline=None)
@given(st.lists(values, min_size=1, max_size=12), st.integers(1, 3))
def test_check_image_accepts_exactly_finite_batches_in_range(pixels, n):
    photo = (pixels * 192)[:192]  # every value, tiled over a photo-like (3, 8, 8) image
    x = torch.tensor(photo * n, dtype=torch.float32).reshape(n, 3, 8, 8)
    in_range = all(np.isfinite(pixels)) and all(-1.05 <= p <= 1.05 for p in pixels)
    looks_unit = in_range and min(pixels) >= 0 and max(pixels) > 0  # no dark pixel: a [0, 1] image
    for allowed in (False, True):
        try:
            if allowed:
                with nonnegative_images_ok():
                    check_image(x)
            else:
                check_image(x)
            accepted = True
        except ValueError as e:
            accepted = False
            assert "non-finite" in str(e) or "must have values in [-1, 1]" in str(e) or "looks like a [0, 1]" in str(e)
        assert accepted == (in_range and (allowed or not looks_unit))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_images_survive_saving_and_loading_to_within_one_level(tmp_path_factory, n, size, seed):
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    paths = save_images(x, tmp_path_factory.mktemp("out"))
    back = load_image(paths, size)
    assert back.shape == x.shape and (back - x).abs().max() <= 1 / 127.5 + 1e-6


# --- round two (#26): no silent wrong result, no lost work ------------------------------------------------------


def _count_calls(monkeypatch, module, name: str) -> list:
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_transparent_pixels_show_the_stated_white_background_not_the_hidden_colours(tmp_path):
    hidden_red = np.zeros((6, 6, 4), np.uint8)
    hidden_red[..., 0] = 255  # red under alpha 0: invisible in every viewer
    Image.fromarray(hidden_red, "RGBA").save(tmp_path / "rgba.png")
    palette = Image.new("P", (6, 6), 0)
    palette.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    half = hidden_red.copy()
    half[..., 3] = 128  # half-transparent red on white: (255, 127, 127)
    for src in (tmp_path / "rgba.png", tmp_path / "palette.png"):
        assert torch.equal(load_image(src, 6), torch.ones(1, 3, 6, 6)), src.name
    x = load_image(Image.fromarray(half, "RGBA"), 6)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([1.0, -0.0039, -0.0039]), atol=0.01)


def test_a_unit_range_image_is_refused_where_minus_one_to_one_is_expected_unless_the_user_says_so(base, images):
    unit = (images + 1) / 2  # the same photos in [0, 1]
    for call in (
        lambda: manipulate(base, base, unit, t0=300, S_gen=2),
        lambda: precompute_latents(base, unit, t0=300, S_for=2, cache_dir=None),
        lambda: ddim_invert(base, unit, base.schedule, t0=300, S_for=2),
    ):
        with pytest.raises(
            ValueError, match=r"looks like a \[0, 1\] image where \[-1, 1\] is expected: use x \* 2 - 1"
        ):
            call()
    with nonnegative_images_ok():
        assert ddim_invert(base, unit, base.schedule, t0=300, S_for=2).shape == unit.shape
    check_image(torch.zeros(1, 3, 8, 8))  # mid-grey everywhere is a valid [-1, 1] image
    check_image(torch.rand(9, 1, 4, 4))  # a toy's few-pixel tensors are not photos: no range guess


def test_an_unstable_edit_near_T_with_few_steps_is_warned_and_a_normal_one_is_not(base, images):
    from dclip.editing import UnstableEditWarning

    unstable = r"Alg. 3 at t0=999 \(T=1000\) with S_for=2, S_gen=2 gave values in .* far"
    with pytest.warns(UnstableEditWarning, match=unstable):
        wild = manipulate(base, base, images, t0=999, S_for=2, S_gen=2)
    assert wild.abs().max() > 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tame = manipulate(base, base, images, t0=300, S_for=10, S_gen=10)
    assert tame.abs().max() <= 3


def test_noise_combination_weights_outside_zero_one_are_labelled_as_extrapolation(base, latents):
    from dclip.explorers import CombinationExplorer
    from dclip.noise_combination import ExtrapolationWarning
    from dclip.widgets import combination_control

    x_t0 = latents.x_t0
    with pytest.warns(ExtrapolationWarning, match=r"\[1.5, -0.5\] lie outside \[0, 1\]: an extrapolation"):
        combine(base, [base, base], [1.5, -0.5], None, t0=300, S_gen=2, x_t0=x_t0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        combine(base, [base, base], lambda t: [2.0, -1.0] if t > 100 else [0.5, 0.5], None, t0=300, S_gen=3, x_t0=x_t0)
    assert [str(w.message)[:40] for w in seen if w.category is ExtrapolationWarning] == [
        "noise-combination weights [2.0, -1.0] at"
    ], "gamma(t): one warning per mixed predictor, naming the step"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        combine(base, [base, base], [0.3, 0.7], None, t0=300, S_gen=2, x_t0=x_t0)  # the paper's kind: no word
    ctl = combination_control(CombinationExplorer(base, {"a": base, "b": base}, x_t0[:1], 300, S_gen=2))
    with pytest.warns(ExtrapolationWarning):
        ctl.sliders["a"].value, ctl.sliders["b"].value = 0.9, 0.9
    assert "error" not in ctl.status.value and ctl.redraws == 3


def test_names_or_seeds_where_weights_models_or_generators_belong_are_clear_errors(base, images, latents):
    with pytest.raises(ValueError, match="recipe names go to the models, not the weights"):
        combine(base, [base, base], ["angry", "red hair"], None, t0=300, x_t0=latents.x_t0)
    with pytest.raises(ValueError, match="must be a dclip DiffusionModel"):
        combine(base, ["angry", "red hair"], [0.5, 0.5], None, t0=300, x_t0=latents.x_t0)
    with pytest.raises(ValueError, match="give models .*, not names"):
        mix_noise_predictors(["angry", base], [0.5, 0.5])
    for call in (
        lambda: manipulate(base, base, images, t0=300, S_gen=2, eta=0.5, generator=1),
        lambda: dclip.q_sample(images, 100, base.schedule, generator=1),
        lambda: dclip.editing.to_pretrained_domain(base, images, t0=300, S_gen=2, generator=1),
    ):
        with pytest.raises(ValueError, match=r"generator=1 must be a torch.Generator .*manual_seed\(seed\)"):
            call()


def test_a_negative_eta_is_refused_by_the_single_step_too(base, images):
    with pytest.raises(ValueError, match="eta=-1 must be a finite number >= 0"):
        dclip.ddim_step(base, images, 300, 200, base.schedule, eta=-1)


@pytest.fixture(scope="module")
def tiny():
    return dclip.world("tiny")


@pytest.mark.parametrize("n", [0, -2, 2.5, True, "4"])
def test_image_counts_that_are_not_positive_integers_are_clear_errors(tiny, n):
    for call in (
        lambda: tiny.test_images(n),
        lambda: tiny.training_images(n),
        lambda: tiny.unseen_domain_images(n),
        lambda: tiny.stroke_images(n),
        lambda: tiny.counterfactuals(n),
    ):
        with pytest.raises(ValueError, match=r"must be (an integer|>= 1).*: the number of images to make"):
            call()
    assert tiny.training_images().shape[0] == tiny.settings.n_train  # None: the world's N


def test_the_pipeline_never_replaces_a_zero_by_its_default(tiny, monkeypatch):
    from dclip.pipeline import DiffusionCLIP

    pipe = DiffusionCLIP(tiny)
    inversions = _count_calls(monkeypatch, dclip.pipeline, "precompute_latents")
    with pytest.raises(ValueError, match="S_for=0 must be >= 1"):
        pipe.latents(tiny.test_images(2), 500, S_for=0)
    with pytest.raises(ValueError, match="n_train=0 must be >= 1"):
        pipe.finetuned("angry", n_train=0)
    assert inversions == []


def test_evaluate_refuses_non_finite_or_out_of_range_edits_and_clamps_only_a_small_overshoot(tiny):
    source = tiny.test_images(2)
    nan = source.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="edited holds 1 non-finite values"):
        tiny.evaluate(source, nan, "angry")
    with pytest.raises(ValueError, match=r"edited must have values in \[-1, 1\].*\[0, 255\]"):
        tiny.evaluate(source, (source + 1) * 127.5, "angry")
    with pytest.raises(ValueError, match=r"looks like a \[0, 1\] image"):
        tiny.evaluate(source, (source + 1) / 2, "angry")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        overshoot = tiny.evaluate(source, source * 1.2, None)  # DDIM's few steps overshoot a little: clamped
    assert overshoot["others_kept"] == 1.0
    with pytest.warns(UserWarning, match=r"edited has values in \[-5, 5\].*clamped to \[-1, 1\] for the metrics"):
        tiny.evaluate(source, source.sign() * 5, None)


def test_internal_keys_of_the_world_table_are_not_world_names(monkeypatch):
    from dclip.worlds import world_name, world_names

    assert "_about" not in world_names() and "tiny" in world_names()
    with pytest.raises(ValueError, match="unknown world '_about'"):
        dclip.world("_about")
    monkeypatch.setenv("DCLIP_WORLD", "_about")
    with pytest.raises(ValueError, match=r"unknown world '_about' \(DCLIP_WORLD='_about'\)"):
        world_name()


def test_a_t0_control_refuses_a_start_value_its_slider_would_move(base, images):
    from dclip.explorers import EditExplorer
    from dclip.widgets import edit_t0_control

    explorer = EditExplorer(base, base, images[:1], S_for=2, S_gen=2)
    for t0 in (950, 50):
        with pytest.raises(ValueError, match=rf"t0={t0} is outside the control's range \[100, 900\]"):
            edit_t0_control(explorer, t0=t0)
    with pytest.raises(ValueError, match="t0=1200 is out of range"):
        edit_t0_control(explorer, t0=1200)
    assert edit_t0_control(explorer, t0=300).sliders["t0"].value == 300


def test_save_images_into_a_path_that_is_a_file_is_a_clear_error(images, tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(NotADirectoryError, match="out is a file, not a folder"):
        save_images(images, tmp_path / "out" / "sub")
    assert (tmp_path / "out").read_text() == "mine"


def test_the_cache_is_resolved_at_each_call_so_a_variable_set_after_import_is_used(base, images, tmp_path, monkeypatch):
    monkeypatch.setenv("DCLIP_CACHE", str(tmp_path / "first"))
    precompute_latents(base, images, t0=300, S_for=2, progress=False)
    monkeypatch.setenv("DCLIP_CACHE", str(tmp_path / "second"))  # as on Colab, after `import dclip`
    precompute_latents(base, images, t0=300, S_for=2, progress=False)
    assert len(list((tmp_path / "first" / "latents").glob("*.safetensors"))) == 1
    assert len(list((tmp_path / "second" / "latents").glob("*.safetensors"))) == 1


def test_a_cache_variable_naming_a_file_is_named_before_any_inversion(base, images, tmp_path, monkeypatch):
    (tmp_path / "cachefile").write_text("")
    monkeypatch.setenv("DCLIP_CACHE", str(tmp_path / "cachefile"))
    inversions = _count_calls(monkeypatch, dclip.finetune, "ddim_invert")
    with pytest.raises(ValueError, match=r"DCLIP_CACHE='.*cachefile' is a file, not a folder"):
        precompute_latents(base, images, t0=300, S_for=2, progress=False)
    assert inversions == []
    from dclip import cache

    with pytest.raises(SystemExit):
        cache.main(["list"])


def test_an_unwritable_cache_is_found_before_the_inversion(base, images, tmp_path, monkeypatch):
    import errno

    from dclip import cache

    monkeypatch.setenv("DCLIP_CACHE", str(tmp_path / "cache"))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.tempfile, "mkstemp", full)
    inversions = _count_calls(monkeypatch, dclip.finetune, "ddim_invert")
    with pytest.raises(OSError, match=r"cannot write to the cache folder .*latents .*set DCLIP_CACHE to a writable"):
        precompute_latents(base, images, t0=300, S_for=2, progress=False)
    assert inversions == []


def test_results_whose_write_fails_are_returned_and_kept_not_thrown_away(base, images, tmp_path, monkeypatch):
    import errno

    from fakes import FakeCLIP

    from dclip.cache import CacheWriteWarning

    monkeypatch.setenv("DCLIP_CACHE", str(tmp_path / "cache"))

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dclip.store, "save_tensors_atomic", disk_full)
    inversions = _count_calls(monkeypatch, dclip.finetune, "ddim_invert")
    with pytest.warns(CacheWriteWarning, match="No space left on device.*kept in memory.*pass cache_dir="):
        first = precompute_latents(base, images, t0=300, S_for=2, progress=False)
    again = precompute_latents(base, images, t0=300, S_for=2, progress=False)
    assert again is first and len(inversions) == 1, "kept: not computed again"

    clip = FakeCLIP()
    clip.cache_name = "fake-clip-0"
    cfg = FinetuneConfig("angry", "face", t0=300, S_gen=2, epochs=1)
    trainings = _count_calls(monkeypatch, dclip.store, "finetune")
    monkeypatch.setattr(dclip.store, "save_finetuned", disk_full)
    with pytest.warns(CacheWriteWarning, match=r"save it elsewhere with dclip.store.save_finetuned\(dclip.cache.kept"):
        tuned = dclip.store.finetune_or_load(base, clip, first, cfg, progress=False)
    assert dclip.store.finetune_or_load(base, clip, first, cfg, progress=False) is tuned and len(trainings) == 1


def test_latents_written_by_another_package_version_are_computed_again(base, images, tmp_path, monkeypatch):
    from dclip.cache import StaleCacheWarning

    monkeypatch.setattr(dclip.version, "package_version", lambda: "0.0.1")
    precompute_latents(base, images, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    monkeypatch.undo()
    inversions = _count_calls(monkeypatch, dclip.finetune, "ddim_invert")
    with pytest.warns(StaleCacheWarning, match=r"holds dclip='0.0.1' where '0.1.0' was asked"):
        precompute_latents(base, images, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    assert len(inversions) == 1


@pytest.mark.parametrize("age", ["-5", "nan", "inf", "soon"])
def test_the_cache_command_refuses_ages_that_are_not_finite_and_non_negative(age, tmp_path, monkeypatch, capsys):
    from dclip import cache

    monkeypatch.setenv("DCLIP_CACHE", str(tmp_path))
    entry = cache.cache_path("latents", "x.safetensors")
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"0" * 10)
    with pytest.raises(SystemExit):
        cache.main(["clear", "--older-than", age])
    assert "number of days" in capsys.readouterr().err and entry.exists()
    with pytest.raises(ValueError, match="older_than_days=-5 must be a finite number of days >= 0"):
        cache.clear(older_than_days=-5)


# --- the time grid and the signatures (issue #27) ---------------------------------------------------------------


def test_latents_carry_t0_and_S_for_into_manipulate_and_combine(base, latents):
    carried = manipulate(base, base, x_t0=latents, S_gen=2)
    assert torch.equal(carried, manipulate(base, base, t0=300, S_gen=2, x_t0=latents.x_t0))
    assert torch.equal(carried, manipulate(base, base, t0=300, S_for=2, S_gen=2, x_t0=latents))
    assert torch.equal(
        combine(base, [base, base], [0.5, 0.5], x_t0=latents, S_gen=2),
        combine(base, [base, base], [0.5, 0.5], t0=300, S_gen=2, x_t0=latents.x_t0),
    )
    with pytest.raises(ValueError, match="t0=400 differs from the latents' t0=300"):
        manipulate(base, base, t0=400, S_gen=2, x_t0=latents)
    with pytest.raises(ValueError, match="S_for=40 differs from the latents' S_for=2"):
        combine(base, [base, base], [0.5, 0.5], t0=300, S_for=40, S_gen=2, x_t0=latents)
    with pytest.raises(ValueError, match="give t0"):
        manipulate(base, base, x_t0=latents.x_t0, S_gen=2)


def test_ddim_takes_t0_and_steps_or_a_grid_built_once(base, latents):
    grid = base.schedule.grid(t0=300, S=2)
    by_grid = ddim_generate(base, latents.x_t0, base.schedule, grid=grid)
    assert torch.equal(by_grid, ddim_generate(base, latents.x_t0, base.schedule, t0=300, S_gen=2))
    with pytest.raises(ValueError, match="not both"):
        ddim_generate(base, latents.x_t0, base.schedule, t0=300, S_gen=2, grid=grid)
    with pytest.raises(ValueError, match=r"grid \(T=50\) of this schedule \(T=1000\)"):
        ddim_invert(base, latents.x0, base.schedule, grid=dclip.TimeGrid(t0=30, S=2, T=50))
    with pytest.raises(TypeError, match="give t0 and S_gen, or a grid"):
        ddim_generate(base, latents.x_t0, base.schedule, t0=300)
    with pytest.raises(TypeError, match="positional"):
        ddim_generate(base, latents.x_t0, base.schedule, 300, 2)


def _public_callables(module) -> dict[str, object]:
    """The public functions of ``module`` and the public methods (``__init__`` and ``__call__`` included) of its
    classes, by dotted name; a dataclass's generated ``__init__`` is a parameter object's and is left out."""
    import dataclasses
    import inspect

    out = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            out[name] = obj
        elif inspect.isclass(obj):
            for attr, fn in vars(obj).items():
                public = not attr.startswith("_") or attr == "__call__"
                generated = attr == "__init__" and dataclasses.is_dataclass(obj)
                if inspect.isfunction(fn) and (public or attr == "__init__") and not generated:
                    out[f"{name}.{attr}"] = fn
    return out


def test_no_public_function_of_the_package_takes_more_than_six_positional_parameters():
    import importlib
    import inspect
    import pkgutil

    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    counts = {}
    for info in pkgutil.walk_packages(dclip.__path__, "dclip."):
        module = importlib.import_module(info.name)
        for name, fn in _public_callables(module).items():
            params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]
            counts[f"{info.name}.{name}"] = sum(p.kind in positional for p in params)
    assert len(counts) > 300 and "dclip.editing.manipulate" in counts and "dclip.widgets.Control.__init__" in counts
    assert max(counts.values()) <= 6, {k: v for k, v in counts.items() if v > 6}


def test_manipulate_checks_t0_once_per_grid(base, images, monkeypatch):
    import dclip.schedule

    checks = []
    check_t0 = dclip.schedule._check_t0
    monkeypatch.setattr(dclip.schedule, "_check_t0", lambda t0, T: checks.append(t0) or check_t0(t0, T))
    manipulate(base, base, images, t0=300, S_for=2, S_gen=2)
    assert checks == [300, 300]  # the generation grid (S_gen) and the inversion grid (S_for), each built once
