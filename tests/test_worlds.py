"""Worlds: one API for the tiny, smoke and real settings; the real world's sampled images, identity term and
evaluation; no core module imports the tiny world (the floors and cycles: test_floors.py)."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import dclip
from dclip.pipeline import DiffusionCLIP
from dclip.worlds import METRICS

PACKAGE = Path(dclip.__file__).parent


def test_core_modules_import_no_tiny_world_module():
    code = "import sys, dclip.models, dclip.finetune, dclip.editing, dclip.metrics, dclip.losses, dclip.clip"
    code += ", dclip.worlds, dclip.pipeline, dclip.realworld"
    code += "; print(sorted(m for m in sys.modules if m.startswith('dclip.tinyworld')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_core_names_no_plug_in_and_finds_the_tiny_world_through_the_registry():
    from dclip import registry

    core = [f for f in PACKAGE.rglob("*") if f.suffix in (".py", ".json") and "tinyworld" not in f.parts]
    assert [f.name for f in core if re.search(r"tinyworld|tinyfaces|tinyclip|TinyWorld", f.read_text())] == []
    assert registry.plugin_modules() == ["dclip.tinyworld.plugin"]
    assert registry.offline_world()[0] == "tiny" and registry.table("world")["tiny"]["diffusion"] == "tinyfaces"
    assert "tinyclip" in registry.table("clip") and "lowpass" in registry.table("identity")
    assert [r.name for r in dclip.recipes_for("tinyfaces")][:2] == ["angry", "smiling"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("world", "tiny", {})


def test_no_module_outside_the_world_definitions_branches_on_a_world_name():
    for f in PACKAGE.glob("*.py"):
        text = f.read_text()
        for name in ("tiny", "real", "smoke", "celeba-hq"):
            for quote in "\"'":
                literal = f"{quote}{name}{quote}"
                assert f"== {literal}" not in text and f"!= {literal}" not in text, f"{f.name} branches on {name!r}"
        assert ".name in (" not in text, f"{f.name} branches on a world's name"


def test_world_is_chosen_by_name_environment_or_hardware(monkeypatch):
    monkeypatch.delenv("DCLIP_PROFILE", raising=False)
    monkeypatch.setenv("DCLIP_WORLD", "smoke")
    assert dclip.world().name == "smoke"
    monkeypatch.delenv("DCLIP_WORLD")
    monkeypatch.setenv("DCLIP_PROFILE", "real")
    w = dclip.world()
    assert (w.name, w.diffusion, w.settings.n_train, w.settings.test_steps) == ("celeba-hq", "celeba-hq", 50, (200, 40))
    monkeypatch.setenv("DCLIP_PROFILE", "huge")
    with pytest.raises(ValueError, match="unknown world 'huge'"):
        dclip.world()
    monkeypatch.delenv("DCLIP_PROFILE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dclip.world().name == "tiny"
    assert [dclip.world(n).diffusion for n in ("church", "bedroom", "cat")] == ["church", "bedroom", "cat"]


def test_the_real_world_has_the_papers_settings():
    w = dclip.world("celeba-hq")
    s = w.settings
    assert s.finetune == {"lr": 4e-6, "epochs": 1, "batch_size": 1} and s.train_steps == (40, 6)
    assert w.recipe("angry").t0 == 500 and w.recipe("angry").lambda_id == 0.3


@pytest.fixture(scope="module")
def smoke():
    return dclip.world("smoke", device="cpu")


def test_real_training_images_are_n_distinct_model_samples_disjoint_from_test_images(smoke, tmp_path):
    from dclip import realworld

    full = dclip.world("smoke-full", device="cpu")
    assert full.settings.n_train == 50
    train = realworld.sample_images(smoke.model, 50, seed=realworld.TRAIN_SEED, steps=2, cache_dir=tmp_path)
    test = realworld.sample_images(smoke.model, 8, seed=realworld.TEST_SEED, steps=2, cache_dir=tmp_path)
    assert train.shape == (50, 3, 32, 32) and train.abs().max() <= 1
    flat = torch.cat([train, test]).flatten(1)
    d = torch.cdist(flat, flat) + torch.eye(58) * 1e9
    assert d.min() > 1.0  # 58 different images: no training image repeats, none is a test image
    again = realworld.sample_images(smoke.model, 8, seed=realworld.TRAIN_SEED, steps=2, cache_dir=tmp_path)
    assert torch.equal(again, train[:8])  # image i depends on its seed, not on n (same batches of 8)


def test_sampled_images_are_cached_and_a_damaged_cache_is_resampled(smoke, tmp_path):
    from dclip.realworld import sample_images

    first = sample_images(smoke.model, 2, seed=5, steps=2, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    assert torch.equal(sample_images(smoke.model, 2, seed=5, steps=2, cache_dir=tmp_path), first)
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=f"{path.name}.*cannot be read"):
        assert torch.equal(sample_images(smoke.model, 2, seed=5, steps=2, cache_dir=tmp_path), first)


def test_real_lambda_id_is_the_recipes_with_the_identity_package_and_warns_without(monkeypatch):
    from dclip import identity as identity_module
    from dclip.identity import ArcFaceIdentity, IdentityUnavailable, random_backbone

    w = dclip.world("celeba-hq", device="cpu")
    monkeypatch.setattr(
        identity_module, "arcface_identity", lambda device="cpu": ArcFaceIdentity(random_backbone(), name="arcface")
    )
    assert DiffusionCLIP(w).config("angry").lambda_id == 0.3

    def missing(device="cpu"):
        raise IdentityUnavailable("pip install 'dclip[faces]'")

    w = dclip.world("celeba-hq", device="cpu")
    monkeypatch.setattr(identity_module, "arcface_identity", missing)
    with pytest.warns(UserWarning, match="lambda_ID is 0 on the celeba-hq world"):
        assert w.identity is None
    with pytest.warns(UserWarning, match="asks lambda_ID = 0.3"):
        assert DiffusionCLIP(w).config("angry").lambda_id == 0.0
    assert "identity" in w.unmeasured() and "dclip[faces]" in w.unmeasured()["identity"]


def test_arcface_identity_crops_the_face_box_and_is_zero_for_the_same_image():
    from dclip.identity import ArcFaceIdentity, random_backbone

    term = ArcFaceIdentity(random_backbone(), name="r", input_size=32)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert term(x, x).abs().max() < 1e-5
    y = x.clone()
    y[..., :4, :] = 1  # outside the face box (rows 35:223 of 256 -> 9:56 of 64): not seen
    assert term(y, x).abs().max() < 1e-5
    expected = torch.nn.functional.adaptive_avg_pool2d(x[..., 9:56, 8:55], 32)  # 35:223, 32:220 of 256, scaled
    assert torch.equal(term.crop(x), expected)
    assert term(-torch.ones_like(x), torch.ones_like(x)).min() > 0.1  # black vs white faces differ
    assert term.cache_name.startswith("arcface[r:")


def test_smoke_world_runs_the_real_path_and_reports_only_what_it_measures(smoke):
    pipe = DiffusionCLIP(smoke)
    x = smoke.test_images(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the smoke world has an identity term: no lambda_ID warning
        cfg = pipe.config("angry")
    assert cfg.lambda_id == 0.3 and cfg.S_gen == 2
    scores = smoke.evaluate(x, x.flip(-1), "angry")
    assert {"s_dir", "identity", "ssim"} <= set(scores) <= set(METRICS)
    assert not any(v != v for v in scores.values())  # no nan
    assert set(smoke.unmeasured()) == set(METRICS) - set(scores)
    strokes, depicted = smoke.stroke_images(2)
    assert strokes.shape == depicted.shape == (2, 3, 32, 32)


def test_tiny_world_judges_edits_and_picks_neutral_sources():
    from dclip.tinyworld.faces import ATTRIBUTES
    from dclip.tinyworld.judge import judge_faces

    w = dclip.world("tiny", device="cpu")
    x = w.test_images(16, neutral_for="angry")
    assert (judge_faces(w.judge, x)["expression"] != ATTRIBUTES["expression"].index("angry")).all()
    scores = w.evaluate(x, x, "angry")
    assert scores["success"] == 0 and scores["others_kept"] == 1 and scores["identity"] == pytest.approx(1)
    assert set(w.unmeasured()) == {"lpips", "ssim"}
    assert set(w.counterfactuals(2)) == {"expression angry", "hair red", "beard"}


def test_ffhq_quad_centres_a_level_face_and_turns_with_it():
    from dclip.align import ffhq_quad

    lm = np.zeros((68, 2))
    lm[36:42], lm[42:48], lm[48], lm[54] = (40, 50), (60, 50), (45, 70), (55, 70)
    np.testing.assert_allclose(ffhq_quad(lm), [[10, 12], [90, 12], [90, 92], [10, 92]])
    turned = lm @ np.array([[0.0, 1.0], [-1.0, 0.0]])  # the same face rotated by 90 degrees
    np.testing.assert_allclose(ffhq_quad(turned), ffhq_quad(lm) @ np.array([[0.0, 1.0], [-1.0, 0.0]]), atol=1e-9)
    with pytest.raises(ValueError, match="68"):
        ffhq_quad(lm[:5])


def test_crop_quad_of_an_upright_square_is_the_plain_crop():
    from PIL import Image

    from dclip.align import crop_quad

    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((100, 100, 3)) * 255).astype(np.uint8)).resize((100, 100))
    image = image.resize((25, 25)).resize((100, 100), Image.BILINEAR)  # smooth, so resampling paths agree
    quad = np.array([[10.0, 12.0], [90.0, 12.0], [90.0, 92.0], [10.0, 92.0]])
    got = np.asarray(crop_quad(image, quad, 16), dtype=float)
    want = np.asarray(image.crop((10, 12, 90, 92)).resize((16, 16), Image.LANCZOS), dtype=float)
    assert np.abs(got - want).mean() < 3  # of 255


def test_a_model_under_autocast_returns_float32_close_to_the_float32_path():
    model = dclip.load_diffusion("tinyfaces", device="cpu")
    x, t = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([500, 500])
    with torch.no_grad():
        full = model(x, t)
        model.autocast_dtype = torch.bfloat16  # what a GPU world sets (fp16 on a T4); bf16 autocast runs on CPUs too
        half = model(x, t)
    assert half.dtype == torch.float32 and not torch.equal(half, full)
    assert (half - full).abs().mean() < 0.02 * full.abs().mean()
    assert dclip.world("smoke", device="cpu").model.autocast_dtype is None  # CPU worlds stay float32


def test_fine_tuning_keeps_its_own_precision_and_hands_back_the_models():
    from fakes import FakeCLIP, small_model

    from dclip.finetune import FinetuneConfig, Latents, finetune

    base = small_model()
    base.autocast_dtype = torch.bfloat16  # as a GPU world sets it for inference
    x = torch.zeros(1, 3, 16, 16)
    seen = []
    result = finetune(
        base,
        FakeCLIP(),
        Latents(x, x, 500, 4),
        FinetuneConfig("angry face", "face", t0=500, S_gen=2),
        callback=lambda i, entry, tuned: seen.append(tuned.autocast_dtype),
        progress=False,
    )
    assert seen == [None]  # cfg.precision, not the inference dtype, governs training
    assert result.model.autocast_dtype == torch.bfloat16 and base.autocast_dtype == torch.bfloat16


def test_pipe_edit_checks_its_images_before_any_fine_tuning(monkeypatch):
    import dclip.pipeline as pipeline

    def never(*args, **kwargs):
        raise AssertionError("fine-tuning started before the images were checked")

    monkeypatch.setattr(pipeline, "finetune_or_load", never)
    pipe = DiffusionCLIP(dclip.world("tiny", device="cpu"))
    bad = torch.zeros(2, 3, 32, 32)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="(?i)nan|finite"):
        pipe.edit(bad, "angry")
    with pytest.raises(ValueError, match="32"):
        pipe.edit(torch.zeros(2, 3, 16, 16), "angry")
