"""Model profiles: the real models where a GPU and their weights are there, the tiny world everywhere else.

``profile()`` decides; ``DCLIP_PROFILE=tiny|real`` forces one. Notebooks print ``profile().describe()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from dclip.models import default_device, hub_reachable


@dataclass(frozen=True)
class Profile:
    """What a notebook runs on: the diffusion model, the CLIP, image size, device and the paper's step counts."""

    name: str  # "real" or "tiny"
    diffusion: str
    clip: str
    image_size: int
    device: str
    train_steps: tuple[int, int]  # (S_for, S_gen) while fine-tuning
    test_steps: tuple[int, int]  # (S_for, S_gen) when editing
    n_train: int  # precomputed latents N (Alg. 1, step 1)
    finetune: dict  # FinetuneConfig settings beyond the recipe's (lr, epochs, batch size)

    def describe(self) -> str:
        return (
            f"dclip profile: {self.name} ({self.diffusion} DDPM at {self.image_size}x{self.image_size}, "
            f"CLIP {self.clip}) on {self.device}"
        )


REAL = dict(
    diffusion="celeba-hq",
    clip="ViT-B-16",
    image_size=256,
    train_steps=(40, 6),
    test_steps=(200, 40),
    n_train=50,
    finetune=dict(lr=4e-6, epochs=1, batch_size=1),  # the paper's settings
)
#: The tiny world's settings were chosen with ``benchmarks/tiny_edits.py`` (docs/results.md): a 2.7M-parameter
#: DDPM takes a far larger learning rate than the paper's 4e-6, CPU time asks for batches of 8, and averaging the
#: directional loss over 4 shifted/flipped views keeps the small CLIP's gradients from being adversarial.
TINY = dict(
    diffusion="tinyfaces",
    clip="tinyclip",
    image_size=32,
    train_steps=(40, 6),
    test_steps=(40, 6),
    n_train=32,
    finetune=dict(lr=2e-4, epochs=8, batch_size=8, clip_views=4),
)


def _real_weights_available() -> bool:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache("google/ddpm-celebahq-256", "config.json")
    return isinstance(cached, str) or hub_reachable()


def profile(name: str | None = None) -> Profile:
    """The profile to run: ``name``, else ``$DCLIP_PROFILE``, else real with a CUDA GPU and reachable or cached
    weights, else tiny."""
    name = name or os.environ.get("DCLIP_PROFILE") or None
    if name not in (None, "tiny", "real"):
        raise ValueError(f"unknown profile {name!r}: use 'tiny' or 'real' (DCLIP_PROFILE=tiny|real)")
    if name is None:
        name = "real" if torch.cuda.is_available() and _real_weights_available() else "tiny"
    device = str(default_device()) if name == "real" else ("cuda" if torch.cuda.is_available() else "cpu")
    return Profile(name=name, device=device, **(REAL if name == "real" else TINY))


def example_images(p: Profile, n: int = 8, seed: int = 4242) -> torch.Tensor:
    """Inputs for a notebook, [-1, 1] (n, 3, S, S): held-out tiny faces (in-domain), or real photographs."""
    if p.name == "tiny":
        from dclip.tinyworld.faces import make_faces

        return make_faces(n, seed=seed, split="in-domain").images
    from dclip.images import load_image, sample_photos

    photos = list(sample_photos().values())
    return load_image([photos[i % len(photos)] for i in range(n)], p.image_size)
