"""Evaluation (Sec. 4.1, D.3): reconstruction MAE / SSIM / LPIPS, and manipulation metrics.

Images are [-1, 1] tensors (N, 3, H, W); reconstruction metrics are computed on images mapped to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet weights, the LPIPS backbone


class MetricUnavailable(RuntimeError):
    """A metric that cannot be computed here (for example LPIPS offline without cached AlexNet weights)."""


def mae(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean absolute error with images in [0, 1] (the paper's Tables 1 and 4)."""
    return ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)).abs() / 2).mean().item()


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM (scikit-image, RGB, images in [0, 1]); small images use a window that fits them."""
    from skimage.metrics import structural_similarity

    a = ((x.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    b = ((y.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    win = min(7, a.shape[1] - (1 - a.shape[1] % 2), a.shape[2] - (1 - a.shape[2] % 2))
    return float(
        np.mean([structural_similarity(p, q, channel_axis=-1, data_range=1.0, win_size=win) for p, q in zip(a, b)])
    )


def lpips_model(device: str | torch.device = "cpu"):
    """LPIPS (AlexNet) from the ``lpips`` package; raises :class:`MetricUnavailable` when AlexNet's weights are
    neither in the torch hub cache nor downloadable, rather than computing it with random weights."""
    import lpips

    from dclip import network

    cached = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    if not cached.exists() and not network.reachable("download.pytorch.org"):
        raise MetricUnavailable(
            f"LPIPS needs torchvision's AlexNet weights ({cached}), which are not cached and "
            "cannot be downloaded offline; copy the file there to enable LPIPS"
        )
    return lpips.LPIPS(net="alex", verbose=False).eval().requires_grad_(False).to(device)


def reconstruction_metrics(x: torch.Tensor, x_rec: torch.Tensor, lpips_net=None) -> dict[str, float | str]:
    """MAE, SSIM and (where available) LPIPS between images and their reconstructions."""
    out: dict[str, float | str] = {"mae": mae(x, x_rec), "ssim": ssim(x, x_rec)}
    try:
        net = lpips_net or lpips_model(x.device)
        with torch.no_grad():
            out["lpips"] = net(x.float().clamp(-1, 1), x_rec.float().clamp(-1, 1)).mean().item()
    except MetricUnavailable as e:
        out["lpips"] = f"unavailable: {e}"
    return out


def segmentation_consistency(parts_edit: torch.Tensor, parts_ref: torch.Tensor) -> float:
    """Pixel accuracy of the segmentation of the edited image against that of the source (Sec. 4.1, D.3)."""
    if parts_edit.shape != parts_ref.shape:
        raise ValueError(f"part maps differ in shape: {tuple(parts_edit.shape)} vs {tuple(parts_ref.shape)}")
    return (parts_edit == parts_ref).float().mean().item()


def identity_similarity(x_gen: torch.Tensor, x0: torch.Tensor, face=None) -> float:
    """Identity similarity of edits to their sources, higher is closer (1 = same).

    With ``face`` (an identity term from :func:`dclip.identity.arcface_identity`, ``1 - cos`` of face embeddings):
    the mean cosine similarity, as the paper's ID metric. Without it, a documented STAND-IN for small faces:
    the cosine similarity of the mean-centred 8 x 8 low-pass images (position, size, shape, background).
    """
    if x_gen.shape != x0.shape:
        raise ValueError(f"x_gen {tuple(x_gen.shape)} and x0 {tuple(x0.shape)} must have the same shape")
    with torch.no_grad():
        if face is not None:
            return (1 - face(x_gen, x0)).mean().item()

        def low(x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.adaptive_avg_pool2d(x.float().clamp(-1, 1), 8).flatten(1)
            return x - x.mean(1, keepdim=True)

        return torch.nn.functional.cosine_similarity(low(x_gen), low(x0), dim=1).mean().item()


def manipulation_metrics(
    clip, source: torch.Tensor, edited: torch.Tensor, target: str, reference: str, face=None
) -> dict[str, float]:
    """S_dir (Eq. 30) with ``clip`` and the identity similarity of :func:`identity_similarity` (with ``face``, the
    paper's ID metric)."""
    from dclip.losses import directional_similarity, text_direction

    with torch.no_grad():
        delta_t = text_direction(clip, target, reference)
        return {
            "s_dir": directional_similarity(clip, edited.clamp(-1, 1), source, delta_t).item(),
            "identity": identity_similarity(edited, source, face),
        }


def high_frequency_energy(x: torch.Tensor) -> torch.Tensor:
    """Per-image mean |x - box3(x)| ([-1, 1] images (N, C, H, W) -> (N,)): what a 3 x 3 box blur (edges
    replicated) removes, i.e. pixel-scale detail such as speckle. Not a metric of the paper: a diagnostic of the
    high-frequency pattern a fine-tuned model can add to please CLIP (chapter 06)."""
    if x.dim() != 4:
        raise ValueError(f"x must be an (N, C, H, W) batch of images, got shape {tuple(x.shape)}")
    x = x.float()
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return (x - blurred).abs().flatten(1).mean(1)
