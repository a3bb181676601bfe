"""Images in and out: files, folders, PIL images and arrays to [-1, 1] NCHW tensors, and back for display."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from dclip.ddim import check_batch
from dclip.schedule import check_int

ImageSource = str | Path | Image.Image | np.ndarray
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _eight_bit(im: Image.Image, where: str) -> Image.Image:
    """16-bit grey images (modes ``I;16*``, and ``I`` when a value exceeds 255) and float images (mode ``F``, values
    in [0, 1] or [0, 255]) as 8-bit grey at their full range; other modes as they are (``center_crop_resize``
    converts them to RGB)."""
    if not (im.mode.startswith("I") or im.mode == "F"):
        return im
    arr = np.asarray(im, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{where} holds non-finite values (NaN or inf)")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and hi > 255):
        full = 65535.0  # a 16-bit image
    elif im.mode == "F" and hi <= 1:
        full = 1.0  # a float image in [0, 1]
    else:
        full = 255.0
    if lo < 0 or hi > full:
        raise ValueError(f"{where} ({im.mode}) has values in [{lo:g}, {hi:g}], outside [0, {full:g}]")
    return Image.fromarray(np.round(arr / full * 255).astype(np.uint8), mode="L")


def _open(path: Path) -> Image.Image:
    """One image file, fully read, turned upright by its EXIF orientation; errors name the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return _eight_bit(ImageOps.exif_transpose(im), str(path))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))) or 0 in arr.shape:
        raise ValueError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.dtype == np.uint16:
        arr = np.round(arr / 257.0).astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("an image array holds non-finite values (NaN or inf)")
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"a float array must be in [0, 1], got [{arr.min():.3f}, {arr.max():.3f}]")
        arr = (arr * 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8, uint16 or float in [0, 1], got {arr.dtype}")
    return Image.fromarray(arr)


def _to_pil(src: ImageSource) -> list[Image.Image]:
    if isinstance(src, (str, Path)):
        path = Path(src)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            return [_open(p) for p in files]
        if not path.exists():
            raise FileNotFoundError(f"no image at {path}")
        return [_open(path)]
    if isinstance(src, Image.Image):
        return [_eight_bit(ImageOps.exif_transpose(src), "the PIL image")]
    if isinstance(src, np.ndarray):
        return [_from_array(src)]
    raise TypeError(f"cannot read an image from {type(src).__name__}: give a path, folder, PIL image or array")


#: What a transparent pixel shows: images with an alpha channel (or a transparent palette colour) are composited on
#: this background, never read with the colours hidden under their transparency.
BACKGROUND = (255, 255, 255)


def flatten_alpha(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """RGB: an image with transparency (RGBA, LA, PA, or a palette/grey image with a transparent colour)
    composited on ``background``; other images converted as they are."""
    transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not transparent:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def center_crop_resize(image: Image.Image, size: int, *, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """RGB (transparency composited on ``background``, white by default), centre-cropped to a square and resized
    to ``size`` x ``size`` (Lanczos)."""
    image = flatten_alpha(image, background)
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return image.crop(box).resize((size, size), Image.LANCZOS)


def load_image(src: ImageSource | Iterable[ImageSource], size: int) -> torch.Tensor:
    """Images from a file, folder, PIL image, array, or a list of these: [-1, 1] float tensor (N, 3, size, size).

    Files are turned upright by their EXIF orientation; 16-bit, float (in [0, 1]) and palette images are read at
    their full range; transparent pixels show white (:data:`BACKGROUND`: an RGBA or palette file is composited on
    it, not read with the colours hidden under its transparency); a folder's sub-folders are skipped. An
    unreadable file is a ``ValueError`` that names it.
    """
    check_int(size, "size", minimum=1)
    sources = list(src) if isinstance(src, (list, tuple)) else [src]
    if not sources:
        raise ValueError("no images given: pass a file, folder, PIL image or array, or a non-empty list of these")
    images = [center_crop_resize(im, size) for s in sources for im in _to_pil(s)]
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] images (N, 3, H, W) (or one (3, H, W)) to PIL images, clipped to the valid range."""
    x = x[None] if x.dim() == 3 else x
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


def save_images(x: torch.Tensor, folder: str | Path, prefix: str = "image", *, overwrite: bool = False) -> list[Path]:
    """Save [-1, 1] images (N, 3, H, W) (or one (3, H, W)) as PNG files ``prefix_000.png, ...`` in ``folder``;
    returns the paths. Existing files are kept (a ``FileExistsError``, nothing written) unless ``overwrite=True``;
    ``prefix`` is a plain name (no path separators); values must be finite and near [-1, 1] (they are clipped)."""
    if not isinstance(prefix, str) or any(c in prefix for c in "/\\\0"):
        raise ValueError(f"prefix={prefix!r} must be a plain file name without path separators: use folder= for paths")
    x = x[None] if isinstance(x, torch.Tensor) and x.dim() == 3 else x
    check_batch(x, "images")
    if x.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) or (3, H, W), got {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.5 or hi > 1.5:
        hint = " (it looks like [0, 255]: use x / 127.5 - 1)" if hi > 2 and lo >= 0 else ""
        raise ValueError(f"images must have values in [-1, 1], got [{lo:.3f}, {hi:.3f}]{hint}")
    folder = Path(folder)
    blocking = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise NotADirectoryError(f"cannot save images into {folder}: {blocking} is a file, not a folder")
    paths = [folder / f"{prefix}_{i:03d}.png" for i in range(x.shape[0])]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]} exists ({len(existing)} of the {len(paths)} files): pass overwrite=True to replace "
            "them, or another folder or prefix"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for path, im in zip(paths, to_pil(x)):
        im.save(path)
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
