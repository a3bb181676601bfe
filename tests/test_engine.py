"""The DiffusionCLIP engine on small models: losses (Eq. 8-11, 30), fine-tuning (Alg. 1, 2), editing (Alg. 3-5)."""

import copy
import dataclasses
import math

import pytest
import torch
from fakes import FakeCLIP, small_model
from torch.nn import functional as F

from dclip.baselines import clip_guided_sampling, latent_optimization, sdedit
from dclip.clip import load_clip
from dclip.ddim import ddim_generate, ddim_invert, ddim_step, generation_pairs, reconstruct
from dclip.editing import combine, manipulate, to_pretrained_domain, transition, translate
from dclip.finetune import FinetuneConfig, finetune, objective
from dclip.hashing import fingerprint
from dclip.losses import (
    directional_clip_loss,
    directional_similarity,
    global_clip_loss,
    identity_loss,
    text_direction,
)
from dclip.precision import autocast_dtype
from dclip.store import load_finetuned, precompute_latents, save_finetuned
from dclip.tinyworld.identity import lowpass_identity

# --- losses -----------------------------------------------------------------------------------------------


def _moved_along(x_ref: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``x_ref`` with ``delta`` added where the linear FakeCLIP reads its 8 features: ``Delta I = delta``."""
    moved = x_ref.clone()
    moved[:, 0, 0, :8] += delta
    return moved


def test_directional_similarity_is_the_cosine_of_eq30():
    clip = FakeCLIP(linear=True)
    x_ref = torch.rand(2, 3, 4, 8)
    delta_t = torch.randn(8)
    along, against = _moved_along(x_ref, 0.5 * delta_t), _moved_along(x_ref, -0.5 * delta_t)
    assert directional_similarity(clip, along, x_ref, delta_t).item() == pytest.approx(1.0, abs=1e-5)
    assert directional_similarity(clip, against, x_ref, delta_t).item() == pytest.approx(-1.0, abs=1e-5)
    assert directional_clip_loss(clip, against, x_ref, delta_t).item() == pytest.approx(2.0, abs=1e-5)
    assert directional_clip_loss(clip, along, x_ref, delta_t, reduction="none").shape == (2,)


def test_the_log_form_of_the_directional_loss_is_the_authors_codes():
    clip = FakeCLIP(linear=True)
    x_ref = torch.rand(2, 3, 4, 8)
    delta_t = torch.randn(8)
    along = _moved_along(x_ref, 0.5 * delta_t)
    across = _moved_along(x_ref, torch.linalg.svd(torch.stack([delta_t, torch.randn(8)]))[2][-1])  # cos = 0
    assert directional_similarity(clip, across, x_ref, delta_t).item() == pytest.approx(0.0, abs=1e-5)
    assert directional_clip_loss(clip, along, x_ref, delta_t, form="log").item() == pytest.approx(0.0, abs=1e-5)
    loss = directional_clip_loss(clip, across, x_ref, delta_t, form="log")
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)  # -log((1 + 0) / 2)
    with pytest.raises(ValueError, match="unknown form 'square'"):
        directional_clip_loss(clip, along, x_ref, delta_t, form="square")


def test_global_clip_loss_is_the_cosine_distance_of_eq8():
    clip = FakeCLIP()
    x = torch.rand(3, 3, 8, 8)
    expected = 1 - clip.encode_image(x) @ clip.encode_text(["zombie"])[0]
    assert torch.allclose(global_clip_loss(clip, x, "zombie", reduction="none"), expected)


def test_text_direction_averages_templates_and_rejects_empty_text():
    clip = FakeCLIP()
    d = text_direction(clip, "angry face", "face", templates=("{}", "a photo of a {}"))
    tar = F.normalize(clip.encode_text(["angry face", "a photo of a angry face"]).mean(0), dim=0)
    ref = F.normalize(clip.encode_text(["face", "a photo of a face"]).mean(0), dim=0)
    assert torch.allclose(d, tar - ref)
    with pytest.raises(ValueError, match="target text must be a non-empty"):
        text_direction(clip, "  ", "face")


def test_identity_loss_is_eq11():
    x0 = torch.zeros(2, 3, 8, 8)
    x = torch.full((2, 3, 8, 8), 0.5)
    assert identity_loss(x, x0, 0.3).item() == pytest.approx(0.15)
    assert identity_loss(x, x0, 0.3, 2.0, face=lambda a, b: torch.ones(2)).item() == pytest.approx(2.15)
    with pytest.raises(ValueError, match="needs an identity term"):
        identity_loss(x, x0, 0.3, 0.3)
    with pytest.raises(ValueError, match="same shape"):
        identity_loss(x[:1], x0, 0.3)


def test_lowpass_identity_ignores_fine_detail_but_not_layout():
    x0 = torch.zeros(1, 3, 32, 32)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 0.4 - 0.2  # averages to 0 in 2x2 blocks
    assert lowpass_identity(x0 + checker, x0).item() == pytest.approx(0.0, abs=1e-7)
    shifted = x0.clone()
    shifted[..., :16] = 0.5
    assert lowpass_identity(shifted, x0).item() > 0.1


# --- fine-tuning -----------------------------------------------------------------------------------------


def test_latents_are_cached_and_reused(base, images, tmp_path, monkeypatch):
    lat = precompute_latents(base, images, t0=300, S_for=4, cache_dir=tmp_path, progress=False)
    assert lat.x_t0.shape == images.shape and len(list(tmp_path.iterdir())) == 1
    import dclip.finetune

    monkeypatch.setattr(dclip.finetune, "ddim_invert", lambda *a, **k: pytest.fail("inverted again"))
    again = precompute_latents(base, images, t0=300, S_for=4, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.x_t0, lat.x_t0)


def test_latents_reject_images_of_another_size(base):
    with pytest.raises(ValueError, match=r"takes \(N, 3, 16, 16\)"):
        precompute_latents(base, torch.zeros(1, 3, 32, 32), t0=300, S_for=4, cache_dir=None)


def _objective_on(model, lat, cfg, clip):
    with torch.no_grad():
        x = ddim_generate(model, lat.x_t0, model.schedule, t0=cfg.t0, S_gen=cfg.S_gen)
        return objective(clip, x, lat.x0, text_direction(clip, cfg.target, cfg.reference), cfg, None)[0].item()


@pytest.mark.parametrize("algorithm", [1, 2])
def test_finetuning_lowers_eq10_and_leaves_the_pretrained_model_alone(base, images, algorithm):
    clip = FakeCLIP()
    lat = precompute_latents(base, images, t0=300, S_for=4, cache_dir=None, progress=False)
    cfg = FinetuneConfig("tanned face", "face", t0=300, S_gen=3, lr=1e-3, epochs=3, batch_size=2, algorithm=algorithm)
    before = fingerprint(base)
    result = finetune(base, clip, lat, cfg, progress=False)
    assert fingerprint(base) == before and not any(p.requires_grad for p in base.parameters())
    assert len(result.history) == 3 * 2 * (1 if algorithm == 1 else 3)
    assert _objective_on(result.model, lat, cfg, clip) < _objective_on(base, lat, cfg, clip) - 0.02


def test_finetuning_is_seeded_and_checkpointing_changes_nothing(base, images):
    clip = FakeCLIP()
    lat = precompute_latents(base, images, t0=300, S_for=4, cache_dir=None, progress=False)
    runs = [
        finetune(
            base,
            clip,
            lat,
            FinetuneConfig("a", "b", t0=300, S_gen=3, lr=1e-3, epochs=1, batch_size=2, checkpoint=c),
            progress=False,
        )
        for c in (True, True, False)
    ]
    assert fingerprint(runs[0].model) == fingerprint(runs[1].model)
    for p, q in zip(runs[0].model.parameters(), runs[2].model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def _first_adam_step(base, lat, cfg, clip) -> list[torch.Tensor]:
    """The first Adam step of :func:`finetune` divided by its lr: ``-g / (|g| + 1e-8)`` for the gradient g."""
    tuned = finetune(base, clip, lat, cfg, progress=False).model
    return [(q - p) / cfg.lr for p, q in zip(base.parameters(), tuned.parameters())]


def test_without_the_recurrent_gradient_each_eps_gets_only_its_ddim_coefficient(base, images):
    """In y = x / sqrt(a), p = sqrt(1/a - 1) (Eq. 7) a DDIM step is y' = y + (p' - p) eps, so with each step's input
    detached the gradient of L(x0_hat) is sum_s (p'_s - p_s) <dL/dx0_hat, d eps_s / d theta>. Adam's first step
    is -lr g / (|g| + 1e-8): it shows the gradient finetune used."""
    clip, s = FakeCLIP(), base.schedule
    lat = precompute_latents(base, images[:2], t0=300, S_for=4, cache_dir=None, progress=False)
    cfg = FinetuneConfig("tanned face", "face", t0=300, S_gen=3, lr=1e-4, batch_size=2, recurrent_gradient=False)
    pairs = generation_pairs(cfg.S_gen, cfg.t0, s.T)
    states, x = [], lat.x_t0
    with torch.no_grad():
        for t, t_next in pairs:
            states.append(x)
            x = ddim_step(base, x, t, t_next, s)[0]
    x0_hat = x.requires_grad_(True)
    loss = objective(clip, x0_hat, lat.x0, text_direction(clip, cfg.target, cfg.reference), cfg, None)[0]
    (g,) = torch.autograd.grad(loss, x0_hat)
    p = lambda t: (1 / s.alpha_bar_at(t) - 1).sqrt().item()
    model = copy.deepcopy(base).requires_grad_(True)
    first_order = sum(
        (p(t_next) - p(t)) * (model(x_t, torch.full((2,), t)) * g).sum() for x_t, (t, t_next) in zip(states, pairs)
    )
    grads = torch.autograd.grad(first_order, list(model.parameters()))
    detached, full = (
        _first_adam_step(base, lat, cfg, clip),
        _first_adam_step(base, lat, dataclasses.replace(cfg, recurrent_gradient=True), clip),
    )
    checked = differ = 0
    for step, step_full, grad in zip(detached, full, grads):
        big = grad.abs() > 1e-5
        assert torch.allclose(step[big], -grad[big].sign(), atol=0.02)
        checked += int(big.sum())
        differ += int((step_full[big].sign() != step[big].sign()).sum())
    assert checked > 10_000 and differ > 0.05 * checked  # the recurrent path changes many gradient signs


def test_learning_rate_grows_by_gamma_every_n_iterations(base, images):
    lat = precompute_latents(base, images, t0=300, S_for=2, cache_dir=None, progress=False)
    cfg = FinetuneConfig("a", "b", t0=300, S_gen=2, lr=1e-5, lr_gamma=1.2, lr_every=2, epochs=3, batch_size=2)
    lrs = [h["lr"] for h in finetune(base, FakeCLIP(), lat, cfg, progress=False).history]
    assert lrs == pytest.approx([1e-5, 1e-5, 1.2e-5, 1.2e-5, 1.44e-5, 1.44e-5])
    # Alg. 2 takes S_gen optimizer steps per batch; the schedule still counts batches (iterations)
    cfg2 = FinetuneConfig("a", "b", t0=300, S_gen=2, lr=1e-5, lr_every=2, epochs=2, batch_size=2, algorithm=2)
    lrs2 = [h["lr"] for h in finetune(base, FakeCLIP(), lat, cfg2, progress=False).history]
    assert lrs2 == pytest.approx([1e-5] * 4 + [1.2e-5] * 4)


def test_callback_sees_every_step(base, images):
    lat = precompute_latents(base, images, t0=300, S_for=2, cache_dir=None, progress=False)
    seen = []
    finetune(
        base,
        FakeCLIP(),
        lat,
        FinetuneConfig("a", "b", t0=300, S_gen=2, epochs=1, batch_size=2),
        callback=lambda i, entry, model: seen.append((i, entry["loss"])),
        progress=False,
    )
    assert [i for i, _ in seen] == [1, 2]


def test_save_load_and_resume(base, images, tmp_path):
    lat = precompute_latents(base, images, t0=300, S_for=2, cache_dir=None, progress=False)
    cfg = FinetuneConfig("angry face", "face", t0=300, S_gen=2, lr=1e-3, epochs=1, batch_size=2)
    result = finetune(base, FakeCLIP(), lat, cfg, progress=False)
    save_finetuned(result, tmp_path / "angry")
    loaded, loaded_cfg = load_finetuned(tmp_path / "angry.safetensors", base)
    assert fingerprint(loaded) == fingerprint(result.model) and loaded_cfg == cfg
    resumed = finetune(base, FakeCLIP(), lat, cfg, progress=False, init=loaded)
    assert resumed.base_fingerprint == fingerprint(base) and fingerprint(resumed.model) != fingerprint(loaded)
    with pytest.raises(ValueError, match="was fine-tuned from 'small-0'"):
        load_finetuned(tmp_path / "angry", small_model(seed=1))


def test_the_global_clip_loss_option_trains_with_eq8_and_keeps_the_default_key(base, images):
    from dclip.store import finetune_key

    clip = FakeCLIP()
    lat = precompute_latents(base, images, t0=300, S_for=4, cache_dir=None, progress=False)
    cfg = FinetuneConfig("tanned face", "face", t0=300, S_gen=3, lr=1e-3, epochs=2, batch_size=2)
    glob = dataclasses.replace(cfg, clip_loss="global")
    with torch.no_grad():
        x = ddim_generate(base, lat.x_t0, base.schedule, t0=300, S_gen=3)
        d_t = text_direction(clip, cfg.target, cfg.reference)
        loss, terms = objective(clip, x, lat.x0, d_t, glob, None)
        eq8 = global_clip_loss(clip, x, "tanned face") + identity_loss(x, lat.x0, 0.3, 0.0, None)
    assert loss.item() == pytest.approx(eq8.item(), rel=1e-6)
    assert terms["direction"] == pytest.approx(global_clip_loss(clip, x, "tanned face").item(), rel=1e-6)
    assert objective(clip, x, lat.x0, d_t, cfg, None)[0].item() != pytest.approx(loss.item())  # Eq. 9 by default
    # trained with Eq. 8, the global loss falls; the default's repr and cache key are those without the option
    result = finetune(base, clip, lat, glob, progress=False)
    assert _objective_on(result.model, lat, glob, clip) < _objective_on(base, lat, glob, clip) - 0.02
    assert "clip_loss" not in repr(cfg) and repr(glob).endswith(", clip_loss='global')")
    assert finetune_key(base, clip, lat, cfg) != finetune_key(base, clip, lat, glob)
    plain = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "clip_loss"}
    import hashlib
    import json

    from dclip import __version__
    from dclip.hashing import fingerprint as fp
    from dclip.hashing import tensor_checksum

    parts = {
        "base": fp(base),
        "clip": clip.cache_name,
        "latents": [lat.t0, lat.S_for, tensor_checksum({"x0": lat.x0, "x_t0": lat.x_t0})],
        "config": plain,
        "identity": "unused",
        "dclip": __version__,
    }
    before = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert finetune_key(base, clip, lat, cfg) == before  # the caches stored before the option are still found
    with pytest.raises(ValueError, match="clip_loss='local'"):
        FinetuneConfig("a", "b", t0=300, clip_loss="local")


def test_bad_settings_are_clear_errors(base, images):
    lat = precompute_latents(base, images, t0=300, S_for=2, cache_dir=None, progress=False)
    with pytest.raises(ValueError, match="t0=300 but the config asks t0=400"):
        finetune(base, FakeCLIP(), lat, FinetuneConfig("a", "b", t0=400), progress=False)
    with pytest.raises(ValueError, match="algorithm=3"):
        FinetuneConfig("a", "b", t0=300, algorithm=3)
    with pytest.raises(ValueError, match="non-empty"):
        FinetuneConfig("", "face", t0=300)
    with pytest.raises(ValueError, match="precision='fp8'"):
        FinetuneConfig("a", "b", t0=300, precision="fp8")
    with pytest.raises(ValueError, match="direction_form='square'"):
        FinetuneConfig("a", "b", t0=300, direction_form="square")
    with pytest.raises(ValueError, match="ablation of Alg. 1"):
        FinetuneConfig("a", "b", t0=300, algorithm=2, recurrent_gradient=False)
    assert autocast_dtype("auto", torch.device("cpu")) == torch.float32  # mixed precision is CUDA-only


def test_config_from_a_recipe():
    from dclip.recipes import get_recipe

    cfg = FinetuneConfig.from_recipe(get_recipe("celeba-hq", "angry"), epochs=2)
    assert (cfg.target, cfg.reference, cfg.t0, cfg.lambda_l1, cfg.lambda_id, cfg.epochs) == (
        "angry face",
        "face",
        500,
        0.3,
        0.3,
        2,
    )


# --- editing ---------------------------------------------------------------------------------------------


def test_manipulation_with_the_pretrained_model_is_the_reconstruction(base, images):
    with torch.no_grad():
        assert torch.equal(
            manipulate(base, base, images, t0=300, S_for=4, S_gen=3),
            reconstruct(base, images, base.schedule, t0=300, S_for=4, S_gen=3),
        )


def test_transition_spans_reconstruction_to_edit(base, images):
    tuned = small_model(seed=1)
    lat = precompute_latents(base, images, t0=300, S_for=4, cache_dir=None, progress=False)
    with torch.no_grad():
        plain = manipulate(base, base, None, t0=300, S_gen=3, x_t0=lat.x_t0)
        edit = manipulate(base, tuned, None, t0=300, S_gen=3, x_t0=lat.x_t0)
        assert torch.equal(transition(base, tuned, 0.0, lat.x_t0, t0=300, S_gen=3), plain)
        assert torch.allclose(transition(base, tuned, 1.0, lat.x_t0, t0=300, S_gen=3), edit, atol=1e-6)
        half = transition(base, tuned, 0.5, lat.x_t0, t0=300, S_gen=3)
    assert (half - plain).abs().mean() < (edit - plain).abs().mean()


def _grid(S: int, t0: int) -> list[int]:
    """Sec. 3.3's time grid, written out: ``tau_i = floor(t0 (i - 1) / (S - 1))``, i = 1..S."""
    return [t0 * i // (S - 1) for i in range(S)]


def _ddim_by_hand(eps_i, gammas, x: torch.Tensor, times: list[int], schedule) -> torch.Tensor:
    """Deterministic DDIM (Eq. 12/13) along ``times`` with the combined step of Eq. 14 written per model:
    ``x_s = sum_i gamma_i(t) [sqrt(a_s) f_i(x_t, t) + sqrt(1 - a_s) eps_i(x_t, t)]``, ``f_i = (x_t - sqrt(1 - a_t)
    eps_i) / sqrt(a_t)``; the step out of the clean image (t = -1, a = 1) asks the models at t = 0."""
    for t, s in zip(times, times[1:]):
        a_t, a_s = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(s))
        t_in = torch.full((x.shape[0],), max(t, 0))
        steps = []
        for g, m in zip(gammas(t), eps_i):
            e = m(x, t_in)
            steps.append(g * (a_s**0.5 * (x - (1 - a_t) ** 0.5 * e) / a_t**0.5 + (1 - a_s) ** 0.5 * e))
        x = sum(steps)
    return x


def test_multi_attribute_combination_is_the_weighted_sum_of_each_models_step(base, images):
    """Alg. 5 from given latents: every generation step is the gamma-weighted sum of the steps each fine-tuned
    model would take (Eq. 14), with weights that change along the way; weights (1, 0) are the first model's edit."""
    tuned = [small_model(1), small_model(2)]
    a = float(base.schedule.alpha_bar_at(100))  # latents of the images at t0 = 100 (Eq. 1)
    x_t0 = a**0.5 * images + (1 - a) ** 0.5 * torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    gammas = lambda t: [0.7, 0.3] if t > 50 else [0.2, 0.8]  # noqa: E731
    times = [*reversed(_grid(3, 100)), -1]  # 100 -> 50 -> 0 -> -1: S_gen = 3 steps
    with torch.no_grad():
        out = combine(base, tuned, gammas=gammas, images=None, t0=100, S_gen=3, x_t0=x_t0)
        expected = _ddim_by_hand(tuned, gammas, x_t0, times, base.schedule)
        first = combine(base, tuned, gammas=[1.0, 0.0], images=None, t0=100, S_gen=3, x_t0=x_t0)
        alone = manipulate(base, tuned[0], None, t0=100, S_gen=3, x_t0=x_t0)
        second = combine(base, tuned, gammas=[0.0, 1.0], images=None, t0=100, S_gen=3, x_t0=x_t0)
    assert torch.allclose(out, expected, atol=1e-5), (out - expected).abs().max()
    assert torch.equal(first, alone)
    assert (out - first).abs().max() > 1e-3 and (out - second).abs().max() > 1e-3  # both models count
    with pytest.raises(ValueError, match="sum to 1"):
        combine(base, tuned, gammas=[0.5, 0.7], images=images, t0=100, S_for=4, S_gen=3)


def test_stochastic_manipulation_is_seeded_and_varied(base, images):
    lat = precompute_latents(base, images, t0=300, S_for=4, cache_dir=None, progress=False)
    run = lambda s: manipulate(
        base,
        base,
        None,
        t0=300,
        S_gen=3,
        x_t0=lat.x_t0,
        eta=1.0,  # noqa: E731
        generator=torch.Generator().manual_seed(s),
    )
    with torch.no_grad():
        assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_translation_is_ddpm_forward_and_ddim_reverse_k_times_then_the_manipulation(base, images):
    """Alg. 4 composed from the primitives: K_DDPM rounds of x_t0 = sqrt(a_t0) x + sqrt(1 - a_t0) w (Eq. 1, w from
    the seeded generator) and 40 DDIM steps back with the pretrained model, clamped to [-1, 1]; then Alg. 3:
    invert with the pretrained model (S_for steps), regenerate with the fine-tuned one (S_gen steps)."""
    tuned, alone = small_model(1), lambda t: [1.0]
    settings = dict(t0=300, S_for=4, S_gen=3, t0_ddpm=200, k_ddpm=2)
    with torch.no_grad():
        x_prime, edited = translate(base, tuned, images, **settings, generator=torch.Generator().manual_seed(0))
        g, x = torch.Generator().manual_seed(0), images
        a = float(base.schedule.alpha_bar_at(200))
        for _ in range(2):
            w = torch.randn(images.shape, generator=g)
            x_t0 = a**0.5 * x + (1 - a) ** 0.5 * w
            x = _ddim_by_hand([base], alone, x_t0, [*reversed(_grid(40, 200)), -1], base.schedule).clamp(-1, 1)
        latents = _ddim_by_hand([base], alone, x, [-1, *_grid(4, 300)], base.schedule)
        expected = _ddim_by_hand([tuned], alone, latents, [*reversed(_grid(3, 300)), -1], base.schedule)
    assert torch.allclose(x_prime, x, atol=1e-5), (x_prime - x).abs().max()
    assert torch.allclose(edited, expected, atol=1e-4), (edited - expected).abs().max()
    assert (x_prime - images).abs().mean() > 0.05  # the rounds moved the images
    with pytest.raises(ValueError, match="k_ddpm"):
        to_pretrained_domain(base, images, t0=200, k_ddpm=0)


def test_editing_rejects_images_of_another_size(base):
    with pytest.raises(ValueError, match=r"takes \(N, 3, 16, 16\)"):
        manipulate(base, base, torch.zeros(1, 3, 32, 32), t0=300)


def test_cpu_tensors_follow_models_on_another_device(base, images):
    """Latents are cached on the CPU, and a notebook's images may be there too; editing with models on a GPU
    moves them there. The meta device stands in for the GPU (it runs every op on shapes only)."""
    meta = copy.deepcopy(base).to("meta")
    clip = load_clip("tinyclip", device="meta")  # the real wrapper, which resizes any image to its input
    x_t0 = precompute_latents(base, images, t0=300, S_for=2, cache_dir=None, progress=False).x_t0
    d = text_direction(clip, "a", "b")
    outputs = [
        ddim_generate(meta, x_t0, meta.schedule, t0=300, S_gen=2),
        ddim_invert(meta, images, meta.schedule, t0=300, S_for=2),
        manipulate(meta, meta, None, t0=300, S_gen=2, x_t0=x_t0),
        combine(meta, [meta, meta], [0.5, 0.5], None, t0=300, S_gen=2, x_t0=x_t0),
        sdedit(meta, images, t0=300, S_gen=2),
        clip_guided_sampling(meta, clip, images, x_t0, d, t0=300, S_gen=2),
        latent_optimization(meta, clip, images, x_t0, d, t0=300, S_gen=2, steps=1),
    ]
    assert all(x.device.type == "meta" and x.shape == images.shape for x in outputs)
    assert clip.encode_image(images).device.type == "meta"


# --- cost of the algorithms -------------------------------------------------------------------------------


def test_activation_memory_counts_what_alg1_keeps_and_alg2_and_checkpointing_do_not(base):
    from dclip.finetune import Latents
    from dclip.profiling import measure

    clip = FakeCLIP()
    x0 = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = Latents(x0, torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)), 500, 40)

    def cost(**kw):
        cfg = FinetuneConfig("a sketch", "a photo", t0=500, S_gen=6, lr=1e-4, **kw)
        return measure(lambda: finetune(base, clip, latents, cfg, progress=False)).activation_bytes

    alg1, alg1_ckpt, alg2 = cost(checkpoint=False), cost(checkpoint=True), cost(algorithm=2)
    # Alg. 1 keeps every one of the 6 steps' activations; Alg. 2 one step's; checkpointing only step inputs.
    assert 4 < alg1 / alg2 < 8
    assert alg1_ckpt < alg2 < alg1


def test_augmented_views_transform_both_images_alike():
    from dclip.losses import augment_pairs

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    g, r = augment_pairs(x, x.clone(), views=5, generator=torch.Generator().manual_seed(1))
    assert g.shape == (10, 3, 8, 8) and torch.equal(g, r)  # the same shift and flip for the pair
    assert not torch.equal(g[:2], g[2:4]) or not torch.equal(g[2:4], g[4:6])  # views differ
    # a directional loss over views is still 0 for an edit that moves exactly along Delta T
    clip = FakeCLIP(linear=True)
    x_ref = torch.zeros(1, 3, 4, 8)
    x_gen = x_ref.clone()
    x_gen[:, 0] = 1.0  # every pixel of channel 0 moves by +1: E_I changes by (1, ..., 1) whatever the view
    d = torch.ones(8)
    views = augment_pairs(x_gen, x_ref, views=3, shift=1)
    assert directional_clip_loss(clip, *views, d).item() == pytest.approx(0.0, abs=1e-6)


def test_finetuning_works_when_called_under_no_grad(base, images):
    lat = precompute_latents(base, images, t0=300, S_for=2, cache_dir=None, progress=False)
    cfg = FinetuneConfig("a", "b", t0=300, S_gen=2, lr=1e-3, epochs=1, batch_size=2)
    with torch.no_grad():
        result = finetune(base, FakeCLIP(), lat, cfg, progress=False)
    assert fingerprint(result.model) != fingerprint(base)
