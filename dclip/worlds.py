"""Worlds: everything a chapter needs from its setting, behind one API.

world = dclip.world()                      # $DCLIP_WORLD (or $DCLIP_PROFILE), else real on a CUDA GPU, else offline
world.model, world.clip                    # eps_theta and the CLIP that guides it
world.training_images()                    # the N images whose latents Alg. 1 starts from
world.test_images(8)                       # held-out inputs, never the training images
world.identity                             # the identity term of Eq. 11, or None (world.identity_note says why)
world.evaluate(source, edited, "angry")    # every metric this world can measure; world.unmeasured() the rest

A world is an entry of :mod:`dclip.registry` (its class as ``"module:Class"`` and its settings, as data: the core's
``configs/worlds.json`` and the plug-ins'), so this module imports no world: the real one lives in
:mod:`dclip.realworld`, a plug-in's in its own subpackage.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import torch

from dclip import registry
from dclip.clip import CLIP, load_clip
from dclip.device import default_device
from dclip.losses import IdentityTerm
from dclip.models import DiffusionModel, load_diffusion
from dclip.recipes import Recipe, get_recipe, recipes_for
from dclip.schedule import Steps, check_int

#: Every world by name: the core's table and the plug-ins' entries (:func:`dclip.registry.table`).
WORLDS = registry.table("world")
ALIASES = {"real": "celeba-hq"}

#: How far past [-1, 1] an edit is clamped without a word: few-step DDIM overshoots (the 32x32 faces' edits reach
#: about -2.3); beyond it the generation was unstable (a warning). An edit with no value below -0.5 and some above 2
#: is in [0, 255] (refused).
EDIT_OVERSHOOT = 2.0

#: What a world may measure of an edit, with what each number means (Sec. 4.1, D.3).
METRICS: dict[str, str] = {
    "s_dir": "directional CLIP similarity S_dir (Eq. 30): does the change point along the text direction",
    "identity": "identity similarity of edit and source (1 = same person)",
    "lpips": "LPIPS distance of edit and source (0 = identical)",
    "ssim": "SSIM of edit and source (1 = identical)",
    "success": "share of edits an independent classifier sees with the target attribute",
    "others_kept": "share of edits whose other attributes the classifier sees unchanged",
    "segmentation_consistency": "pixel accuracy of the edit's face segmentation against the source's",
}


@dataclass(frozen=True)
class Settings:
    """A world's settings, flat (``configs/worlds.json``): step counts, fine-tuning settings and size knobs."""

    train_steps: Steps  # (S_for, S_gen) while fine-tuning (Alg. 1)
    test_steps: Steps  # (S_for, S_gen) when editing (Alg. 3)
    n_train: int  # N precomputed latents (Alg. 1, step 1)
    finetune: dict  # FinetuneConfig settings beyond the recipe's (lr, epochs, batch size, ...)
    finetune_alg2: dict  # what Alg. 2 changes of them on this world
    sizes: dict[str, int]  # the batch sizes chapters scale by: "show", "eval", "samples", "table", "edit"
    n_sweep: tuple[tuple[int, int, int], ...] = ()  # (N, epochs, batch size) of chapter 09's study of N
    sample_steps: int = 50  # DDIM steps of a sampled image (worlds whose images are the model's samples)
    table_steps: tuple[int, ...] = (6, 40, 200)  # the S_for and S_gen values of chapter 03's table (the paper's)
    notes: dict[str, str] = field(default_factory=dict)  # "this world vs the paper" remarks, by topic

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        d = dict(d)
        d["train_steps"], d["test_steps"] = Steps(*d["train_steps"]), Steps(*d["test_steps"])
        d["n_sweep"] = tuple(tuple(row) for row in d.get("n_sweep", ()))
        d["table_steps"] = tuple(d.get("table_steps", (6, 40, 200)))
        return cls(**d)


def _count(n: object, name: str = "n") -> int:
    """A number of images: an integer >= 1 (not 0, -2, 2.5 or True), else a ``ValueError`` naming ``name``."""
    try:
        check_int(n, name, minimum=1)
    except ValueError as e:
        raise ValueError(f"{e}: the number of images to make") from None
    return int(n)


class World:
    """The setting a chapter runs in: models, images, the identity term, what can be measured, and settings.

    Subclasses give the images (:meth:`training_images`, :meth:`test_images`, :meth:`unseen_domain_images`,
    :meth:`stroke_images`), the identity term (:meth:`_load_identity`) and the judged metrics
    (:meth:`_judge`); everything else is shared.
    """

    #: metrics of :data:`METRICS` this world computes, and why it cannot compute the others
    measures: tuple[str, ...] = ("s_dir",)
    why_not: dict[str, str] = {}

    def __init__(
        self,
        name: str,
        *,
        diffusion: str,
        recipes: str,
        clip: str,
        settings: Settings,
        settings_name: str | None = None,
        device: str | None = None,
    ):
        self.name, self.diffusion, self.recipe_set, self.clip_name = name, diffusion, recipes, clip
        self.settings, self.settings_name = settings, settings_name or name  # whose settings (for cost tables)
        self.device = device or default_device().type

    # --- models ------------------------------------------------------------------------------------------------
    @cached_property
    def model(self) -> DiffusionModel:
        """The pretrained eps_theta."""
        return load_diffusion(self.diffusion, device=self.device)

    @cached_property
    def clip(self) -> CLIP:
        """The CLIP whose losses guide fine-tuning (Eq. 8, 9) and whose S_dir evaluates it (Eq. 30)."""
        return load_clip(self.clip_name, device=self.device)

    @cached_property
    def identity(self) -> IdentityTerm | None:
        """The face-identity term of Eq. 11 (``1 - cos`` of face embeddings), or None where there is none."""
        return self._load_identity()

    def _load_identity(self) -> IdentityTerm | None:
        return None

    @property
    def identity_note(self) -> str:
        """What the identity term is here, in one sentence."""
        return "no face-identity term in this world: lambda_ID is 0 (Eq. 11 keeps its L1 term)"

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # --- recipes and settings ----------------------------------------------------------------------------------
    @property
    def recipes(self) -> list[Recipe]:
        """The editing recipes of this world's domain."""
        return recipes_for(self.recipe_set)

    def recipe(self, name: str) -> Recipe:
        """The recipe ``name`` of this world's domain (Table 5 or a plug-in's); the chapters use face recipes
        (angry, red hair, zombie), so they run in the face worlds."""
        return get_recipe(self.recipe_set, name)

    def size(self, knob: str) -> int:
        """A batch size chapters scale by (``"show"``, ``"eval"``, ``"samples"``, ``"table"``, ``"edit"``)."""
        if knob not in self.settings.sizes:
            raise ValueError(f"unknown size {knob!r}; this world has {sorted(self.settings.sizes)}")
        return self.settings.sizes[knob]

    def budget(self, chapter: str) -> str:
        """A chapter's cost in this world (:func:`dclip.budget.chapter_budget`)."""
        from dclip.budget import chapter_budget

        return chapter_budget(chapter, self)

    def describe(self) -> str:
        """One line for a chapter's first cell: the world, its models and the paper's settings it uses."""
        s = self.settings
        return (
            f"dclip world: {self.name} ({self.diffusion} DDPM, CLIP {self.clip_name}) on {self.device}; "
            f"N = {s.n_train}, (S_for, S_gen) = {s.train_steps} to fine-tune, {s.test_steps} to edit"
        )

    # --- images ------------------------------------------------------------------------------------------------
    # The public methods check their arguments (a count is an integer >= 1) and call the subclass's ``_...``.
    def training_images(self, n: int | None = None) -> torch.Tensor:
        """The N images of Alg. 1, [-1, 1] (N, 3, S, S); ``n`` None: the world's N."""
        return self._training_images(self.settings.n_train if n is None else _count(n))

    def test_images(self, n: int, *, neutral_for: str | None = None) -> torch.Tensor:
        """``n`` held-out inputs, never training images; ``neutral_for`` a recipe name: inputs that do not show its
        target already, where the world can tell."""
        if neutral_for is not None:
            self.recipe(neutral_for)  # an unknown recipe is a clear error
        return self._test_images(_count(n), neutral_for=neutral_for)

    def unseen_domain_images(self, n: int) -> torch.Tensor:
        """Inputs from outside the model's training domain (Alg. 4)."""
        return self._unseen_domain_images(_count(n))

    def stroke_images(self, n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(stroke paintings, the images they depict) for stroke-to-image (Alg. 4)."""
        check_int(seed, "seed", minimum=0)
        return self._stroke_images(_count(n), seed=seed)

    def counterfactuals(self, n: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Ground-truth edits: ``{change: (sources, the same images with only that change)}``; empty where the world
        cannot render an image twice with one attribute changed (real photographs)."""
        return self._counterfactuals(_count(n))

    def _training_images(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def _test_images(self, n: int, *, neutral_for: str | None) -> torch.Tensor:
        raise NotImplementedError

    def _unseen_domain_images(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def _stroke_images(self, n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _counterfactuals(self, n: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {}

    # --- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self, source: torch.Tensor, edited: torch.Tensor, recipe: str | None = None) -> dict[str, float]:
        """Every metric of :attr:`measures` for edits of ``source`` (``recipe`` None: only what needs no target).

        Both are [-1, 1] images; an edit is clamped to [-1, 1] (few-step DDIM overshoots by a little; beyond
        :data:`EDIT_OVERSHOOT`, with a warning); a non-finite edit or one in another range ([0, 255]) is a
        ``ValueError``."""
        from dclip.ddim import check_batch, check_image
        from dclip.metrics import identity_similarity, manipulation_metrics

        check_image(source, "source")
        check_batch(edited, "edited")
        lo, hi = float(edited.min()), float(edited.max())
        if lo >= -0.5 and hi > 2:
            raise ValueError(
                f"edited must have values in [-1, 1], got [{lo:.3f}, {hi:.3f}] "
                "(it looks like [0, 255]: use x / 127.5 - 1)"
            )
        if lo < -1 - EDIT_OVERSHOOT or hi > 1 + EDIT_OVERSHOOT:
            warnings.warn(
                f"edited has values in [{lo:.3g}, {hi:.3g}], beyond [-1, 1] by more than a few-step DDIM overshoot "
                "(the generation was unstable): they are clamped to [-1, 1] for the metrics",
                stacklevel=2,
            )
        check_image(edited.clamp(-1, 1), "edited")  # a [0, 1] edit is refused as any [0, 1] image is
        if source.shape != edited.shape:
            raise ValueError(f"source {tuple(source.shape)} and edited {tuple(edited.shape)} must have the same shape")
        source, edited = source.to(self.device), edited.to(self.device).clamp(-1, 1)
        if recipe is None:
            out = {"identity": identity_similarity(edited, source, self._identity_metric())}
        else:
            r = self.recipe(recipe)
            out = manipulation_metrics(self.clip, source, edited, r.target, r.reference, self._identity_metric())
        out.update(self._change_metrics(source, edited))
        out.update(self._judge(source, edited, recipe))
        ordered = [k for k in METRICS if k in self.measures] + [k for k in out if k not in METRICS]
        return {k: out[k] for k in ordered if k in out}

    def _identity_metric(self) -> IdentityTerm | None:
        """The identity term the identity metric uses (None: the documented low-pass stand-in)."""
        return self.identity

    def _change_metrics(self, source: torch.Tensor, edited: torch.Tensor) -> dict[str, float]:
        return {}

    def _judge(self, source: torch.Tensor, edited: torch.Tensor, recipe: str | None) -> dict[str, float]:
        """Metrics from an independent referee of the edit (a classifier that knows the true attributes); none by
        default."""
        return {}

    def unmeasured(self) -> dict[str, str]:
        """The metrics of :data:`METRICS` this world cannot compute, each with the reason."""
        return {k: self.why_not.get(k, "not available in this world") for k in METRICS if k not in self.measures}

    def say_unmeasured(self) -> None:
        """Print, once, what this world cannot measure and why (instead of printing nan)."""
        for k, why in self.unmeasured().items():
            print(f"not measured in the {self.name} world: {k} ({why})")


def format_scores(scores: dict[str, float], keys: tuple[str, ...] | None = None) -> str:
    """``"s_dir 0.31, identity 0.92, ..."``: the measured ``keys`` (default all) of ``scores``, two decimals."""
    return ", ".join(f"{k} {scores[k]:.2f}" for k in (keys or scores) if k in scores)


def world_names() -> list[str]:
    """The names :func:`world` takes."""
    return sorted(WORLDS) + sorted(ALIASES)


def _default() -> str:
    """Real with a CUDA GPU and the real weights cached or the hub reachable, else the offline world."""
    offline = registry.offline_world()[0]
    if not torch.cuda.is_available():
        return offline
    from huggingface_hub import try_to_load_from_cache

    from dclip import network
    from dclip.models import DIFFUSION_MODELS

    real = ALIASES["real"]
    cached = try_to_load_from_cache(DIFFUSION_MODELS[WORLDS[real]["diffusion"]]["repo"], "config.json")
    return real if isinstance(cached, str) or network.reachable() else offline


def world_name(name: str | None = None) -> str:
    """The name of the world :func:`world` would build, without loading anything: ``name``, else ``$DCLIP_WORLD``
    (or ``$DCLIP_PROFILE``), else real on a CUDA GPU with reachable or cached weights, else the offline world."""
    source = "name"
    if not name:
        source = "DCLIP_WORLD" if os.environ.get("DCLIP_WORLD") else "DCLIP_PROFILE"
        name = os.environ.get("DCLIP_WORLD") or os.environ.get("DCLIP_PROFILE") or _default()
    if not isinstance(name, str):
        raise ValueError(f"a world name is a string, got {type(name).__name__}: use one of {world_names()}")
    name = ALIASES.get(name, name)
    if name not in world_names():
        where = "" if source == "name" else f" ({source}={os.environ.get(source)!r})"
        raise ValueError(f"unknown world {name!r}{where}: use one of {world_names()}")
    return name


def world(name: str | None = None, *, device: str | None = None) -> World:
    """The world to run: ``name``, else ``$DCLIP_WORLD`` (or ``$DCLIP_PROFILE``), else the real CelebA-HQ world on a
    CUDA GPU with reachable or cached weights, else the offline world (:func:`dclip.registry.offline_world`).
    Names: :func:`world_names`."""
    name = world_name(name)
    entry = WORLDS[name]
    owner = name if isinstance(entry["settings"], dict) else entry["settings"]
    return registry.resolve(entry["class"])(
        name,
        diffusion=entry["diffusion"],
        recipes=entry["recipes"],
        clip=entry["clip"] or registry.offline_world()[1]["clip"],
        settings=Settings.from_dict(WORLDS[owner]["settings"]),
        settings_name=owner,
        device=device,
    )
