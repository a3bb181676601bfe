"""The tiny world's identity term (Eq. 11): a low-pass image distance standing in for a face recognizer."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def lowpass_identity(x_gen: torch.Tensor, x0: torch.Tensor, size: int = 16) -> torch.Tensor:
    """The tiny world's STAND-IN for a face-recognition identity loss: mean squared difference of the images
    average-pooled to ``size`` x ``size`` (16 x 16 of a 32 x 32 face keeps regions such as a beard, not strokes
    such as brows). A tiny face's identity is its position, size, shape, colours and background, which this
    keeps; it uses neither the guiding CLIP nor the judge. Returns (N,)."""
    return (F.adaptive_avg_pool2d(x_gen, size) - F.adaptive_avg_pool2d(x0, size)).square().flatten(1).mean(1)
