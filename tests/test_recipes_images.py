import numpy as np
import pytest
import torch
from PIL import Image

import dclip
from dclip.recipes import recipe_group


def test_recipes_are_the_papers_table5():
    assert len(recipe_group("paper")) == 29
    angry = dclip.get_recipe("celeba-hq", "angry")
    assert (angry.target, angry.reference, angry.t0, angry.lambda_l1, angry.lambda_id) == (
        "angry face",
        "face",
        500,
        0.3,
        0.3,
    )
    gogh = dclip.get_recipe("celeba-hq-sdedit", "gogh")
    assert (gogh.target, gogh.reference, gogh.t0, gogh.lambda_l1, gogh.lambda_id) == (
        "painting by Gogh",
        "photo",
        600,
        0,
        0,
    )
    assert dclip.get_recipe("church", "golden").t0 == 400 and dclip.get_recipe("afhq-dog", "bear").reference == "dog"
    assert {r.t0 for r in recipe_group("paper")} == {300, 400, 500, 600}
    assert [r.name for r in dclip.recipes_for("bedroom")] == ["blue tone", "wooden", "golden", "palace"]


def test_tiny_recipes_cover_in_and_out_of_domain_edits():
    tiny = recipe_group("tiny")
    names = {r.name for r in tiny}
    assert {"angry", "red hair", "zombie", "grey hair"} <= names
    assert all(r.model == "tinyfaces" and 0 < r.t0 < 1000 for r in tiny)


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown recipe 'sad'.*angry"):
        dclip.get_recipe("tinyfaces", "sad")


def test_load_image_accepts_files_folders_pil_and_arrays(tmp_path):
    rgba = Image.new("RGBA", (80, 40), (255, 0, 0, 255))
    rgba.save(tmp_path / "a.png")
    Image.new("L", (30, 30), 128).save(tmp_path / "b.jpg")
    x = dclip.load_image(tmp_path / "a.png", 32)
    assert x.shape == (1, 3, 32, 32) and torch.allclose(x[0, :, 5, 5], torch.tensor([1.0, -1.0, -1.0]))
    folder = dclip.load_image(tmp_path, 16)
    assert folder.shape == (2, 3, 16, 16)
    assert torch.allclose(folder[1], torch.full((3, 16, 16), 128 / 127.5 - 1), atol=1e-6)  # grey -> RGB
    assert dclip.load_image(np.zeros((10, 10), np.uint8), 8).min() == -1
    assert dclip.load_image(np.ones((10, 20, 3), np.float32), 8).max() == 1
    assert dclip.load_image([rgba, rgba], 8).shape == (2, 3, 8, 8)


def test_load_image_centre_crops():
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20] = 255  # only the centre square is white
    assert dclip.load_image(arr, 10).min() == 1.0


def test_load_image_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        dclip.load_image(tmp_path / "missing.png", 32)
    with pytest.raises(ValueError, match="no images"):
        dclip.load_image(tmp_path, 32)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        dclip.load_image(np.full((4, 4, 3), 2.0), 32)
    with pytest.raises(TypeError):
        dclip.load_image(42, 32)


def test_to_pil_inverts_load_image(tmp_path):
    photo = dclip.images.sample_photos()["astronaut"]
    x = dclip.load_image(photo, 64)
    back = dclip.load_image(dclip.to_pil(x)[0], 64)
    assert (back - x).abs().max() < 1e-6
    paths = dclip.save_images(x, tmp_path / "out")
    assert paths[0].exists() and Image.open(paths[0]).size == (64, 64)


def test_stroke_painting_is_blocky_and_quantised():
    from dclip.images import stroke_painting

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    s = stroke_painting(x, blocks=8, levels=3)
    assert s.shape == x.shape and set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(s[..., :4, :4], s[..., :1, :1].expand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="divisible"):
        stroke_painting(x, blocks=5)
