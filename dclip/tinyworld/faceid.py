"""The tiny world's face recognizer: its stand-in for ArcFace in the identity loss (Eq. 11).

A tiny face's *identity* is what makes one person: face position, size and shape, eye spacing, hair length,
skin tone and facial hair (the beard). A recognizer should see through what changes from one photo of a person
to the next, their expression, hair colour (mood and dye), clothes and the background, as ArcFace sees through
expressions and backgrounds. :class:`FaceID` maps a face to a unit embedding, trained contrastively on renders of
each identity that differ in those (``python -m dclip.tinyworld.train faceid``).

It is trained on the generator's ground truth, never on the judge's or the guiding CLIP's outputs, so the judge
stays an independent referee; :func:`faceid_identity` gives the identity term ``1 - cos(R(x_gen), R(x0))``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dclip.tinyworld.faces import Face, render_faces, sample_face
from dclip.tinyworld.judge import conv_block

#: What a recognizer sees through: two renders of one identity differ only in these fields of a :class:`Face`.
INVARIANT_TO = ("expression", "hair", "background", "shirt")


class FaceID(nn.Module):
    """A strided CNN (32 -> 16 -> 8 -> 4) and a linear map of the flattened 4 x 4 features (where things are is
    part of an identity) to a unit embedding. Input: images in [-1, 1], (N, 3, 32, 32); output: (N, dim)."""

    def __init__(self, width: int = 32, dim: int = 64):
        super().__init__()
        w = width
        self.features = nn.Sequential(conv_block(3, w, 2), conv_block(w, 2 * w, 2), conv_block(2 * w, 4 * w, 2))
        self.embed = nn.Linear(4 * w * 16, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(self.features(x).flatten(1)), dim=-1)


def another_photo(face: Face, rng: np.random.Generator) -> Face:
    """The same identity in another photo: the fields of :data:`INVARIANT_TO` taken from another random face."""
    other = sample_face(rng, "full")
    return dataclasses.replace(face, **{k: getattr(other, k) for k in INVARIANT_TO})


def identity_views(n: int, views: int = 2, seed: int = 0) -> tuple[torch.Tensor, list[Face]]:
    """``views`` renders of each of ``n`` identities of the full split, each with the fields of
    :data:`INVARIANT_TO` taken from another random face: images in [-1, 1], (n, views, 3, 32, 32), and the
    identities' faces."""
    faces, photos = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        faces.append(sample_face(rng, "full"))
        photos += [another_photo(faces[-1], rng) for _ in range(views)]
    return render_faces(photos)[0].reshape(n, views, 3, 32, 32), faces


def contrastive_loss(za: torch.Tensor, zb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row ``i`` of ``za`` and of ``zb`` are the same identity, every other row another."""
    logits = za @ zb.T / temperature
    target = torch.arange(za.shape[0], device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def load_faceid(device: str | torch.device = "cpu") -> FaceID:
    """The trained face recognizer from package data."""
    from dclip.tinyworld.zoo import load_config, load_trained

    return load_trained(FaceID(**load_config("faceid")["model"]), "faceid", device)


class FaceIdentity:
    """The identity term ``L_face(x_gen, x0) = 1 - cos(R(x_gen), R(x0))`` (Eq. 11) with the tiny world's
    recognizer ``R`` (:class:`FaceID`) standing in for ArcFace; (N,) for images in [-1, 1], (N, 3, 32, 32)."""

    def __init__(self, net: FaceID):
        self.net = net

    def __call__(self, x_gen: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if x_gen.shape[1:] != (3, 32, 32) or x0.shape != x_gen.shape:
            raise ValueError(
                f"the tiny face recognizer takes two (N, 3, 32, 32) batches, got {tuple(x_gen.shape)} and "
                f"{tuple(x0.shape)}"
            )
        net = self.net.to(x_gen.device)
        return 1 - (net(x_gen.float()) * net(x0.float())).sum(-1)

    @property
    def cache_name(self) -> str:
        """What a cache key records of this term: its name and the recognizer's weights."""
        from dclip.hashing import fingerprint

        return f"tinyworld.faceid[{fingerprint(self.net)}]"


def faceid_identity(device: str | torch.device = "cpu") -> FaceIdentity:
    """The tiny world's face-identity term (:class:`FaceIdentity`) with the shipped recognizer."""
    return FaceIdentity(load_faceid(device))
