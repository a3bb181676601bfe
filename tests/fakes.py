"""Small stand-ins shared by the tests: the package's stand-in CLIP in float32 and a small random UNet2DModel
(16 x 16)."""

import torch
from diffusers import UNet2DModel

from dclip.exercises.standins import ToyCLIP
from dclip.models import DiffusionModel
from dclip.schedule import Schedule


def FakeCLIP(*, linear: bool = False) -> ToyCLIP:  # noqa: N802 (it stands for the class it makes)
    """The package's stand-in CLIP (:class:`dclip.exercises.standins.ToyCLIP`) in float32, as the models are."""
    return ToyCLIP(0, dtype=torch.float32, linear=linear)


def small_unet(seed: int = 0) -> UNet2DModel:
    """A random UNet2DModel for 16 x 16 images with one attention level (the architecture family of the real ones)."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()


def small_model(seed: int = 0) -> DiffusionModel:
    """:func:`small_unet` as a frozen DiffusionModel named ``small-<seed>`` on the linear schedule."""
    return DiffusionModel(small_unet(seed), Schedule.linear(), 16, f"small-{seed}").eval().requires_grad_(False)
