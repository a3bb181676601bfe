"""Fine-tuning the noise predictor (Alg. 1 and its GPU-efficient variant, Alg. 2) and the latents it starts from.

latents = invert_latents(model, images, t0=500, S_for=40)          # Alg. 1, step 1 (dclip.store caches it)
result = finetune(model, clip, latents, FinetuneConfig("angry face", "face", t0=500))
edited = manipulate(model, result.model, x_t0=latents)             # Alg. 3 (dclip.editing), t0 from the latents
"""

from __future__ import annotations

import copy
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from dclip.ddim import check_image, check_model_batch, ddim_generate, ddim_invert, ddim_step
from dclip.hashing import fingerprint
from dclip.losses import (
    DIRECTION_FORMS,
    IdentityTerm,
    augment_pairs,
    check_templates,
    directional_clip_loss,
    global_clip_loss,
    identity_loss,
    text_direction,
)
from dclip.precision import PRECISIONS, autocast_dtype
from dclip.progress import progress_bar
from dclip.protocols import ScheduledNoisePredictor, TextImageEncoder
from dclip.schedule import PAPER_STEPS, check_int


@dataclass
class Latents:
    """Precomputed pairs (Alg. 1, step 1): images ``x0`` ([-1, 1], (N, 3, H, W)) and their latents ``x_t0``."""

    x0: torch.Tensor
    x_t0: torch.Tensor
    t0: int
    S_for: int

    def __post_init__(self) -> None:
        check_image(self.x0, "Latents.x0")
        check_model_batch(self.x_t0, self.x0.shape[-1], "Latents.x_t0")
        if self.x_t0.shape != self.x0.shape:
            raise ValueError(
                f"Latents.x0 {tuple(self.x0.shape)} and Latents.x_t0 {tuple(self.x_t0.shape)} must have the same "
                "shape: one latent per image"
            )
        check_int(self.t0, "Latents.t0", minimum=1)
        check_int(self.S_for, "Latents.S_for", minimum=1)

    def __len__(self) -> int:
        return self.x0.shape[0]


def invert_latents(
    model: ScheduledNoisePredictor,
    images: torch.Tensor,
    *,
    t0: int,
    S_for: int = PAPER_STEPS.S_for,
    batch_size: int = 64,
    progress: bool = True,
) -> Latents:
    """Invert ``images`` once with the pretrained model (Eq. 12, ``S_for`` steps to ``t0``): the latents that
    fine-tuning reuses for every target text ("recycling", Alg. 1, step 1). :func:`dclip.store.precompute_latents`
    keeps them on disk. Non-finite latents (broken weights) are an error."""
    model.check_images(images)
    check_int(S_for, "S_for", minimum=1)
    grid = model.schedule.grid(t0=t0, S=S_for)
    check_int(batch_size, "batch_size", minimum=1)
    chunks = [
        ddim_invert(model, c, model.schedule, grid=grid, progress=progress)
        for c in images.to(model.device).split(batch_size)
    ]
    x_t0 = torch.cat(chunks).cpu().contiguous()
    if not bool(torch.isfinite(x_t0).all()):
        raise ValueError(
            f"DDIM inversion with model {model.name!r} gave non-finite latents (NaN or inf) from finite images: "
            "the model's weights or outputs are broken; nothing was cached"
        )
    x0 = images.detach().cpu().contiguous()  # laid out as a loaded file is: computed and cached latents act alike
    return Latents(x0, x_t0, grid.t0, grid.S)


CLIP_LOSSES = ("direction", "global")


def _dataclass_repr(obj) -> str:
    shown = [f"{f.name}={getattr(obj, f.name)!r}" for f in obj.__dataclass_fields__.values() if f.repr]
    return f"{type(obj).__name__}({', '.join(shown)})"


@dataclass(repr=False)
class FinetuneConfig:
    """The settings of one fine-tuning run (Eq. 10, Alg. 1/2). Defaults are the paper's."""

    target: str
    reference: str
    t0: int
    S_gen: int = PAPER_STEPS.S_gen
    lambda_l1: float = 0.3
    lambda_id: float = 0.0
    lambda_clip: float = 1.0
    direction_form: str = "cosine"  # "cosine" (Eq. 9) or "log": the authors' code, -log((1 + cos) / 2)
    epochs: int = 1
    batch_size: int = 1
    lr: float = 4e-6
    lr_gamma: float = 1.2  # the learning rate is multiplied by lr_gamma ...
    lr_every: int = 50  # ... every lr_every iterations (batches; Alg. 2's S_gen steps on a batch are one)
    algorithm: int = 1  # 1: backpropagate through all S_gen steps; 2: one step per reverse step (GPU-efficient)
    checkpoint: bool = True  # Alg. 1: recompute each step's activations in backward (memory flat in S_gen)
    recurrent_gradient: bool = True  # Alg. 1: False detaches each step's input x_t (an ablation, see finetune)
    templates: tuple[str, ...] = ("{}",)
    clip_views: int = 0  # > 0: average L_direction over this many shifted/flipped views (augment_pairs)
    precision: str = "auto"  # CUDA forward passes: "auto" (bf16 where supported, else fp16), "bf16", "fp16", "fp32"
    seed: int = 0
    # "direction": Eq. 9, DiffusionCLIP's loss; "global": Eq. 8, 1 - cos(E_I(x_gen), E_T(y_tar)), for comparison
    # (chapter 04). Shown by repr only when not the default, so that the default's repr and cache key stay as before.
    clip_loss: str = field(default="direction", repr=False)

    def __repr__(self) -> str:
        text = _dataclass_repr(self)
        return text if self.clip_loss == "direction" else text[:-1] + f", clip_loss={self.clip_loss!r})"

    def __post_init__(self) -> None:
        for name in ("target", "reference"):
            text = getattr(self, name)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{name} must be a non-empty text, got {text!r}")
        check_int(self.t0, "t0", minimum=1)
        for name in ("epochs", "batch_size", "S_gen", "lr_every"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.clip_views, "clip_views", minimum=0)
        check_int(self.seed, "seed")
        for name in ("lambda_l1", "lambda_id", "lambda_clip", "lr", "lr_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value < np.inf:
                raise ValueError(f"{name}={value!r} must be a finite number >= 0")
        if not self.lr > 0 or not self.lr_gamma > 0:
            raise ValueError(f"lr={self.lr} and lr_gamma={self.lr_gamma} must be > 0")
        check_templates(self.templates)
        if self.S_gen > self.t0 + 1:  # as TimeGrid would, once here so that the cache key is the same
            warnings.warn(f"S_gen={self.S_gen} > t0 + 1 would repeat times: using S_gen={self.t0 + 1}", stacklevel=3)
            self.S_gen = self.t0 + 1
        if self.algorithm not in (1, 2):
            raise ValueError(f"algorithm={self.algorithm}: use 1 (Alg. 1) or 2 (GPU-efficient Alg. 2)")
        if self.algorithm == 2 and not self.recurrent_gradient:
            raise ValueError(
                "recurrent_gradient=False is an ablation of Alg. 1; Alg. 2 has no recurrent gradient to remove "
                "(each of its steps is updated on its own): use algorithm=1 or leave recurrent_gradient=True"
            )
        if self.direction_form not in DIRECTION_FORMS:
            raise ValueError(f"direction_form={self.direction_form!r}: use one of {sorted(DIRECTION_FORMS)}")
        if self.clip_loss not in CLIP_LOSSES:
            raise ValueError(f"clip_loss={self.clip_loss!r}: use 'direction' (Eq. 9) or 'global' (Eq. 8)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: use one of {sorted(PRECISIONS)}")

    @classmethod
    def from_recipe(cls, recipe, **overrides) -> FinetuneConfig:
        """Settings from a :class:`dclip.recipes.Recipe` (target, reference, t0, lambda_L1, lambda_ID); keyword
        arguments override any of them."""
        settings = dict(
            target=recipe.target,
            reference=recipe.reference,
            t0=recipe.t0,
            lambda_l1=recipe.lambda_l1,
            lambda_id=recipe.lambda_id,
        )
        return cls(**{**settings, **overrides})


@dataclass
class FinetuneResult:
    model: ScheduledNoisePredictor  # the fine-tuned eps_theta_hat (a copy; the pretrained model is untouched)
    config: FinetuneConfig
    history: list[dict]  # one entry per optimizer step: loss terms and learning rate
    base_fingerprint: str
    seconds: float


#: Called after every optimizer step with (iteration, history entry, fine-tuned model).
Callback = Callable[[int, dict, ScheduledNoisePredictor], None]


def objective(
    clip: TextImageEncoder,
    x_gen: torch.Tensor,
    x0: torch.Tensor,
    delta_t: torch.Tensor,
    cfg: FinetuneConfig,
    identity: IdentityTerm | None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Eq. 10: ``lambda_clip * L_direction + L_id`` (Eq. 9 and 11) on generated images; returns (loss, terms).
    With ``cfg.clip_views > 0`` the CLIP loss is averaged over augmented views (:func:`augment_pairs`, drawn from
    ``generator``). ``cfg.clip_loss="global"`` puts the global loss (Eq. 8) in place of Eq. 9, for comparison; its
    value is then the ``"direction"`` term of the history (the CLIP term)."""
    pairs = augment_pairs(x_gen, x0, cfg.clip_views, generator=generator) if cfg.clip_views > 0 else (x_gen, x0)
    if cfg.clip_loss == "global":
        l_dir = global_clip_loss(clip, pairs[0], cfg.target)
    else:
        l_dir = directional_clip_loss(clip, *pairs, delta_t, form=cfg.direction_form)
    l_id = identity_loss(x_gen, x0, cfg.lambda_l1, cfg.lambda_id, identity)
    loss = cfg.lambda_clip * l_dir + l_id
    return loss, {"loss": loss.item(), "direction": l_dir.item(), "identity": l_id.item()}


def finetune(
    model: ScheduledNoisePredictor,
    clip: TextImageEncoder,
    latents: Latents,
    cfg: FinetuneConfig,
    identity: IdentityTerm | None = None,
    *,
    callback: Callback | None = None,
    progress: bool = True,
    init: ScheduledNoisePredictor | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` so that images generated from ``latents`` match ``cfg.target`` (Alg. 1 / 2).

    Alg. 1: reverse DDIM in ``S_gen`` steps from each latent through the trainable model, keeping the graph
    (the UNet is shared across steps like a recurrent net), Eq. 10 on the final image, one Adam step.
    Alg. 2: at every reverse step, Eq. 10 on the predicted x0 (Eq. 6) and an Adam step; the chain goes on
    from the detached next state. ``recurrent_gradient=False`` (an ablation of Alg. 1) feeds each step's UNet a
    detached x_t: the final image is unchanged, but its gradient reaches each step's eps only through that step's
    DDIM coefficients, not through how the later steps respond to x_t (the recurrent path of Fig. 3), which Alg. 2
    lacks as well. Adam with ``lr``, multiplied by ``lr_gamma`` every ``lr_every`` iterations
    (batches), so both algorithms follow the same schedule per image seen.
    ``init`` resumes from an earlier fine-tuned model (:func:`dclip.store.load_finetuned`). On CUDA the forward
    passes run under autocast (``cfg.precision``; fp16 with a gradient scaler), the weights and optimizer stay float32.
    The batch order and the CLIP views are drawn from generators seeded with ``cfg.seed`` (the global RNG is left
    alone). A non-finite loss or non-finite weights (a diverged run: lower ``lr``) stop with a ``FloatingPointError``.
    """
    if not isinstance(latents, Latents):
        raise ValueError(f"latents must be dclip.finetune.Latents (precompute_latents), got {type(latents).__name__}")
    if latents.t0 != cfg.t0:
        raise ValueError(f"the latents were inverted to t0={latents.t0} but the config asks t0={cfg.t0}")
    grid = model.schedule.grid(t0=cfg.t0, S=cfg.S_gen)
    model.check_images(latents.x0)
    check_model_batch(latents.x_t0, model.image_size, "latents.x_t0")
    if cfg.lambda_id > 0 and identity is None:
        raise ValueError(
            f"lambda_id={cfg.lambda_id} needs an identity term: pass the world's (dclip.world().identity; "
            "dclip.identity.arcface_identity() for real faces), or set lambda_id=0"
        )
    device = model.device
    base = fingerprint(model)
    tuned = copy.deepcopy(init if init is not None else model).train().requires_grad_(True)
    inference_dtype, tuned.autocast_dtype = tuned.autocast_dtype, None  # cfg.precision governs training
    opt = torch.optim.Adam(tuned.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_every, gamma=cfg.lr_gamma)
    delta_t = text_direction(clip, cfg.target, cfg.reference, cfg.templates).to(device)
    pairs = grid.generation_pairs
    gen = torch.Generator().manual_seed(cfg.seed)  # the batch order
    views = torch.Generator().manual_seed(cfg.seed)  # the CLIP views (augment_pairs)
    history: list[dict] = []
    dtype = autocast_dtype(cfg.precision, device)
    autocast = torch.autocast(device_type="cuda", dtype=dtype, enabled=dtype != torch.float32)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    n_batches = -(-len(latents) // cfg.batch_size)
    steps_per_batch = 1 if cfg.algorithm == 1 else len(pairs)
    bar = progress_bar(
        total=cfg.epochs * n_batches * steps_per_batch,
        show=progress,
        desc=f"fine-tuning (Alg. {cfg.algorithm}) -> {cfg.target!r}",
    )
    start = time.perf_counter()

    def step(loss: torch.Tensor, terms: dict, epoch: int) -> None:
        if not math.isfinite(terms["loss"]):
            bar.close()
            raise FloatingPointError(
                f"fine-tuning diverged: the loss (Eq. 10) is {terms['loss']} at iteration {len(history) + 1} "
                f"(direction {terms['direction']}, identity {terms['identity']}); lower lr={cfg.lr}"
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        entry = {**terms, "lr": opt.param_groups[0]["lr"], "epoch": epoch}
        history.append(entry)
        bar.update(1)
        bar.set_postfix(loss=f"{terms['loss']:.3f}", dir=f"{terms['direction']:.3f}", id=f"{terms['identity']:.3f}")
        if callback is not None:
            callback(len(history), entry, tuned)

    with torch.enable_grad():  # also when called under torch.no_grad()
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(latents), generator=gen)
            for b in range(n_batches):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                x0, x = latents.x0[idx].to(device), latents.x_t0[idx].to(device)
                if cfg.algorithm == 1:
                    eps_model = tuned if cfg.recurrent_gradient else lambda x_t, t: tuned(x_t.detach(), t)
                    with autocast:
                        x_gen = ddim_generate(
                            eps_model, x, model.schedule, grid=grid, grad=True, checkpoint=cfg.checkpoint
                        )
                        loss_terms = objective(clip, x_gen.float(), x0, delta_t, cfg, identity, generator=views)
                    step(*loss_terms, epoch)
                else:
                    for t, t_next in pairs:
                        with autocast:
                            x_next, x0_pred = ddim_step(tuned, x, t, t_next, model.schedule)
                            loss_terms = objective(clip, x0_pred.float(), x0, delta_t, cfg, identity, generator=views)
                        step(*loss_terms, epoch)
                        x = x_next.detach().float()
                with warnings.catch_warnings():  # fp16: the scaler skips steps whose gradients overflowed, on purpose
                    warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
                    sched.step()  # once per iteration (batch), also for Alg. 2's S_gen steps on it
    bar.close()
    tuned.eval().requires_grad_(False)
    tuned.autocast_dtype = inference_dtype  # edits with the fine-tuned model run as the pretrained one's
    broken = [n for n, p in tuned.named_parameters() if not bool(torch.isfinite(p).all())]
    if broken:
        raise FloatingPointError(
            f"fine-tuning diverged: {len(broken)} weight tensors ({broken[0]}, ...) hold NaN or inf after the last "
            f"step; lower lr={cfg.lr}"
        )
    return FinetuneResult(tuned, cfg, history, base, time.perf_counter() - start)
