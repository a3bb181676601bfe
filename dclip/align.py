"""Aligning a user's face photo as FFHQ and CelebA-HQ were aligned, so the pretrained DDPM sees it in its domain.

The crop is an oriented square fixed by the eyes and the mouth (the FFHQ recipe): its centre lies a little below
the eyes' midpoint towards the mouth, its side is about four times the eye-to-eye or twice the eye-to-mouth
distance (whichever is larger), and it is rotated so the eyes are level. Landmarks come from the optional
``face-alignment`` package (68 points; ``pip install "dclip[faces]"``); :func:`ffhq_quad` and
:func:`crop_quad` need only the landmarks and are tested on their own.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# 68-point landmark indices (iBUG 300-W): eyes and the mouth's outer corners
LEFT_EYE, RIGHT_EYE, MOUTH_LEFT, MOUTH_RIGHT = slice(36, 42), slice(42, 48), 48, 54


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The crop square (4 corners, x/y pixel coordinates, clockwise from top-left) for 68 landmarks (68, 2)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"need 68 (x, y) landmarks, got an array of shape {lm.shape}")
    eye_l, eye_r = lm[LEFT_EYE].mean(0), lm[RIGHT_EYE].mean(0)
    eyes = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    mouth = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) / 2
    eye_to_mouth = mouth - eyes
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # the horizontal axis: eyes, and the mouth's normal
    x /= np.hypot(*x)
    x *= max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))  # half the side
    y = np.array([-x[1], x[0]])
    centre = eyes + 0.1 * eye_to_mouth
    return np.stack([centre - x - y, centre + x - y, centre + x + y, centre - x + y])


def crop_quad(image: Image.Image, quad: np.ndarray, size: int) -> Image.Image:
    """The square ``quad`` of ``image`` resampled to ``size`` x ``size`` (bicubic, edges replicated)."""
    side = np.hypot(*(quad[1] - quad[0]))
    pad = int(np.ceil(side))  # room for a square that reaches past the photo's border
    arr = np.pad(np.asarray(image.convert("RGB")), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    q = quad + pad
    # PIL's QUAD transform maps the output square onto the source corners: top-left, bottom-left, bottom-right,
    # top-right
    data = (*q[0], *q[3], *q[2], *q[1])
    big = Image.fromarray(arr).transform((4 * size, 4 * size), Image.QUAD, data, Image.BICUBIC)
    return big.resize((size, size), Image.LANCZOS)


def align_faces(sources, *, size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Each photo of ``sources`` (paths, a folder, PIL images or arrays) aligned and cropped to ``size``: [-1, 1],
    (N, 3, size, size). The first face found in a photo is used; a photo without a face is a clear error."""
    try:
        import face_alignment
    except ImportError as e:
        raise ImportError(
            "aligning faces needs the optional face packages: pip install 'dclip[faces]' (face-alignment)"
        ) from e
    from dclip.images import _to_pil, load_image

    detector = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=str(device), compile=False)
    items = list(sources) if isinstance(sources, (list, tuple)) else [sources]
    crops = []
    for i, image in enumerate(im for s in items for im in _to_pil(s)):
        found = detector.get_landmarks_from_image(np.asarray(image.convert("RGB")))
        if not found:
            raise ValueError(f"no face found in photo {i} of the given sources; pass align=False to crop it as is")
        crops.append(crop_quad(image, ffhq_quad(found[0]), size))
    return load_image(crops, size)
