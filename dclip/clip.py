"""CLIP through open_clip, with the image preprocessing the diffusion side needs: ``load_clip(name)``.

The wrapper takes images straight from the diffusion range [-1, 1] at any resolution and maps them,
differentiably, to CLIP's input size and normalisation, so fine-tuning can backpropagate through it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from dclip import registry
from dclip.device import default_device
from dclip.hub import ModelNotAvailableError, hub_cache, offline_unless_reachable, offline_way_out

#: Short names: (open_clip architecture, pretrained tag). The -quickgelu configs match OpenAI's activation.
CLIP_MODELS: dict[str, tuple[str, str | None]] = {
    "ViT-B-16": ("ViT-B-16-quickgelu", "openai"),
    "ViT-B-32": ("ViT-B-32-quickgelu", "openai"),
}


class CLIP(nn.Module):
    """An open_clip model with differentiable preprocessing from [-1, 1] and cached text embeddings.

    ``encode_image(x)``: x (N, 3, H, W) in [-1, 1] -> normalised embeddings (N, D).
    ``encode_text(texts)``: list of strings -> normalised embeddings (len, D), cached, without gradient.
    """

    def __init__(self, model: nn.Module, tokenizer, name: str):
        super().__init__()
        self.model, self.tokenizer, self.name = model, tokenizer, name
        cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
        size = cfg.get("size", model.visual.image_size)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, torch.Tensor] = {}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> CLIP's input: [0, 1], resized (bicubic, antialiased when shrinking),
        normalised."""
        x = (x.float() + 1) / 2
        if x.shape[-2:] != (self.image_size, self.image_size):
            shrink = x.shape[-1] > self.image_size
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=shrink
            )
        return (x - self.mean) / self.std

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"encode_image takes (N, 3, H, W) images in [-1, 1], got {tuple(x.shape)}")
        return F.normalize(self.model.encode_image(self.preprocess(x.to(self.mean.device))), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text prompts must be non-empty strings, got {t!r}")
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        import warnings  # (local: this method is the only user)

        context = getattr(self.tokenizer, "context_length", None)
        for t in missing if context and hasattr(self.tokenizer, "encode") else []:
            n = len(self.tokenizer.encode(t)) + 2  # with the start and end tokens
            if n > context:
                warnings.warn(
                    f"the prompt {t!r} is {n} tokens long; {self.name} reads only the first {context}, "
                    "the rest is cut off: shorten it",
                    stacklevel=2,
                )
        if missing:
            device = self.mean.device
            emb = F.normalize(self.model.encode_text(self.tokenizer(missing).to(device)).float(), dim=-1)
            self._text_cache.update(zip(missing, emb))
        return torch.stack([self._text_cache[t] for t in texts])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x)


def load_clip(name: str | None = None, device: str | torch.device | None = None, pretrained: str | None = None) -> CLIP:
    """A CLIP by name: ``ViT-B-16``/``ViT-B-32`` (OpenAI weights), a plug-in's CLIP (``registry.table("clip")``,
    each a ``"module:function"`` giving its open_clip config folder and weights file), any open_clip architecture or
    ``hf-hub:`` name, with ``pretrained`` a tag or a local weights file; None: the offline world's CLIP.

    Raises :class:`dclip.hub.ModelNotAvailableError` when weights are neither cached nor downloadable.
    """
    import open_clip

    name = registry.offline_world()[1]["clip"] if name is None else name
    arch, tag = CLIP_MODELS.get(name, (name, None))
    plugins = registry.table("clip")
    if name in plugins:
        configs, weights = registry.resolve(plugins[name])()
        if name not in open_clip.list_models():
            open_clip.add_model_config(configs)
        tag = str(weights)
    tag = pretrained or tag
    if not name.startswith("hf-hub:") and arch not in open_clip.list_models():
        raise ValueError(
            f"unknown CLIP {name!r}: use one of {sorted(CLIP_MODELS)}, an open_clip architecture "
            f"(open_clip.list_models()), or an 'hf-hub:' name"
        )
    is_file = tag is not None and Path(tag).exists()
    if (
        tag is not None
        and not is_file
        and not name.startswith("hf-hub:")
        and tag not in open_clip.list_pretrained_tags_by_model(arch)
    ):
        raise ValueError(
            f"{tag!r} is neither a local weights file nor a pretrained tag of {arch}: "
            f"{open_clip.list_pretrained_tags_by_model(arch)}"
        )
    try:
        with offline_unless_reachable() as offline:
            model = open_clip.create_model(
                name if name.startswith("hf-hub:") else arch,
                pretrained=None if name.startswith("hf-hub:") else tag,
                device="cpu",
            )
    except Exception as e:
        if is_file or not offline:
            raise
        raise ModelNotAvailableError(
            f"cannot load CLIP {name!r} ({arch}, pretrained={tag!r}): the weights are not in the cache "
            f"({hub_cache()}) and the hub cannot be reached ({type(e).__name__}). To fix: download them on a machine "
            f"with internet and copy the cache, pass a local weights file with pretrained=PATH, or use "
            f"{offline_way_out('load_clip', 'clip')}."
        ) from e
    model.eval().requires_grad_(False)
    clip = CLIP(model, open_clip.get_tokenizer(name if name.startswith("hf-hub:") else arch), name)
    return clip.to(device or default_device())
