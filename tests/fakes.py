"""Small stand-ins shared by the tests: a duck-typed CLIP and a small random UNet2DModel (16 x 16)."""

import torch
from diffusers import UNet2DModel
from torch.nn import functional as F

from dclip.models import DiffusionModel
from dclip.schedule import Schedule


class FakeCLIP:
    """A duck-typed CLIP: a fixed random conv encoder for images, a lookup table for texts (dimension 8)."""

    def __init__(self, linear: bool = False):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        ).requires_grad_(False)
        self.linear = linear
        self.table: dict[str, torch.Tensor] = {}
        self.cache_name = f"fake-clip[linear={linear}]"  # its name in fine-tuning cache keys (not a torch module)

    def encode_image(self, x):
        return x[:, 0, 0, :8] if self.linear else F.normalize(self.net(x), dim=-1)

    def encode_text(self, texts):
        for t in texts:
            if t not in self.table:
                self.table[t] = F.normalize(torch.randn(8, generator=torch.Generator().manual_seed(len(t))), dim=0)
        return torch.stack([self.table[t] for t in texts])


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
