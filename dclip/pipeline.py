"""DiffusionCLIP wired together for one world: training latents, cached fine-tuning, editing.

pipe = DiffusionCLIP(dclip.world())
edited = pipe.edit(images, "angry")        # Alg. 1 once (cached on disk), then Alg. 3

Each step is the package's own function (:func:`precompute_latents`, :func:`finetune_or_load`,
:func:`manipulate`); this class only applies the world's settings so that chapters stay short.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from dclip.clip import CLIP
from dclip.editing import manipulate
from dclip.finetune import Callback, FinetuneConfig, Latents
from dclip.losses import IdentityTerm
from dclip.models import DiffusionModel
from dclip.recipes import Recipe
from dclip.schedule import check_int
from dclip.store import finetune_or_load, precompute_latents
from dclip.worlds import World

KEEP_TUNED = 2  # fine-tuned models held in memory; older ones are loaded again from the disk cache when asked


@dataclass
class DiffusionCLIP:
    world: World
    _tuned: dict = field(default_factory=dict, repr=False)

    @property
    def model(self) -> DiffusionModel:
        return self.world.model

    @property
    def clip(self) -> CLIP:
        return self.world.clip

    @property
    def identity(self) -> IdentityTerm | None:
        """The face-identity term of Eq. 11 (the world's; None where it has none)."""
        return self.world.identity

    def recipe(self, name: str) -> Recipe:
        return self.world.recipe(name)

    def training_images(self, n: int | None = None) -> torch.Tensor:
        return self.world.training_images(n)

    def latents(self, images: torch.Tensor, t0: int, S_for: int | None = None, *, progress: bool = False) -> Latents:
        """DDIM latents of ``images`` (Eq. 12), cached on disk; ``S_for`` None: the world's fine-tuning S_for."""
        S_for = self.world.settings.train_steps.S_for if S_for is None else S_for
        check_int(S_for, "S_for", minimum=1)
        return precompute_latents(self.model, images, t0=t0, S_for=S_for, progress=progress)

    def config(self, name: str, **overrides) -> FinetuneConfig:
        """The fine-tuning settings of recipe ``name`` in this world (``algorithm=2`` adds the world's Alg. 2
        settings); keyword arguments override them. Without an identity term lambda_ID is 0, with a warning."""
        r, s = self.recipe(name), self.world.settings
        settings = {"S_gen": s.train_steps.S_gen, **s.finetune}
        if overrides.get("algorithm") == 2:
            settings.update(s.finetune_alg2)
        settings.update(overrides)
        if settings.get("lambda_id", r.lambda_id) > 0 and self.identity is None:
            warnings.warn(
                f"recipe {name!r} asks lambda_ID = {settings.get('lambda_id', r.lambda_id)}, but "
                f"{self.world.identity_note}: training with lambda_ID = 0",
                stacklevel=2,
            )
            settings["lambda_id"] = 0.0
        return FinetuneConfig.from_recipe(r, **settings)

    def finetuned(
        self,
        name: str,
        *,
        progress: bool = True,
        callback: Callback | None = None,
        force: bool = False,
        n_train: int | None = None,
        **overrides,
    ) -> DiffusionModel:
        """The model fine-tuned for recipe ``name`` (Alg. 1 or 2) from ``n_train`` latents (default: the
        world's N), trained once and then loaded from disk; ``force=True`` trains again (to watch
        ``callback``); keyword arguments override the :class:`FinetuneConfig` settings."""
        if n_train is not None:
            check_int(n_train, "n_train", minimum=1)
        cfg = self.config(name, **overrides)
        key = (repr(cfg), n_train)
        if key not in self._tuned or force:
            latents = self.latents(self.training_images(n_train), cfg.t0, progress=progress)
            identity = self.identity if cfg.lambda_id > 0 else None
            self._tuned[key] = finetune_or_load(
                self.model, self.clip, latents, cfg, identity, progress=progress, callback=callback, force=force
            )
        self._tuned[key] = self._tuned.pop(key)  # most recently used last
        while len(self._tuned) > KEEP_TUNED:  # the others stay on disk (a 256x256 UNet is 455 MB of GPU memory)
            self._tuned.pop(next(iter(self._tuned)))
        return self._tuned[key]

    def edit(self, images: torch.Tensor, name: str, *, progress: bool = True) -> torch.Tensor:
        """Alg. 3 with the recipe's t0 and the world's test steps: the edited ``images``, clamped to [-1, 1].
        The images are checked before any fine-tuning starts."""
        self.model.check_images(images)
        recipe = self.recipe(name)
        tuned = self.finetuned(name, progress=progress)
        steps = self.world.settings.test_steps
        latents = self.latents(images, recipe.t0, steps.S_for, progress=progress)
        with torch.no_grad():
            return manipulate(self.model, tuned, x_t0=latents, S_gen=steps.S_gen).clamp(-1, 1)
