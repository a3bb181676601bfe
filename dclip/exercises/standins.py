"""Stand-ins that make the checks (and the package's tests) fast and download-free: a CLIP (a fixed random conv
encoder), noise predictors in the role of diffusers' UNet2DModel (a tiny random conv net, a nearly exact Gaussian
one, a wavy closed form) and plain SGD. All float64 by default, for 8 x 8 images."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from types import SimpleNamespace

import torch
from torch.nn import functional as F

from dclip.exercises.harness import generator, per_image
from dclip.schedule import Schedule
from dclip.toy import GaussianEps


class ToyCLIP:
    """A stand-in CLIP (dimension 8), the one of the checks and of the package's tests: a fixed random conv
    encoder for images, a seeded random unit vector for each text; its embeddings are normalised, as CLIP's are.
    ``linear=True`` reads the image embedding straight off 8 pixels (``x[:, 0, 0, :8]``), so that a test can place
    a known ``Delta I``. Not a torch module: ``cache_name`` names it in fine-tuning cache keys."""

    def __init__(self, seed: int = 0, *, dtype: torch.dtype = torch.float64, linear: bool = False):
        self.weight = (torch.randn(8, 3, 3, 3, generator=generator(seed), dtype=torch.float64) * 0.5).to(dtype)
        self.linear = linear
        self.cache_name = f"toyclip[seed={seed}, linear={linear}, {dtype}]"

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear:
            return x[:, 0, 0, :8]
        return F.normalize(torch.tanh(F.conv2d(x, self.weight.to(x), stride=2, padding=1)).mean((2, 3)), dim=-1)

    def encode_text(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        codes = [torch.randn(8, generator=generator(zlib.crc32(t.encode())), dtype=torch.float64) for t in texts]
        return F.normalize(torch.stack(codes), dim=-1).to(self.weight.dtype)


class TinyUNet(torch.nn.Module):
    """A tiny time-conditioned conv noise predictor (float64), in the role of diffusers' UNet2DModel (it returns
    an object with ``.sample``)."""

    def __init__(self, g: torch.Generator):
        super().__init__()

        def weight(*shape: int, scale: float) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64) * scale)

        self.conv_in, self.time = weight(8, 3, 3, 3, scale=0.4), weight(8, scale=1.0)
        self.conv_out = weight(3, 8, 3, 3, scale=0.3)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> SimpleNamespace:
        t = per_image(torch.as_tensor(t, dtype=x.dtype, device=x.device)) / 1000
        h = torch.tanh(F.conv2d(x, self.conv_in, padding=1) + self.time.reshape(1, -1, 1, 1) * t)
        return SimpleNamespace(sample=F.conv2d(h, self.conv_out, padding=1))


class SGD:
    """Plain SGD, ``p <- p - lr * p.grad``, with torch.optim's ``zero_grad()`` and ``step()`` (a torch optimizer's
    first use imports torch._dynamo, seconds that a check need not cost)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float):
        self.params, self.lr = list(params), lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.sub_(self.lr * p.grad)


def wavy_eps(x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """A nonlinear closed-form noise predictor for the mixing check."""
    return torch.sin(2 * x + per_image(torch.as_tensor(t, dtype=x.dtype)) / 100)


class GaussianUNet(torch.nn.Module):
    """Nearly the exact noise predictor of Gaussian data (:class:`dclip.toy.GaussianEps`, plus a small
    nonlinear term), in the role of diffusers' UNet2DModel: generation from it gives images of mean ``mu`` and
    spread ``s``, mostly inside [-1, 1], so that a clamp changes a few values, not all."""

    def __init__(self, mu: float, s: float, schedule: Schedule):
        super().__init__()
        self.exact = GaussianEps(mu, s, schedule)
        self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64), requires_grad=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> SimpleNamespace:
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        return SimpleNamespace(sample=self.scale * self.exact(x, t) + 0.05 * torch.sin(3 * x))
