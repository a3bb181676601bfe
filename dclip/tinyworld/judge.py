"""The judge: a small supervised CNN that classifies every attribute of a tiny-world face and segments its parts.

It is the tiny world's stand-in for the paper's face parser and attribute evaluators, and the
independent referee of every edit: an edit is never judged by the CLIP that guided it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dclip.metrics import segmentation_consistency
from dclip.tinyworld.faces import ATTRIBUTES, PARTS


def conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """Two 3 x 3 convolutions (the first with ``stride``), each with GroupNorm and SiLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, 1, 1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
    )


class Judge(nn.Module):
    """Encoder (32 -> 16 -> 8) with one classification head per attribute and a U-Net-style segmentation decoder.

    Input: images in [-1, 1], (N, 3, 32, 32). Output: ``{"skin": logits, ..., "parts": (N, len(PARTS), 32, 32)}``.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = conv_block(3, w), conv_block(w, 2 * w, 2), conv_block(2 * w, 4 * w, 2)
        self.heads = nn.ModuleDict({k: nn.Linear(4 * w + 2 * w, len(v)) for k, v in ATTRIBUTES.items()})
        self.dec2 = conv_block(4 * w + 2 * w, 2 * w)
        self.dec1 = conv_block(2 * w + w, w)
        self.seg = nn.Conv2d(w, len(PARTS), 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h1 = self.enc1(x)
        h2 = self.enc2(h1)
        h3 = self.enc3(h2)
        pooled = torch.cat([h3.mean((2, 3)), h2.amax((2, 3))], dim=1)
        out = {k: head(pooled) for k, head in self.heads.items()}
        d2 = self.dec2(torch.cat([F.interpolate(h3, scale_factor=2.0), h2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), h1], 1))
        out["parts"] = self.seg(d1)
        return out


#: The judge's (attribute, value) that each tiny-world recipe (``configs/recipes.json``) should produce.
RECIPE_TARGETS: dict[str, tuple[str, str]] = {
    "angry": ("expression", "angry"),
    "smiling": ("expression", "smiling"),
    "tanned": ("skin", "tanned"),
    "red hair": ("hair", "red"),
    "blond hair": ("hair", "blond"),
    "beard": ("beard", "beard"),
    "grey hair": ("hair", "grey"),
    "zombie": ("skin", "zombie"),
}


@torch.no_grad()
def judge_faces(judge: Judge, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The judge's verdict on ``images`` ([-1, 1], (N, 3, 32, 32)).

    Returns, for each attribute, ``<name>`` (predicted class index, (N,)) and ``<name>_prob`` (its softmax
    probabilities, (N, K)); and ``parts`` (the predicted part map, (N, 32, 32)).
    """
    if images.dim() != 4 or images.shape[1:] != (3, 32, 32):
        raise ValueError(f"the judge takes (N, 3, 32, 32) tiny-world images, got {tuple(images.shape)}")
    judge.eval()
    device = next(judge.parameters()).device
    chunks = [judge(chunk.to(device).float()) for chunk in images.split(batch_size)]
    out: dict[str, torch.Tensor] = {}
    for key in chunks[0]:
        logits = torch.cat([c[key] for c in chunks]).cpu()
        out[key] = logits.argmax(1)
        if key != "parts":
            out[f"{key}_prob"] = logits.softmax(1)
    return out


def load_judge(device: str | torch.device = "cpu") -> Judge:
    """The trained judge from package data."""
    from dclip.tinyworld.zoo import load_config, load_trained

    return load_trained(Judge(**load_config("judge")["model"]), "judge", device)


def judge_edit(source: torch.Tensor, edited: torch.Tensor, attribute: str, value: str, judge=None) -> dict[str, float]:
    """The tiny world's referee for an edit: how often the judge (an independent classifier, never the guiding
    CLIP) sees ``attribute = value`` in the edits, how often it saw it in the sources, how often every other
    attribute is kept, and the segmentation consistency."""
    if attribute not in ATTRIBUTES or value not in ATTRIBUTES[attribute]:
        raise ValueError(f"unknown attribute value {attribute}={value!r}; known: {ATTRIBUTES}")
    judge = judge or load_judge()
    before, after = judge_faces(judge, source.clamp(-1, 1)), judge_faces(judge, edited.clamp(-1, 1))
    target = ATTRIBUTES[attribute].index(value)
    out = {
        "success": (after[attribute] == target).float().mean().item(),
        "success_before": (before[attribute] == target).float().mean().item(),
    }
    others = [k for k in ATTRIBUTES if k != attribute]
    out["others_kept"] = torch.stack([after[k] == before[k] for k in others]).all(0).float().mean().item()
    out.update({f"kept_{k}": (after[k] == before[k]).float().mean().item() for k in others})
    out["segmentation_consistency"] = segmentation_consistency(after["parts"], before["parts"])
    return out
