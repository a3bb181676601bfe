"""dclip: DiffusionCLIP (Kim, Kwon, Ye, CVPR 2022), taught step by step.

The math (schedules, DDPM, DDIM inversion and generation, noise combination) takes any noise predictor
``eps(x, t)``; a world (``dclip.world()``) gives a chapter its models, images, settings and metrics: the real
pretrained models on a GPU, or an offline world a plug-in registers (:mod:`dclip.registry`), behind one API.

The names below are imported on first use (PEP 562), so ``import dclip.colab`` or ``import dclip.cache`` costs
no torch import: Colab's set-up cell sets the cache locations before anything reads them.
"""

from __future__ import annotations

import importlib

#: Each public name and the module that defines it.
_HOMES = {
    "CLIP": "dclip.clip",
    "load_clip": "dclip.clip",
    "ddim_generate": "dclip.ddim",
    "ddim_invert": "dclip.ddim",
    "ddim_step": "dclip.ddim",
    "predict_x0": "dclip.ddim",
    "reconstruct": "dclip.ddim",
    "ddpm_loss": "dclip.ddpm",
    "ddpm_sample": "dclip.ddpm",
    "ddpm_step": "dclip.ddpm",
    "q_sample": "dclip.ddpm",
    "load_image": "dclip.images",
    "save_images": "dclip.images",
    "to_pil": "dclip.images",
    "DiffusionModel": "dclip.models",
    "ModelNotAvailableError": "dclip.hub",
    "load_diffusion": "dclip.models",
    "mix_noise_predictors": "dclip.noise_combination",
    "transition_gammas": "dclip.noise_combination",
    "plot_curves": "dclip.plotting",
    "show_images": "dclip.plotting",
    "get_recipe": "dclip.recipes",
    "recipes_for": "dclip.recipes",
    "Schedule": "dclip.schedule",
    "TimeGrid": "dclip.schedule",
    "time_sequence": "dclip.schedule",
    "World": "dclip.worlds",
    "format_scores": "dclip.worlds",
    "world": "dclip.worlds",
}
__all__ = sorted(_HOMES, key=str.lower)


def __getattr__(name: str) -> object:
    """A public name from its module (:data:`_HOMES`), or a submodule (``dclip.exercises``), imported on first use;
    ``__version__`` is the installed package's (:func:`dclip.version.package_version`)."""
    if name == "__version__":
        from dclip.version import package_version

        return package_version()
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'dclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
