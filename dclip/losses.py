"""The CLIP losses (Eq. 8, 9), the directional similarity S_dir (Eq. 30) and the identity loss (Eq. 11).

All take images in [-1, 1] (N, 3, H, W) and a :class:`dclip.clip.CLIP`; they are differentiable in the
generated image and return per-batch means (``reduction="none"`` gives one value per image).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from dclip.protocols import TextImageEncoder

#: An identity term ``L_face(x_gen, x0) -> (N,)`` (Eq. 11): 0 for the same identity.
IdentityTerm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_templates(templates: tuple[str, ...]) -> None:
    """Raise a clear ``ValueError`` unless ``templates`` is a non-empty sequence of prompt templates, each with one
    ``{}`` where the text goes: without it target and reference give the same prompt and Delta T (Eq. 9) is zero."""
    if isinstance(templates, str) or not isinstance(templates, (tuple, list)) or not templates:
        raise ValueError(
            f"templates must be a non-empty tuple of strings such as ('a photo of {{}}',), got {templates!r}"
        )
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"each template needs exactly one '{{}}' where the text goes, got {t!r}")
        try:
            t.format("text")
        except (IndexError, KeyError, ValueError) as e:
            raise ValueError(
                f"template {t!r} has other braces than its '{{}}' ({e}): write a literal brace as {{{{"
            ) from None


def text_direction(
    clip: TextImageEncoder, target: str, reference: str, templates: tuple[str, ...] = ("{}",)
) -> torch.Tensor:
    """``Delta T = E_T(y_tar) - E_T(y_ref)`` (Eq. 9), each averaged over prompt ``templates`` and normalised; (D,)."""
    for text, name in ((target, "target"), (reference, "reference")):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the {name} text must be a non-empty string, got {text!r}")
    check_templates(templates)

    def embed(text: str) -> torch.Tensor:
        return F.normalize(clip.encode_text([t.format(text) for t in templates]).mean(0), dim=-1)

    return embed(target) - embed(reference)


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    return x.mean() if reduction == "mean" else x


def global_clip_loss(clip: TextImageEncoder, x_gen: torch.Tensor, target: str, reduction: str = "mean") -> torch.Tensor:
    """Global CLIP loss (Eq. 8): the cosine distance ``1 - cos(E_I(x_gen), E_T(y_tar))``."""
    return _reduce(1 - clip.encode_image(x_gen) @ clip.encode_text([target])[0], reduction)


def directional_similarity(
    clip: TextImageEncoder, x_gen: torch.Tensor, x_ref: torch.Tensor, delta_t: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """S_dir (Eq. 30): ``cos(Delta I, Delta T)`` with ``Delta I = E_I(x_gen) - E_I(x_ref)``; in [-1, 1]."""
    if x_gen.shape != x_ref.shape:
        raise ValueError(f"x_gen {tuple(x_gen.shape)} and x_ref {tuple(x_ref.shape)} must have the same shape")
    delta_i = clip.encode_image(x_gen) - clip.encode_image(x_ref)
    return _reduce(F.cosine_similarity(delta_i, delta_t.to(delta_i)[None], dim=-1), reduction)


#: The forms of the directional loss as a function of ``cos = cos(Delta I, Delta T)``: the paper's Eq. 9 and the
#: authors' code, which trains on ``-log((1 + cos) / 2)`` (also 0 at cos = 1; its pull weakens as cos grows).
DIRECTION_FORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "cosine": lambda cos: 1 - cos,
    "log": lambda cos: -torch.log((1 + cos).clamp_min(1e-6) / 2),
}


def directional_clip_loss(
    clip: TextImageEncoder,
    x_gen: torch.Tensor,
    x_ref: torch.Tensor,
    delta_t: torch.Tensor,
    reduction: str = "mean",
    form: str = "cosine",
) -> torch.Tensor:
    """Directional CLIP loss (Eq. 9): ``1 - cos(Delta I, Delta T)``; ``form="log"`` gives the authors' code's
    ``-log((1 + cos) / 2)`` (:data:`DIRECTION_FORMS`)."""
    if form not in DIRECTION_FORMS:
        raise ValueError(f"unknown form {form!r} of the directional loss; use one of {sorted(DIRECTION_FORMS)}")
    cos = directional_similarity(clip, x_gen, x_ref, delta_t, reduction="none")
    return _reduce(DIRECTION_FORMS[form](cos), reduction)


def augment_pairs(
    x_gen: torch.Tensor, x_ref: torch.Tensor, views: int, shift: int = 2, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``views`` randomly shifted (up to ``shift`` pixels, edge-padded) and flipped copies of each pair, the same
    transform for ``x_gen`` and ``x_ref``: averaging a CLIP loss over them keeps its gradient from exploiting
    pixel-exact adversarial patterns (a common remedy in CLIP-guided editing). Returns (views*N, ...) each."""
    n, _, h, w = x_gen.shape
    pad = (shift, shift, shift, shift)
    g_pad, r_pad = F.pad(x_gen, pad, mode="replicate"), F.pad(x_ref, pad, mode="replicate")
    outs_g, outs_r = [], []
    for _ in range(views):
        dy, dx = (int(v) for v in torch.randint(0, 2 * shift + 1, (2,), generator=generator))
        g, r = g_pad[..., dy : dy + h, dx : dx + w], r_pad[..., dy : dy + h, dx : dx + w]
        if torch.rand((), generator=generator) < 0.5:
            g, r = g.flip(-1), r.flip(-1)
        outs_g.append(g)
        outs_r.append(r)
    return torch.cat(outs_g), torch.cat(outs_r)


def identity_loss(
    x_gen: torch.Tensor,
    x0: torch.Tensor,
    lambda_l1: float,
    lambda_face: float = 0.0,
    face: IdentityTerm | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Identity loss (Eq. 11): ``lambda_L1 |x0 - x_gen| + lambda_face L_face(x_gen, x0)``.

    The L1 term is the mean absolute difference per image. A ``lambda_face > 0`` needs an identity term
    ``face`` (:func:`dclip.identity.arcface_identity` on real faces, a world's ``identity``; the registered ones
    are ``dclip.registry.table("identity")``).
    """
    if x_gen.shape != x0.shape:
        raise ValueError(f"x_gen {tuple(x_gen.shape)} and x0 {tuple(x0.shape)} must have the same shape")
    loss = lambda_l1 * (x_gen - x0).abs().flatten(1).mean(1)
    if lambda_face > 0:
        if face is None:
            raise ValueError(
                "lambda_ID > 0 needs an identity term: pass face=dclip.identity.arcface_identity() for real faces or "
                "face=world.identity (the registered ones: dclip.registry.table('identity')), or set lambda_ID = 0"
            )
        loss = loss + lambda_face * face(x_gen, x0)
    return _reduce(loss, reduction)
