"""DiffusionCLIP wired together for one profile: models, training latents, cached fine-tuning, editing.

pipe = DiffusionCLIP.from_profile(dclip.profile())
edited = pipe.edit(images, "angry")        # Alg. 1 once (cached on disk), then Alg. 3

Each step is the package's own function (:func:`precompute_latents`, :func:`finetune_or_load`,
:func:`manipulate`); this class only remembers the profile's settings so that chapters stay short.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dclip.clip import CLIP, load_clip
from dclip.editing import manipulate
from dclip.finetune import Callback, FinetuneConfig, Latents, finetune_or_load, precompute_latents
from dclip.losses import IdentityTerm, lowpass_identity
from dclip.models import DiffusionModel, load_diffusion
from dclip.profile import Profile
from dclip.recipes import Recipe, get_recipe


@dataclass
class DiffusionCLIP:
    profile: Profile
    model: DiffusionModel
    clip: CLIP
    identity: IdentityTerm | None  # the face-identity term of Eq. 11 (the tiny world's stand-in there)
    _tuned: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_profile(cls, p: Profile) -> DiffusionCLIP:
        model, clip = load_diffusion(p.diffusion, device=p.device), load_clip(p.clip, device=p.device)
        return cls(p, model, clip, lowpass_identity if p.name == "tiny" else None)

    def recipe(self, name: str) -> Recipe:
        return get_recipe(self.profile.diffusion, name)

    def training_images(self, n: int | None = None) -> torch.Tensor:
        """The N images whose latents fine-tuning starts from: tiny faces (seed 100, never shown as test
        images), or the example photographs on the real profile."""
        if self.profile.name == "tiny":
            from dclip.tinyworld.faces import make_faces

            return make_faces(n or self.profile.n_train, seed=100, split="in-domain").images
        from dclip.images import load_image, sample_photos

        return load_image(list(sample_photos().values())[: n or self.profile.n_train], self.profile.image_size)

    def latents(self, images: torch.Tensor, t0: int, S_for: int | None = None) -> Latents:
        """DDIM latents of ``images`` (Eq. 12), cached on disk."""
        S_for = S_for or self.profile.train_steps[0]
        return precompute_latents(self.model, images, t0, S_for, progress=False)

    def config(self, name: str, **overrides) -> FinetuneConfig:
        """The fine-tuning settings of recipe ``name`` on this profile; keyword arguments override them."""
        r = self.recipe(name)
        if r.lambda_id > 0 and self.identity is None:
            overrides.setdefault("lambda_id", 0.0)  # no face-recognition backbone: L1 only (Eq. 11)
        settings = {"S_gen": self.profile.train_steps[1], **self.profile.finetune, **overrides}
        return FinetuneConfig.from_recipe(r, **settings)

    def finetuned(
        self,
        name: str,
        progress: bool = True,
        callback: Callback | None = None,
        force: bool = False,
        n_train: int | None = None,
        **overrides,
    ) -> DiffusionModel:
        """The model fine-tuned for recipe ``name`` (Alg. 1 or 2) from ``n_train`` latents (default: the
        profile's N), trained once and then loaded from disk; ``force=True`` trains again (to watch
        ``callback``); keyword arguments override the :class:`FinetuneConfig` settings."""
        cfg = self.config(name, **overrides)
        key = (repr(cfg), n_train)
        if key not in self._tuned or force:
            latents = self.latents(self.training_images(n_train), cfg.t0)
            identity = self.identity if cfg.lambda_id > 0 else None
            self._tuned[key] = finetune_or_load(
                self.model, self.clip, latents, cfg, identity, progress=progress, callback=callback, force=force
            )
        return self._tuned[key]

    def edit(self, images: torch.Tensor, name: str, progress: bool = True) -> torch.Tensor:
        """Alg. 3 with the recipe's t0 and the profile's test steps: the edited ``images``, clamped to [-1, 1]."""
        tuned = self.finetuned(name, progress=progress)
        S_for, S_gen = self.profile.test_steps
        x_t0 = self.latents(images, self.recipe(name).t0, S_for).x_t0
        with torch.no_grad():
            return manipulate(self.model, tuned, None, self.recipe(name).t0, S_gen=S_gen, x_t0=x_t0).clamp(-1, 1)
