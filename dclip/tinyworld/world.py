"""The tiny world as a :class:`dclip.worlds.World`: procedural 32x32 faces, the tiny DDPM and CLIP, a low-pass
identity term, and the judge, an independent classifier and segmenter that referees every edit."""

from __future__ import annotations

from functools import cached_property

import torch

from dclip.losses import IdentityTerm
from dclip.metrics import segmentation_consistency
from dclip.tinyworld.faces import ATTRIBUTES, make_faces, make_strokes
from dclip.tinyworld.identity import lowpass_identity
from dclip.tinyworld.judge import RECIPE_TARGETS, judge_edit, judge_faces, load_judge
from dclip.worlds import World

TRAIN_SEED, TEST_SEED, UNSEEN_SEED, STROKE_SEED = 100, 4242, 777, 778


class TinyWorld(World):
    """32x32 procedural faces whose attributes are known, so every edit can be judged."""

    measures = ("s_dir", "identity", "success", "others_kept", "segmentation_consistency")
    why_not = {
        "lpips": "LPIPS's AlexNet was trained on large photographs, not 32x32 faces: the judge measures change here",
        "ssim": "the judge measures what an edit changed here",
    }

    @cached_property
    def judge(self):
        return load_judge(self.device)

    def _load_identity(self) -> IdentityTerm | None:
        return lowpass_identity

    @property
    def identity_note(self) -> str:
        return (
            "identity term: a low-pass image distance standing in for ArcFace (a tiny face's identity is its layout "
            "and colours); the identity metric is its cosine counterpart"
        )

    def _identity_metric(self) -> IdentityTerm | None:
        return None  # dclip.metrics.identity_similarity's low-pass stand-in

    def _judge(self, source: torch.Tensor, edited: torch.Tensor, recipe: str | None) -> dict[str, float]:
        if recipe is None:  # no target: is every attribute and the segmentation kept?
            before, after = judge_faces(self.judge, source), judge_faces(self.judge, edited)
            kept = torch.stack([after[k] == before[k] for k in ATTRIBUTES]).all(0).float().mean().item()
            return {
                "others_kept": kept,
                "segmentation_consistency": segmentation_consistency(after["parts"], before["parts"]),
            }
        return judge_edit(source, edited, *RECIPE_TARGETS[recipe], judge=self.judge)

    def _training_images(self, n: int | None = None) -> torch.Tensor:
        """N in-domain faces (seed 100), never shown as test images."""
        return make_faces(n, seed=TRAIN_SEED, split="in-domain").images

    def _test_images(self, n: int, *, neutral_for: str | None = None) -> torch.Tensor:
        """Held-out in-domain faces (seed 4242); ``neutral_for`` a recipe: faces that do not show its target
        (an angry edit then starts from faces that are not angry)."""
        fixed = {}
        if neutral_for is not None:
            attribute, value = RECIPE_TARGETS[self.recipe(neutral_for).name]
            choices = [v for v in ATTRIBUTES[attribute] if v != value]
            fixed[attribute] = "neutral" if "neutral" in choices else choices[0]
        return make_faces(n, seed=TEST_SEED, split="in-domain", **fixed).images

    def _unseen_domain_images(self, n: int) -> torch.Tensor:
        """Faces with zombie skin or grey hair, which the DDPM never saw."""
        return make_faces(n, seed=UNSEEN_SEED, split="out-of-domain").images

    def _stroke_images(self, n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        strokes, faces = make_strokes(n, seed=STROKE_SEED + seed, split="in-domain")
        return strokes, faces.images

    def _counterfactuals(self, n: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        same = dict(n=n, seed=TEST_SEED, split="in-domain")
        source = make_faces(**same).images
        return {
            "expression angry": (source, make_faces(**same, expression="angry").images),
            "hair red": (source, make_faces(**same, hair="red").images),
            "beard": (source, make_faces(**same, beard="beard").images),
        }
