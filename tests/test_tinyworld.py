"""The tiny world: the face generator, its captions, the shipped models, and short training runs."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dclip.tinyworld import faces as tw
from dclip.tinyworld.faces import (
    PARTS,
    caption_with_mentions,
    full_caption,
    make_faces,
    make_strokes,
    render,
    render_faces,
)


def test_faces_are_deterministic_and_independent_of_the_batch_size():
    a, b = make_faces(8, seed=3), make_faces(4, seed=3)
    assert torch.equal(a.images[:4], b.images) and torch.equal(a.parts[:4], b.parts)
    assert a.images.shape == (8, 3, 32, 32) and a.parts.shape == (8, 32, 32)
    assert a.images.min() >= -1 and a.images.max() <= 1
    assert not torch.equal(make_faces(4, seed=4).images, b.images)


def test_in_domain_split_never_shows_held_out_values_and_out_of_domain_always_does():
    ind = make_faces(400, seed=1, split="in-domain")
    assert not any(f.skin == "zombie" or f.hair == "grey" for f in ind.faces)
    assert {f.skin for f in ind.faces} == {"pale", "tanned", "brown", "dark"}
    ood = make_faces(100, seed=1, split="out-of-domain")
    assert all(f.skin == "zombie" or f.hair == "grey" for f in ood.faces)
    with pytest.raises(ValueError, match="unknown split"):
        make_faces(2, split="test")


def test_fixed_attributes_and_unknown_values():
    fs = make_faces(20, seed=2, skin="zombie", expression="angry")
    assert all(f.skin == "zombie" and f.expression == "angry" for f in fs.faces)
    assert (fs.attributes["skin"] == tw.ATTRIBUTES["skin"].index("zombie")).all()
    with pytest.raises(ValueError, match="unknown attribute"):
        make_faces(2, hair="purple")


def test_label_map_marks_the_drawn_parts():
    face = tw.sample_face(np.random.default_rng(0), beard="beard", skin="pale", hair="red")
    image, parts = render(face)
    skin = image[parts == PARTS.index("skin")].astype(float)
    assert np.abs(np.median(skin, 0) - np.array(tw.SKIN_TONES["pale"])).max() <= 10  # the tone, up to its jitter
    assert parts[0, 0] == PARTS.index("background")
    for part in ("hair", "eyes", "mouth", "beard", "clothes"):
        assert (parts == PARTS.index(part)).sum() > 0, part
    shaved, _ = render(dataclasses.replace(face, beard="no beard"))
    assert (render(dataclasses.replace(face, beard="no beard"))[1] == PARTS.index("beard")).sum() == 0
    assert not np.array_equal(shaved, image)


def test_changing_the_expression_changes_only_the_face_features():
    face = tw.sample_face(np.random.default_rng(5), expression="neutral", beard="no beard")
    neutral, parts = render(face)
    angry, _ = render(dataclasses.replace(face, expression="angry"))
    changed = np.abs(neutral.astype(int) - angry.astype(int)).sum(-1) > 0
    assert changed.any()
    assert not changed[parts == PARTS.index("background")].any()  # identity (nuisance) is kept


def test_captions_name_true_attributes():
    rng = np.random.default_rng(0)
    for face in make_faces(50, seed=9).faces:
        text, mentioned = caption_with_mentions(face, rng)
        if "hair" in mentioned:
            assert f"{face.hair} hair" in text
        if "beard" in mentioned:
            assert ("a beard" in text) == (face.beard == "beard")
        if "expression" in mentioned:
            assert any(w in text for w in tw._EXPR_WORDS[face.expression])
    plain, mentioned = caption_with_mentions(face, rng, p_mention=0.0)
    assert mentioned == () and plain.split()[-1] in ("face", "person", "portrait")
    assert full_caption("zombie", "grey", "angry", "beard") == "a zombie angry face with grey hair and a beard"


def test_strokes_are_flat_colour_paintings_of_the_faces():
    strokes, fs = make_strokes(4, seed=1)
    assert strokes.shape == (4, 3, 32, 32) and strokes.min() >= -1 and strokes.max() <= 1
    flat = strokes.reshape(4, 3, -1)
    assert all(len(torch.unique(flat[i], dim=1).T) <= 8 for i in range(4))  # a handful of colours, no shading
    assert len(torch.unique(fs.images[0].reshape(3, -1), dim=1).T) > 20


def test_consistency_matrix_counts_every_true_caption():
    from dclip.tinyworld.train import consistency

    fs = make_faces(3, seed=0, skin="pale").faces
    C = consistency(fs, [("skin",), (), ("hair", "skin")])
    assert C[:, 0].tolist() == [1, 1, 1] and C[:, 1].tolist() == [1, 1, 1]
    assert C[2, 2] == 1 and C.diagonal().tolist() == [1, 1, 1]


def test_tiny_models_load_from_package_data():
    import dclip
    from dclip.tinyworld.judge import judge_faces, load_judge

    model = dclip.load_diffusion("tinyfaces", device="cpu")
    assert model.image_size == 32 and model.schedule.T == 1000 and not model.training
    fs = make_faces(8, seed=11, split="in-domain")
    with torch.no_grad():
        assert model(fs.images, torch.full((8,), 10)).shape == (8, 3, 32, 32)
    clip = dclip.load_clip("tinyclip", device="cpu")
    assert clip.encode_image(fs.images).shape == (8, 128)
    verdict = judge_faces(load_judge(), fs.images)
    assert (verdict["skin"] == fs.attributes["skin"]).float().mean() >= 0.9
    for name in ("tinyfaces", "tinyclip", "judge", "faceid"):
        card = json.loads((Path(tw.__file__).parent / "weights" / f"{name}.json").read_text())
        assert card["name"] == name and card["steps"] > 0 and card["quality"]


def test_tiny_unet_is_channels_last_on_cpu_and_computes_what_the_contiguous_one_does():
    import dclip

    model = dclip.load_diffusion("tinyfaces", device="cpu")
    conv = next(m for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] == 3)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    contiguous = dclip.load_diffusion("tinyfaces", device="cpu")
    contiguous.unet.to(memory_format=torch.contiguous_format)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x, torch.full((4,), 500)), contiguous(x, torch.full((4,), 500))
    assert (a - b).abs().max() < 1e-4  # another summation order, the same function


def test_tiny_world_fine_tunes_without_checkpointing_for_the_same_gradients_to_the_bit():
    import copy

    import dclip
    from dclip.ddim import ddim_generate

    assert dclip.world("tiny", device="cpu").settings.finetune["checkpoint"] is False
    model = dclip.load_diffusion("tinyfaces", device="cpu")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    grads = []
    for checkpoint in (True, False):
        tuned = copy.deepcopy(model).train().requires_grad_(True)
        ddim_generate(
            tuned, x, model.schedule, t0=500, S_gen=2, grad=True, checkpoint=checkpoint
        ).square().sum().backward()
        grads.append([p.grad for p in tuned.parameters()])
    assert all(torch.equal(g, h) for g, h in zip(*grads))


def test_tiny_clip_reads_the_attributes():
    import dclip

    clip = dclip.load_clip("tinyclip", device="cpu")
    fs = make_faces(40, seed=12, split="full", expression="angry")
    with torch.no_grad():
        img = clip.encode_image(fs.images)
    text = clip.encode_text(["an angry face", "a smiling face"])
    assert ((img @ text.T).argmax(1) == 0).float().mean() > 0.9


@pytest.fixture
def small(monkeypatch):
    from dclip.tinyworld.zoo import load_config

    def cfg(name, **train):
        c = load_config(name)
        c["train"].update(n_images=128, threads=1, **train)
        return c

    return cfg


def test_short_ddpm_run_lowers_the_loss_and_resumes(small, tmp_path):
    from dclip.tinyworld.train import train

    cfg = small("tinyfaces", batch_size=8, warmup=5)
    first = train("ddpm", cfg, tmp_path / "run", tmp_path / "out", steps=20)
    card = train("ddpm", cfg, tmp_path / "run", tmp_path / "out", steps=40)  # picks up at step 20
    assert first["steps"] == 20 and card["steps"] == 40
    assert card["loss_end"] < 0.5 * card["loss_start"]
    assert (tmp_path / "out" / "tinyfaces.safetensors").exists()


def test_short_judge_run_lowers_the_loss(small, tmp_path):
    from dclip.tinyworld.train import train

    card = train("judge", small("judge", batch_size=16, warmup=5), tmp_path / "run", tmp_path / "out", steps=40)
    assert card["loss_end"] < 0.7 * card["loss_start"]


def test_short_clip_run_lowers_the_loss(small, tmp_path):
    from dclip.tinyworld.train import train

    card = train(
        "clip",
        small("tinyclip", batch_size=32, warmup=5, checkpoint_every=1000),
        tmp_path / "run",
        tmp_path / "out",
        steps=30,
    )
    assert card["loss_end"] < card["loss_start"]


def test_short_faceid_run_lowers_the_loss(tmp_path):
    from dclip.tinyworld.train import train
    from dclip.tinyworld.zoo import load_config

    cfg = load_config("faceid")
    cfg["train"].update(n_identities=256, batch_size=32, warmup=5)
    card = train("faceid", cfg, tmp_path / "run", tmp_path / "out", steps=40)
    assert card["loss_end"] < 0.7 * card["loss_start"]
    assert (tmp_path / "out" / "faceid.safetensors").exists()


def test_another_photo_keeps_the_identity_and_changes_the_rest():
    import dataclasses

    import numpy as np

    from dclip.tinyworld.faceid import INVARIANT_TO, another_photo, identity_views
    from dclip.tinyworld.faces import sample_face

    rng = np.random.default_rng(3)
    face = sample_face(rng)
    photos = [another_photo(face, rng) for _ in range(20)]
    fixed = [f.name for f in dataclasses.fields(face) if f.name not in INVARIANT_TO]
    assert all(getattr(p, k) == getattr(face, k) for p in photos for k in fixed)
    for k in INVARIANT_TO:
        assert len({getattr(p, k) for p in photos}) > 1
    views, faces = identity_views(4, views=3, seed=5)
    assert views.shape == (4, 3, 3, 32, 32) and len(faces) == 4
    assert torch.equal(views, identity_views(4, views=3, seed=5)[0])  # seeded
    assert not torch.equal(views[:, 0], views[:, 1])


def test_the_face_recognizer_sees_identity_through_expression_and_hair():
    import dataclasses

    from dclip.store import _describe
    from dclip.tinyworld.faceid import faceid_identity

    term = faceid_identity()
    fs = make_faces(16, seed=13, split="full", expression="neutral")
    moods = [dataclasses.replace(f, expression="angry", hair="red") for f in fs.faces]
    angry = render_faces(moods)[0]
    with torch.no_grad():
        same = term(fs.images, fs.images)
        mood = term(angry, fs.images)
        other = term(fs.images.roll(1, 0), fs.images)
    assert same.shape == (16,) and same.abs().max() < 1e-5
    assert mood.mean() < 0.1 and other.mean() > 0.5 and (mood < other).all()
    assert _describe(term).startswith("tinyworld.faceid[")
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        term(torch.zeros(2, 3, 64, 64), torch.zeros(2, 3, 64, 64))
