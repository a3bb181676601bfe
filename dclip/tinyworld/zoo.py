"""The tiny world's models from package data: their configs (``configs/*.json``), their weights (``weights/``)
and the loaders the zoo reaches by name (``load_diffusion("tinyfaces")``, ``load_clip("tinyclip")``, registered by
:mod:`dclip.tinyworld.plugin`), so the core never imports the tiny world.

Training (:mod:`dclip.tinyworld.train`) reads the same configs and writes the same weights; nothing here imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from dclip.hub import ModelNotAvailableError

if TYPE_CHECKING:
    from torch import nn

CONFIGS = Path(__file__).parent / "configs"
WEIGHTS = Path(__file__).parent / "weights"

#: The trained models: ``python -m dclip.tinyworld.train <command>`` -> the config and weights name it makes.
MODELS = {"ddpm": "tinyfaces", "clip": "tinyclip", "judge": "judge", "faceid": "faceid"}


def load_config(name: str) -> dict:
    """The config ``configs/<name>.json`` of a model: its architecture and its training settings."""
    return json.loads((CONFIGS / f"{name}.json").read_text())


def weights_file(name: str) -> Path:
    """The shipped weights of model ``name``; a :class:`ModelNotAvailableError` that says how to train them when
    they are missing."""
    path = WEIGHTS / f"{name}.safetensors"
    if not path.exists():
        command = next(c for c, n in MODELS.items() if n == name)
        raise ModelNotAvailableError(
            f"the tiny world's {name} weights are missing ({path}); train them with "
            f"`python -m dclip.tinyworld.train {command}`"
        )
    return path


def load_trained(net: nn.Module, name: str, device: str = "cpu") -> nn.Module:
    """``net`` (the architecture of config ``name``) with the shipped weights (fp16 ones as float32), in eval mode,
    without gradients, on ``device``."""
    from safetensors.torch import load_file

    net.load_state_dict({k: v.float() for k, v in load_file(str(weights_file(name))).items()})
    return net.eval().requires_grad_(False).to(device)


def tinyfaces_unet() -> nn.Module:
    """The tiny world's 2.7M-parameter DDPM UNet (diffusers ``UNet2DModel``) with its shipped weights."""
    from diffusers import UNet2DModel

    return load_trained(UNet2DModel(**load_config("tinyfaces")["unet"]), "tinyfaces")


def tinyclip_files() -> tuple[Path, Path]:
    """(open_clip config folder, weights file) of the tiny world's CLIP."""
    return CONFIGS / "open_clip", weights_file("tinyclip")
