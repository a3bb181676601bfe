import pytest
import torch

from dclip.metrics import (
    MetricUnavailable,
    lpips_model,
    mae,
    reconstruction_metrics,
    segmentation_consistency,
    ssim,
)


def test_mae_is_measured_in_the_unit_range():
    x = torch.zeros(2, 3, 8, 8)
    assert mae(x, x + 0.5) == pytest.approx(0.25)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, noisy) < 0.9


def test_lpips_offline_is_reported_not_faked(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import dclip.network

    monkeypatch.setattr(dclip.network, "reachable", lambda *a, **k: False)
    with pytest.raises(MetricUnavailable, match="AlexNet"):
        lpips_model()
    out = reconstruction_metrics(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    assert out["mae"] == 0 and out["ssim"] == pytest.approx(1.0) and out["lpips"].startswith("unavailable")


def test_segmentation_consistency_is_pixel_accuracy():
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    b = a.clone()
    b[0, 0] = 1
    assert segmentation_consistency(a, b) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        segmentation_consistency(a, b[:, :2])


def test_judge_edit_scores_a_real_attribute_change():
    from dclip.tinyworld.faces import make_faces
    from dclip.tinyworld.judge import judge_edit

    src = make_faces(16, seed=5, split="in-domain", expression="neutral")
    angry = make_faces(16, seed=5, split="in-domain", expression="angry")  # same faces, other expression
    out = judge_edit(src.images, angry.images, "expression", "angry")
    assert out["success"] >= 0.9 and out["success_before"] == 0 and out["others_kept"] >= 0.9
    assert out["segmentation_consistency"] > 0.9
    with pytest.raises(ValueError, match="unknown attribute"):
        judge_edit(src.images, angry.images, "expression", "sad")


def test_high_frequency_energy_is_zero_on_flat_images_and_matches_a_loop_on_a_checkerboard():
    import numpy as np

    from dclip.metrics import high_frequency_energy

    flat = torch.full((2, 3, 6, 6), 0.3)
    assert torch.allclose(high_frequency_energy(flat), torch.zeros(2), atol=1e-6)
    board = torch.tensor([[(-1.0) ** (i + j) for j in range(5)] for i in range(5)])
    x = board.expand(1, 3, 5, 5)
    padded = np.pad(board.numpy(), 1, mode="edge")  # the reference: a 3 x 3 box mean with replicated edges
    box = np.array([[padded[i : i + 3, j : j + 3].mean() for j in range(5)] for i in range(5)])
    expected = np.abs(board.numpy() - box).mean()
    assert high_frequency_energy(x).shape == (1,)
    assert high_frequency_energy(x).item() == pytest.approx(expected, abs=1e-6)
    assert 0.5 < expected < 1.2  # interior pixels: |1 - 1/9|, edges differ
    with pytest.raises(ValueError, match="batch of images"):
        high_frequency_energy(board)
