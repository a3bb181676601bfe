"""Fine-tuning the noise predictor (Alg. 1 and its GPU-efficient variant, Alg. 2) and the latents it starts from.

latents = precompute_latents(model, images, t0=500, S_for=40)      # Alg. 1, step 1 (cached on disk)
result = finetune(model, clip, latents, FinetuneConfig("angry face", "face", t0=500))
edited = manipulate(model, result.model, images, t0=500)            # Alg. 3 (dclip.editing)
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dclip.clip import CLIP
from dclip.ddim import ddim_generate, ddim_invert, ddim_step, generation_pairs
from dclip.losses import (
    DIRECTION_FORMS,
    IdentityTerm,
    augment_pairs,
    directional_clip_loss,
    identity_loss,
    text_direction,
)
from dclip.models import DiffusionModel

DEFAULT_CACHE = Path.home() / ".cache" / "dclip" / "latents"
DEFAULT_FINETUNED = Path.home() / ".cache" / "dclip" / "finetuned"


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights: which base model a latent or a fine-tuned checkpoint belongs to."""
    h = hashlib.sha1()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Latents:
    """Precomputed pairs (Alg. 1, step 1): images ``x0`` ([-1, 1], (N, 3, H, W)) and their latents ``x_t0``."""

    x0: torch.Tensor
    x_t0: torch.Tensor
    t0: int
    S_for: int

    def __len__(self) -> int:
        return self.x0.shape[0]


def precompute_latents(
    model: DiffusionModel,
    images: torch.Tensor,
    t0: int,
    S_for: int = 40,
    cache_dir: str | Path | None = DEFAULT_CACHE,
    batch_size: int = 64,
    progress: bool = True,
) -> Latents:
    """Invert ``images`` once with the pretrained model (Eq. 12); reused for every target text ("recycling").

    Cached on disk under ``cache_dir`` keyed by the model's weights, t0, S_for and the image content;
    ``cache_dir=None`` turns the cache off.
    """
    model.check_images(images)
    model.schedule.check_t0(t0)
    key = hashlib.sha1(f"{fingerprint(model)}|{t0}|{S_for}".encode() + images.float().cpu().numpy().tobytes())
    path = (
        Path(cache_dir) / f"{model.name.replace('/', '_')}-t{t0}-S{S_for}-{key.hexdigest()[:16]}.pt"
        if cache_dir
        else None
    )
    if path is not None and path.exists():
        return Latents(**torch.load(path, weights_only=True))
    x0 = images.to(model.device)
    chunks = [ddim_invert(model, c, model.schedule, t0, S_for, progress=progress) for c in x0.split(batch_size)]
    latents = Latents(x0.cpu(), torch.cat(chunks).cpu(), t0, S_for)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(asdict(latents), path)
    return latents


PRECISIONS = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the forward passes: float32 off CUDA; on CUDA "auto" is bf16 where the GPU supports it (Ampere
    and later) and fp16 elsewhere (a T4), which :func:`finetune` pairs with loss scaling."""
    if device.type != "cuda":
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return PRECISIONS[precision]


@dataclass
class FinetuneConfig:
    """The settings of one fine-tuning run (Eq. 10, Alg. 1/2). Defaults are the paper's."""

    target: str
    reference: str
    t0: int
    S_gen: int = 6
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

    def __post_init__(self) -> None:
        if self.algorithm not in (1, 2):
            raise ValueError(f"algorithm={self.algorithm}: use 1 (Alg. 1) or 2 (GPU-efficient Alg. 2)")
        if self.algorithm == 2 and not self.recurrent_gradient:
            raise ValueError(
                "recurrent_gradient=False is an ablation of Alg. 1; Alg. 2 has no recurrent gradient to remove "
                "(each of its steps is updated on its own): use algorithm=1 or leave recurrent_gradient=True"
            )
        for name in ("epochs", "batch_size", "S_gen", "lr_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.direction_form not in DIRECTION_FORMS:
            raise ValueError(f"direction_form={self.direction_form!r}: use one of {sorted(DIRECTION_FORMS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: use one of {sorted(PRECISIONS)}")
        if not self.target.strip() or not self.reference.strip():
            raise ValueError(f"target and reference texts must be non-empty, got {self.target!r}, {self.reference!r}")

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
    model: DiffusionModel  # the fine-tuned eps_theta_hat (a copy; the pretrained model is untouched)
    config: FinetuneConfig
    history: list[dict]  # one entry per optimizer step: loss terms and learning rate
    base_fingerprint: str
    seconds: float


#: Called after every optimizer step with (iteration, history entry, fine-tuned model).
Callback = Callable[[int, dict, DiffusionModel], None]


def objective(
    clip: CLIP,
    x_gen: torch.Tensor,
    x0: torch.Tensor,
    delta_t: torch.Tensor,
    cfg: FinetuneConfig,
    identity: IdentityTerm | None,
) -> tuple[torch.Tensor, dict]:
    """Eq. 10: ``lambda_clip * L_direction + L_id`` (Eq. 9 and 11) on generated images; returns (loss, terms).
    With ``cfg.clip_views > 0`` the directional loss is averaged over augmented views (:func:`augment_pairs`)."""
    pairs = augment_pairs(x_gen, x0, cfg.clip_views) if cfg.clip_views > 0 else (x_gen, x0)
    l_dir = directional_clip_loss(clip, *pairs, delta_t, form=cfg.direction_form)
    l_id = identity_loss(x_gen, x0, cfg.lambda_l1, cfg.lambda_id, identity)
    loss = cfg.lambda_clip * l_dir + l_id
    return loss, {"loss": loss.item(), "direction": l_dir.item(), "identity": l_id.item()}


def finetune(
    model: DiffusionModel,
    clip: CLIP,
    latents: Latents,
    cfg: FinetuneConfig,
    identity: IdentityTerm | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    init: DiffusionModel | None = None,
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
    ``init`` resumes from an earlier fine-tuned model (:func:`load_finetuned`). On CUDA the forward passes run
    under autocast (``cfg.precision``; fp16 with a gradient scaler), the weights and optimizer stay float32.
    """
    if latents.t0 != cfg.t0:
        raise ValueError(f"the latents were inverted to t0={latents.t0} but the config asks t0={cfg.t0}")
    device = model.device
    torch.manual_seed(cfg.seed)
    base = fingerprint(model)
    tuned = copy.deepcopy(init if init is not None else model).train().requires_grad_(True)
    opt = torch.optim.Adam(tuned.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_every, gamma=cfg.lr_gamma)
    delta_t = text_direction(clip, cfg.target, cfg.reference, cfg.templates).to(device)
    pairs = generation_pairs(cfg.S_gen, cfg.t0, model.schedule.T)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    dtype = autocast_dtype(cfg.precision, device)
    autocast = torch.autocast(device_type="cuda", dtype=dtype, enabled=dtype != torch.float32)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    n_batches = -(-len(latents) // cfg.batch_size)
    steps_per_batch = 1 if cfg.algorithm == 1 else len(pairs)
    bar = tqdm(
        total=cfg.epochs * n_batches * steps_per_batch,
        disable=not progress,
        desc=f"fine-tuning (Alg. {cfg.algorithm}) -> {cfg.target!r}",
    )
    start = time.perf_counter()

    def step(loss: torch.Tensor, terms: dict, epoch: int) -> None:
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
                            eps_model, x, model.schedule, cfg.t0, cfg.S_gen, grad=True, checkpoint=cfg.checkpoint
                        )
                        loss_terms = objective(clip, x_gen.float(), x0, delta_t, cfg, identity)
                    step(*loss_terms, epoch)
                else:
                    for t, t_next in pairs:
                        with autocast:
                            x_next, x0_pred = ddim_step(tuned, x, t, t_next, model.schedule)
                            loss_terms = objective(clip, x0_pred.float(), x0, delta_t, cfg, identity)
                        step(*loss_terms, epoch)
                        x = x_next.detach().float()
                with warnings.catch_warnings():  # fp16: the scaler skips steps whose gradients overflowed, on purpose
                    warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
                    sched.step()  # once per iteration (batch), also for Alg. 2's S_gen steps on it
    bar.close()
    tuned.eval().requires_grad_(False)
    return FinetuneResult(tuned, cfg, history, base, time.perf_counter() - start)


def save_finetuned(result: FinetuneResult, path: str | Path) -> Path:
    """Save the fine-tuned weights (``path.safetensors``) and a JSON card of the recipe and settings (``path.json``)."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in result.model.unet.state_dict().items()}, str(path) + ".safetensors")
    card = {
        "base_model": result.model.name,
        "base_fingerprint": result.base_fingerprint,
        "config": asdict(result.config),
        "seconds": round(result.seconds, 2),
        "steps": len(result.history),
        "final": result.history[-1] if result.history else None,
    }
    Path(str(path) + ".json").write_text(json.dumps(card, indent=2) + "\n")
    return Path(str(path) + ".safetensors")


def _describe(identity: IdentityTerm | None) -> str:
    """A stable name of an identity term (functions, functools.partial of them, or objects with a ``cache_name``),
    for cache keys."""
    if hasattr(identity, "cache_name"):
        return identity.cache_name
    if isinstance(identity, functools.partial):
        return f"{_describe(identity.func)}{identity.args}{sorted(identity.keywords.items())}"
    return f"{identity.__module__}.{identity.__qualname__}" if identity is not None else "none"


def finetune_or_load(
    model: DiffusionModel,
    clip: CLIP,
    latents: Latents,
    cfg: FinetuneConfig,
    identity: IdentityTerm | None = None,
    cache_dir: str | Path = DEFAULT_FINETUNED,
    progress: bool = True,
    callback: Callback | None = None,
    force: bool = False,
) -> DiffusionModel:
    """:func:`finetune` once and keep the result on disk (:func:`save_finetuned`), keyed by the base model's
    weights, the settings, the latents and the identity term: later chapters reuse what an earlier one trained.
    ``force=True`` trains (and stores) even when a stored result exists, for example to watch the ``callback``."""
    key = hashlib.sha1(
        json.dumps([fingerprint(model), asdict(cfg), _describe(identity)]).encode()
        + latents.x0.numpy().tobytes()
        + latents.x_t0.numpy().tobytes()
    ).hexdigest()[:16]
    path = Path(cache_dir) / f"{model.name.replace('/', '_')}-{key}"
    if Path(str(path) + ".safetensors").exists() and not force:
        return load_finetuned(path, model)[0]
    result = finetune(model, clip, latents, cfg, identity, callback, progress=progress)
    save_finetuned(result, path)
    return result.model


def load_finetuned(path: str | Path, base: DiffusionModel) -> tuple[DiffusionModel, FinetuneConfig]:
    """A fine-tuned model saved by :func:`save_finetuned`, on top of its pretrained ``base`` (checked)."""
    from safetensors.torch import load_file

    path = Path(path).with_suffix("")
    card = json.loads(Path(str(path) + ".json").read_text())
    if card["base_fingerprint"] != fingerprint(base):
        raise ValueError(
            f"{path} was fine-tuned from {card['base_model']!r} (weights {card['base_fingerprint']}), "
            f"not from the given base model {base.name!r} ({fingerprint(base)}): load the right base"
        )
    tuned = copy.deepcopy(base)
    tuned.unet.load_state_dict(load_file(str(path) + ".safetensors", device=str(base.device)))
    cfg = card["config"]
    cfg["templates"] = tuple(cfg["templates"])
    return tuned.eval(), FinetuneConfig(**cfg)
