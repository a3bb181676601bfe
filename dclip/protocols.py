"""What the method asks of the models it is given: the small interfaces the method floor is typed against.

The losses, fine-tuning, editing and baselines take any object with these members: the machinery's
:class:`dclip.models.DiffusionModel` and :class:`dclip.clip.CLIP`, a plug-in's models, or a stand-in
(:class:`dclip.exercises.standins.ToyCLIP`). Nothing here imports the machinery.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from dclip.schedule import Schedule


@runtime_checkable
class TextImageEncoder(Protocol):
    """A joint text-image embedding E_I, E_T (CLIP, Eq. 8/9): unit vectors of images and of texts in one space.

    ``encode_image(x)``: images (N, 3, H, W) in [-1, 1] -> (N, D), differentiable in ``x``;
    ``encode_text(texts)``: a text or a list of texts -> (len, D)."""

    def encode_image(self, x: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, texts: str | list[str]) -> torch.Tensor: ...


@runtime_checkable
class ScheduledNoisePredictor(Protocol):
    """A trainable noise predictor eps_theta(x_t, t) (a torch module) with the schedule it was trained on.

    ``model(x, t)``: x (N, 3, S, S), t a (N,) long tensor -> eps of the shape of x. ``check_images(x)`` raises a
    clear error unless x is a batch of its (3, S, S) images in [-1, 1]; ``autocast_dtype`` is the dtype its
    forward passes run in on a GPU (None: its weights')."""

    schedule: Schedule
    image_size: int
    name: str
    autocast_dtype: torch.dtype | None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    @property
    def device(self) -> torch.device: ...

    def check_images(self, x: torch.Tensor) -> None: ...
