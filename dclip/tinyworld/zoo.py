"""The tiny world's DDPM and CLIP as entries of the model zoo: ``load_diffusion("tinyfaces")`` and
``load_clip("tinyclip")`` reach these functions by name (``configs/diffusion_models.json``, ``CLIP_PLUGINS``),
so the zoo never imports the tiny world."""

from __future__ import annotations

from pathlib import Path

from dclip.models import ModelNotAvailableError
from dclip.tinyworld.train import CONFIGS, WEIGHTS, load_config


def _weights(name: str, command: str) -> Path:
    path = WEIGHTS / f"{name}.safetensors"
    if not path.exists():
        raise ModelNotAvailableError(
            f"the tiny world's {name} weights are missing ({path}); train them with "
            f"`python -m dclip.tinyworld.train {command}`"
        )
    return path


def tinyfaces_unet():
    """The tiny world's 2.7M-parameter DDPM UNet (diffusers ``UNet2DModel``) with its shipped weights."""
    from diffusers import UNet2DModel
    from safetensors.torch import load_file

    weights = _weights("tinyfaces", "ddpm")
    unet = UNet2DModel(**load_config("tinyfaces")["unet"])
    unet.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    return unet


def tinyclip_files() -> tuple[Path, Path]:
    """(open_clip config folder, weights file) of the tiny world's CLIP."""
    return CONFIGS / "open_clip", _weights("tinyclip", "clip")
