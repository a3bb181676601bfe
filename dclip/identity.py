"""The face-identity term of Eq. 11 on real faces: ``L_face = 1 - cos(R(x_gen), R(x0))`` with ArcFace ``R``.

The paper (and its code) uses ArcFace's IR-SE50 on the central face crop of a 256x256 image pooled to 112x112;
:func:`arcface_identity` builds that network from the optional ``facexlib`` package (``pip install
"dclip[faces]"``, which the Colab cell installs) and its released weights. Where it is missing,
:class:`IdentityUnavailable` says so, and the real world warns that lambda_ID is 0.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: The face box of a 256x256 CelebA-HQ image that the authors' identity loss crops: rows 35:223, cols 32:220.
FACE_BOX_256 = (35, 223, 32, 220)
ARCFACE_INPUT = 112
ARCFACE_WEIGHTS = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth"


class IdentityUnavailable(RuntimeError):
    """No face-recognition network here (package not installed, or its weights cannot be had)."""


class ArcFaceIdentity(nn.Module):
    """``L_face(x_gen, x0) = 1 - cos(R(crop(x_gen)), R(crop(x0)))`` (Eq. 11), (N,), for images in [-1, 1].

    ``crop`` takes the face box of :data:`FACE_BOX_256` scaled to the image size and pools it to the
    recognizer's input size; the recognizer gets images in [-1, 1], as ArcFace was trained.
    """

    def __init__(self, backbone: nn.Module, *, name: str, input_size: int = ARCFACE_INPUT):
        super().__init__()
        self.backbone, self.name, self.input_size = backbone.eval().requires_grad_(False), name, input_size

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        top, bottom, left, right = (round(v * size / 256) for v in FACE_BOX_256)
        return F.adaptive_avg_pool2d(x[..., top:bottom, left:right], self.input_size)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.backbone.parameters()).dtype
        return F.normalize(self.backbone(self.crop(x).to(dtype)).float(), dim=-1)

    def forward(self, x_gen: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if x_gen.shape != x0.shape or x_gen.dim() != 4 or x_gen.shape[1] != 3:
            raise ValueError(f"two (N, 3, H, W) batches of one shape, got {tuple(x_gen.shape)} and {tuple(x0.shape)}")
        return 1 - (self.embed(x_gen) * self.embed(x0)).sum(-1)

    @property
    def cache_name(self) -> str:
        """What a cache key records of this term: its name and the recognizer's weights."""
        from dclip.hashing import fingerprint

        return f"arcface[{self.name}:{fingerprint(self.backbone)}]"


def arcface_backbone() -> nn.Module:
    """ArcFace IR-SE50 (facexlib's ``Backbone``) with random weights: the architecture alone, for tests."""
    try:
        from facexlib.recognition.arcface_arch import Backbone
    except ImportError as e:
        raise IdentityUnavailable(
            "the ArcFace identity loss needs the optional face packages: pip install 'dclip[faces]' "
            f"(facexlib; import failed: {e})"
        ) from e
    return Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")


def arcface_identity(device: str | torch.device = "cpu") -> ArcFaceIdentity:
    """The paper's identity term: ArcFace IR-SE50 with its released weights (downloaded once by torch.hub)."""
    net = arcface_backbone()
    try:
        state = torch.hub.load_state_dict_from_url(ARCFACE_WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as e:
        raise IdentityUnavailable(
            f"ArcFace's weights could not be loaded from {ARCFACE_WEIGHTS} ({type(e).__name__}: {e}); "
            "copy the file into torch.hub's checkpoints folder to use it offline"
        ) from e
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise IdentityUnavailable(f"the file from {ARCFACE_WEIGHTS} does not fit ArcFace IR-SE50: {e}") from e
    return ArcFaceIdentity(net, name="arcface-ir-se50").to(device)


def random_backbone(dim: int = 64, seed: int = 0) -> nn.Module:
    """A small random face 'recognizer' (conv net -> ``dim`` features) that stands in for ArcFace in the smoke
    world: the identity term's plumbing runs, its values mean nothing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.SiLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, dim),
        )  # fmt: skip
