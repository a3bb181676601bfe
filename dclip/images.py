"""Images in and out: files, folders, PIL images and arrays to [-1, 1] NCHW tensors, and back for display."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ImageSource = str | Path | Image.Image | np.ndarray
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _to_pil(src: ImageSource) -> list[Image.Image]:
    if isinstance(src, (str, Path)):
        path = Path(src)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            return [Image.open(p) for p in files]
        if not path.exists():
            raise FileNotFoundError(f"no image at {path}")
        return [Image.open(path)]
    if isinstance(src, Image.Image):
        return [src]
    if isinstance(src, np.ndarray):
        arr = src
        if arr.dtype != np.uint8:
            if arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"a float array must be in [0, 1], got [{arr.min():.3f}, {arr.max():.3f}]")
            arr = (arr * 255).round().astype(np.uint8)
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4)):
            return [Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)]
        raise ValueError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}")
    raise TypeError(f"cannot read an image from {type(src).__name__}: give a path, folder, PIL image or array")


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """RGB, centre-cropped to a square and resized to ``size`` x ``size`` (Lanczos)."""
    image = image.convert("RGBA").convert("RGB") if image.mode in ("P", "LA", "RGBA") else image.convert("RGB")
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return image.crop(box).resize((size, size), Image.LANCZOS)


def load_image(src: ImageSource | Iterable[ImageSource], size: int) -> torch.Tensor:
    """Images from a file, folder, PIL image, array, or a list of these: [-1, 1] float tensor (N, 3, size, size)."""
    if size < 1:
        raise ValueError(f"size={size} must be positive")
    sources = list(src) if isinstance(src, (list, tuple)) else [src]
    images = [center_crop_resize(im, size) for s in sources for im in _to_pil(s)]
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] images (N, 3, H, W) (or one (3, H, W)) to PIL images, clipped to the valid range."""
    x = x[None] if x.dim() == 3 else x
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


def save_images(x: torch.Tensor, folder: str | Path, prefix: str = "image") -> list[Path]:
    """Save [-1, 1] images as PNG files ``prefix_000.png, ...`` in ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(to_pil(x)):
        paths.append(folder / f"{prefix}_{i:03d}.png")
        im.save(paths[-1])
    return paths


def sample_photos() -> dict[str, np.ndarray]:
    """A few real photographs shipped with scikit-image, for offline inputs: ``{"astronaut": (H, W, 3) uint8, ...}``."""
    from skimage import data

    return {"astronaut": data.astronaut(), "cat": data.chelsea(), "coffee": data.coffee()}


def stroke_painting(images: torch.Tensor, blocks: int = 16, levels: int = 4) -> torch.Tensor:
    """A crude "stroke painting" of [-1, 1] images for Alg. 4 on real photographs: average colours over a
    ``blocks`` x ``blocks`` grid, quantised to ``levels`` values per channel, enlarged back without smoothing."""
    if images.dim() != 4 or images.shape[-1] % blocks or images.shape[-2] % blocks:
        raise ValueError(f"images (N, 3, H, W) with H and W divisible by blocks={blocks}, got {tuple(images.shape)}")
    small = torch.nn.functional.adaptive_avg_pool2d(images.float(), blocks)
    small = torch.round((small + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
    return torch.nn.functional.interpolate(small, size=images.shape[-2:], mode="nearest")
