"""Baselines (paper D.5), cached fine-tuning, the world's pipeline, the notebooks' explorers and edit metrics."""

import functools

import pytest
import torch
from fakes import FakeCLIP, small_model

from dclip.baselines import clip_guided_sampling, latent_optimization, pixel_optimization, sdedit
from dclip.ddim import ddim_generate
from dclip.explorers import CombinationExplorer
from dclip.finetune import FinetuneConfig
from dclip.hashing import fingerprint
from dclip.losses import directional_clip_loss, text_direction
from dclip.metrics import identity_similarity, manipulation_metrics
from dclip.store import finetune_or_load, precompute_latents
from dclip.tinyworld.identity import lowpass_identity
from dclip.widgets import FinetuneMonitor


@pytest.fixture(scope="module")
def latents(base, images):
    return precompute_latents(base, images, t0=300, S_for=4, cache_dir=None, progress=False)


def _loss(clip, x, x0, d):
    return directional_clip_loss(clip, x, x0, d).item()


def test_latent_optimization_lowers_the_loss_and_leaves_the_weights_alone(base, latents):
    clip, before = FakeCLIP(), fingerprint(base)
    d = text_direction(clip, "angry face", "face")
    start = ddim_generate(base, latents.x_t0, base.schedule, t0=300, S_gen=3)
    edit = latent_optimization(base, clip, latents.x0, latents.x_t0, d, t0=300, S_gen=3, steps=15, lr=0.05, lambda_l1=0)
    assert _loss(clip, edit, latents.x0, d) < _loss(clip, start, latents.x0, d) - 0.05
    assert fingerprint(base) == before and all(p.grad is None for p in base.parameters())


def test_clip_guided_sampling_moves_along_the_text_and_scale_zero_is_plain_ddim(base, latents):
    clip = FakeCLIP()
    d = text_direction(clip, "angry face", "face")
    plain = ddim_generate(base, latents.x_t0, base.schedule, t0=300, S_gen=3)
    assert torch.allclose(
        clip_guided_sampling(base, clip, latents.x0, latents.x_t0, d, t0=300, S_gen=3, scale=0.0), plain
    )
    guided = clip_guided_sampling(base, clip, latents.x0, latents.x_t0, d, t0=300, S_gen=3, scale=50.0, lambda_l1=0)
    assert _loss(clip, guided, latents.x0, d) < _loss(clip, plain, latents.x0, d) - 0.05


def test_sdedit_is_seeded_and_checks_t0(base, images):
    a = sdedit(base, images, t0=300, S_gen=3, generator=torch.Generator().manual_seed(0))
    b = sdedit(base, images, t0=300, S_gen=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == images.shape
    with pytest.raises(ValueError, match="t0"):
        sdedit(base, images, t0=1000, S_gen=3)


def test_pixel_optimization_global_loss_pulls_images_together(images):
    clip = FakeCLIP()
    x, hist = pixel_optimization(clip, images, "angry face", "face", loss="global", steps=40, lr=0.05)
    assert hist[-1] < hist[0] - 0.1 and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match="'global'"):
        pixel_optimization(clip, images, "a", "b", loss="local")


def test_pixel_optimization_directional_loss_does_not_follow_rounding_noise():
    """At x = x0, Delta I is rounding noise and the gradient of Eq. 9 is about 1 / |Delta I|: started there, a 1e-7
    change of the input (a machine's rounding) changes the edit; the seeded start off x0 makes it reproducible."""
    from dclip.clip import load_clip
    from dclip.tinyworld.faces import make_faces

    clip = load_clip("tinyclip")
    x0 = make_faces(4, seed=4242, split="in-domain", expression="neutral").images
    rounded = x0 + 1e-7 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    run = functools.partial(pixel_optimization, clip, target="angry face", reference="face", steps=30, lr=0.02)
    assert (run(x0)[0] - run(rounded)[0]).abs().max() < 1e-2
    assert (run(x0, init_noise=0.0)[0] - run(rounded, init_noise=0.0)[0]).abs().max() > 0.1


def test_finetune_or_load_trains_once_then_loads(base, latents, tmp_path):
    cfg = FinetuneConfig("angry face", "face", t0=300, S_gen=2, lr=1e-3, epochs=1, batch_size=2, lambda_id=0.5)
    identity = functools.partial(lowpass_identity, size=4)
    calls = []
    first = finetune_or_load(
        base,
        FakeCLIP(),
        latents,
        cfg,
        identity,
        cache_dir=tmp_path,
        progress=False,
        callback=lambda *a: calls.append(1),
    )
    again = finetune_or_load(
        base,
        FakeCLIP(),
        latents,
        cfg,
        identity,
        cache_dir=tmp_path,
        progress=False,
        callback=lambda *a: calls.append(1),
    )
    assert len(calls) == 2 and fingerprint(first) == fingerprint(again)  # the second call loaded, no steps
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    finetune_or_load(
        base,
        FakeCLIP(),
        latents,
        cfg,
        identity,
        cache_dir=tmp_path,
        progress=False,
        callback=lambda *a: calls.append(1),
        force=True,
    )
    assert len(calls) == 4


def test_monitor_records_losses_previews_and_snapshots(base, latents):
    from dclip.finetune import finetune

    monitor = FinetuneMonitor(latents.x_t0[:2], 300, S_gen=2, every=2, live=False, keep_every=1)
    cfg = FinetuneConfig("a", "b", t0=300, S_gen=2, lr=1e-3, epochs=2, batch_size=2)
    result = finetune(base, FakeCLIP(), latents, cfg, callback=monitor, progress=False)
    assert [h["loss"] for h in monitor.history] == [h["loss"] for h in result.history]
    assert list(monitor.previews) == ["step 1", "step 2", "step 4"] and list(monitor.snapshots) == [1, 2, 3, 4]
    assert fingerprint(monitor.snapshots[4]) == fingerprint(result.model)


def test_combination_explorer_weights_sum_to_one(base, latents):
    other = small_model(seed=5)
    explorer = CombinationExplorer(base, {"other": other}, latents.x_t0, 300, S_gen=3)
    plain = ddim_generate(base, latents.x_t0, base.schedule, t0=300, S_gen=3).clamp(-1, 1)
    assert torch.equal(explorer({"other": 0.0}), plain)
    assert torch.allclose(
        explorer({"other": 1.0}), ddim_generate(other, latents.x_t0, base.schedule, t0=300, S_gen=3).clamp(-1, 1)
    )
    with pytest.raises(ValueError, match="no fine-tuned model named"):
        explorer({"angry": 1.0})


def test_identity_similarity_and_manipulation_metrics(images):
    assert identity_similarity(images, images) == pytest.approx(1.0)
    assert identity_similarity(images, images.flip(-1)) < 0.99
    assert identity_similarity(images, images, face=lambda a, b: torch.full((len(a),), 0.25)) == pytest.approx(0.75)
    m = manipulation_metrics(FakeCLIP(), images, images.flip(-1), "angry face", "face")
    assert set(m) == {"s_dir", "identity"} and -1 <= m["s_dir"] <= 1


def test_pipeline_settings_come_from_recipe_and_world():
    import dclip
    from dclip.pipeline import DiffusionCLIP

    pipe = DiffusionCLIP(dclip.world("tiny"))
    cfg = pipe.config("angry", epochs=3)
    assert (cfg.target, cfg.t0, cfg.epochs, cfg.lr, cfg.S_gen) == ("angry face", 500, 3, 2e-4, 6)
    assert pipe.training_images(4).shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown recipe 'sad'"):
        pipe.config("sad")
