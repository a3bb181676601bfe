"""The diffusion model zoo: one way in, ``load_diffusion(name)``, for the real 256x256 DDPMs and the plug-ins' models.

Names and their sources are data (``configs/diffusion_models.json`` and the plug-ins' entries, both in
:mod:`dclip.registry`). A name may also be a local folder in diffusers layout, or a checkpoint file in the
ermongroup/ddim layout (the authors' released CelebA-HQ model and their fine-tuned checkpoints), converted on load
into diffusers' ``UNet2DModel`` (:mod:`dclip.convert`); hub downloads are :mod:`dclip.hub`'s.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from dclip import registry
from dclip.budget import record
from dclip.convert import unet_from_ddim_checkpoint
from dclip.device import default_device
from dclip.hub import hub_file, unet_from_pretrained
from dclip.schedule import Schedule

#: Every diffusion model by name: the core's table and the plug-ins' entries (:func:`dclip.registry.table`).
DIFFUSION_MODELS = registry.table("diffusion")


class DiffusionModel(nn.Module):
    """A noise predictor ``eps_theta(x_t, t)`` with its schedule and image size: what :mod:`dclip.ddim` takes.

    ``model(x, t)`` with ``x`` (N, 3, H, W) and ``t`` a (N,) long tensor returns eps (N, 3, H, W).
    """

    def __init__(self, unet: nn.Module, schedule: Schedule, image_size: int, name: str):
        super().__init__()
        self.unet, self.schedule, self.image_size, self.name = unet, schedule, image_size, name
        #: run the UNet under autocast in this dtype (fp16 on a T4, bf16 on newer GPUs); None: the weights' dtype
        self.autocast_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dtype = next(self.unet.parameters()).dtype
        count_backward = record(x)  # before the call: a checkpoint's recomputation may stop inside the UNet
        # no autocast block at all when unset: a disabled one would switch off an enclosing autocast (fine-tuning's)
        context = nullcontext() if self.autocast_dtype is None else torch.autocast(x.device.type, self.autocast_dtype)
        with context:
            eps = self.unet(x.to(dtype), t).sample.to(x.dtype)
        count_backward(eps)
        return eps

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_images(self, x: torch.Tensor) -> None:
        """Raise a clear error unless ``x`` is a batch of images of this model's size in [-1, 1]."""
        from dclip.ddim import check_image

        check_image(x)
        if tuple(x.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(
                f"model {self.name!r} takes (N, 3, {self.image_size}, {self.image_size}) images, got "
                f"{tuple(x.shape)}; resize with dclip.load_image(path, size={self.image_size})"
            )


def load_diffusion(
    name: str, device: str | torch.device | None = None, dtype: torch.dtype | None = None, compile: bool = False
) -> DiffusionModel:
    """A pretrained DDPM by name, as a :class:`DiffusionModel` on ``device`` (default: CUDA, MPS, else CPU).

    Names: ``celeba-hq``, ``church``, ``bedroom``, ``cat`` (google/ddpm-*-256), ``celeba-hq-sdedit`` (the
    checkpoint the paper used), the plug-ins' models (:data:`DIFFUSION_MODELS`); or a local diffusers folder
    or a ddim-layout checkpoint file (256x256 CelebA-HQ architecture). ``dtype=torch.float16`` halves memory on
    a GPU; ``compile=True`` wraps the UNet in ``torch.compile`` (faster repeated calls after a slow first one).
    An entry with ``"cpu_memory_format": "channels_last"`` (the tiny world's) keeps its UNet channels-last on a
    CPU, where that layout's convolutions are measurably faster (``benchmarks/cpu.py``).
    Raises :class:`dclip.hub.ModelNotAvailableError`
    offline without cached weights, and ``ValueError`` for an unknown name.
    """
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    entry = DIFFUSION_MODELS.get(name)
    if entry is None and not Path(name).exists():
        raise ValueError(
            f"unknown diffusion model {name!r}: use one of {sorted(DIFFUSION_MODELS)}, "
            "a local diffusers folder, or a ddim-layout checkpoint file"
        )
    if entry is None:
        source = Path(name)
        unet = (
            unet_from_pretrained(name, name)
            if source.is_dir()
            else unet_from_ddim_checkpoint(source, DIFFUSION_MODELS["celeba-hq-sdedit"]["unet"])
        )
        entry = {"schedule": DIFFUSION_MODELS["celeba-hq"]["schedule"]}
    elif entry["source"] == "plugin":
        unet = registry.resolve(entry["unet"])()
    elif entry["source"] == "random":  # an architecture with seeded random weights (the smoke world)
        from diffusers import UNet2DModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(entry["seed"])
            unet = UNet2DModel(**entry["unet"])
    elif entry["source"] == "ddim-checkpoint":
        unet = unet_from_ddim_checkpoint(hub_file(name, entry["repo"], entry["file"]), entry["unet"])
    else:
        unet = unet_from_pretrained(name, entry["repo"])
    schedule = Schedule.linear(**entry["schedule"])
    model = DiffusionModel(unet, schedule, int(unet.config.sample_size), name)
    model.eval().requires_grad_(False)
    model = model.to(device=device or default_device(), dtype=dtype)
    if model.device.type == "cpu" and entry.get("cpu_memory_format") == "channels_last":
        model.unet.to(memory_format=torch.channels_last)  # the entry's measured faster layout (benchmarks/cpu.py)
    if compile:
        model.unet = torch.compile(model.unet)
    return model
