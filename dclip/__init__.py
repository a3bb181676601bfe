"""dclip: DiffusionCLIP (Kim, Kwon, Ye, CVPR 2022), taught step by step.

The math (schedules, DDPM, DDIM inversion and generation, noise combination) takes any noise predictor
``eps(x, t)``; a world (``dclip.world()``) gives a chapter its models, images, settings and metrics: the real
pretrained models on a GPU, or the offline tiny world (:mod:`dclip.tinyworld`), behind one API.
"""

from dclip.clip import CLIP, load_clip
from dclip.ddim import ddim_generate, ddim_invert, ddim_step, predict_x0, reconstruct
from dclip.ddpm import ddpm_loss, ddpm_sample, ddpm_step, q_sample
from dclip.images import load_image, save_images, to_pil
from dclip.models import DiffusionModel, ModelNotAvailableError, load_diffusion
from dclip.noise_combination import mix_noise_predictors, transition_gammas
from dclip.plotting import plot_curves, show_images
from dclip.recipes import get_recipe, recipes_for
from dclip.schedule import Schedule, time_sequence
from dclip.worlds import World, format_scores, world

__version__ = "0.1.0"
__all__ = [
    "CLIP",
    "DiffusionModel",
    "ModelNotAvailableError",
    "Schedule",
    "ddim_generate",
    "ddim_invert",
    "ddim_step",
    "ddpm_loss",
    "ddpm_sample",
    "ddpm_step",
    "get_recipe",
    "load_clip",
    "load_diffusion",
    "load_image",
    "mix_noise_predictors",
    "plot_curves",
    "predict_x0",
    "show_images",
    "q_sample",
    "recipes_for",
    "reconstruct",
    "save_images",
    "time_sequence",
    "to_pil",
    "transition_gammas",
    "World",
    "format_scores",
    "world",
]
