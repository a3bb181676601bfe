"""Train the tiny world's models: ``python -m dclip.tinyworld.train ddpm|clip|judge|faceid [--out DIR]``.

One trainer (:func:`train`) runs every model: its config (``configs/<name>.json``, :data:`zoo.MODELS`) holds the
architecture and the loop's settings, and a set-up function per model gives the network and its batch loss.
Seeded and resumable: a model with ``checkpoint_every`` writes a checkpoint to ``runs/<model>/`` that often and
picks it up on restart. The final weights go to the package's ``weights/`` folder with a JSON card.

Nothing in dclip imports this module: the runtime loads the weights through :mod:`dclip.tinyworld.zoo`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dclip.tinyworld.faces import make_faces
from dclip.tinyworld.zoo import MODELS, WEIGHTS, load_config


def _lr_at(step: int, tc: dict) -> float:
    """The learning rate of ``step``: linear warm-up, then constant, or (``lr_decay: cosine``) a cosine decay."""
    lr = tc["lr"] * min(1.0, (step + 1) / tc["warmup"])
    if tc.get("lr_decay") == "cosine":
        lr = lr * 0.5 * (1 + torch.cos(torch.tensor(step / tc["_steps"] * 3.14159)).item())
    return lr


class _Resumable:
    """Checkpointing for a training loop: state saved atomically to ``run_dir/ckpt.pt``."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "ckpt.pt"
        run_dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict | None:
        """The saved state, read with ``weights_only=True`` (tensors and plain Python values only: a checkpoint
        cannot run code), or None before the first save; an unreadable checkpoint is an error that names it."""
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, weights_only=True)
        except Exception as e:
            raise ValueError(
                f"cannot resume from {self.path.resolve()} ({type(e).__name__}): delete it to start over"
            ) from e

    def save(self, state: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)


@dataclass
class Setup:
    """What one model brings to :func:`train`: the network, its batch loss and what the loop does besides."""

    model: torch.nn.Module
    batch_loss: Callable[[], torch.Tensor]
    data_size: int
    shipped: torch.nn.Module | None = None  # what is exported (the EMA copy); None: the model
    after_step: Callable[[int], None] = lambda step: None  # after each optimizer step (the EMA update)
    evaluate: Callable[[], dict[str, float]] | None = None  # at each checkpoint; stops at ``stop_at_accuracy``
    state: dict[str, tuple[Callable[[], object], Callable[[object], None]]] = field(default_factory=dict)
    card: Callable[[list[float]], dict] = lambda losses: {}  # card entries beyond the common ones


def _setup_ddpm(cfg: dict, gen: torch.Generator) -> Setup:
    """The tiny DDPM, trained with Eq. 2 on the in-domain split (flipped at random); its EMA weights ship."""
    from diffusers import UNet2DModel

    from dclip.ddpm import ddpm_loss
    from dclip.schedule import Schedule

    tc = cfg["train"]
    data = make_faces(tc["n_images"], seed=tc["seed"], split=tc["split"]).images
    schedule = Schedule.linear(**cfg["schedule"])
    model = UNet2DModel(**cfg["unet"])
    ema = copy.deepcopy(model).requires_grad_(False)
    eps = lambda x, t: model(x, t).sample  # noqa: E731

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, data.shape[0], (tc["batch_size"],), generator=gen)
        x0 = data[idx]
        flip = torch.rand(x0.shape[0], generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        return ddpm_loss(eps, x0, schedule, gen)

    def after_step(step: int) -> None:
        decay = min(tc["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)

    return Setup(
        model,
        batch_loss,
        tc["n_images"],
        shipped=ema,
        after_step=after_step,
        state={"ema": (ema.state_dict, ema.load_state_dict)},
        card=lambda losses: {"final_loss_avg100": round(sum(losses[-100:]) / max(1, len(losses[-100:])), 5)},
    )


def _setup_judge(cfg: dict, gen: torch.Generator) -> Setup:
    """The judge (attribute classifier + part segmenter), trained on the full split with cross-entropy."""
    from torch.nn import functional as F

    from dclip.tinyworld.faces import ATTRIBUTES
    from dclip.tinyworld.judge import Judge

    tc = cfg["train"]
    data = make_faces(tc["n_images"], seed=tc["seed"], split=tc["split"])
    model = Judge(**cfg["model"])

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, len(data), (tc["batch_size"],), generator=gen)
        out = model(_noisy(data.images[idx], tc["noise_std"], gen))
        return F.cross_entropy(out["parts"], data.parts[idx]) + sum(
            F.cross_entropy(out[k], data.attributes[k][idx]) for k in ATTRIBUTES
        )

    return Setup(model, batch_loss, tc["n_images"])


def _setup_faceid(cfg: dict, gen: torch.Generator) -> Setup:
    """The face recognizer, trained contrastively: two photos of an identity (differing in expression, hair colour,
    clothes and background) are a positive pair, the batch's other identities the negatives
    (:mod:`dclip.tinyworld.faceid`)."""
    from dclip.tinyworld.faceid import FaceID, contrastive_loss, identity_views

    tc = cfg["train"]
    views, _ = identity_views(tc["n_identities"], tc["views"], seed=tc["seed"])
    model = FaceID(**cfg["model"])

    def batch_loss() -> torch.Tensor:
        idx = torch.randperm(len(views), generator=gen)[: tc["batch_size"]]
        pick = torch.stack([torch.randperm(tc["views"], generator=gen)[:2] for _ in idx])
        za = model(_noisy(views[idx, pick[:, 0]], tc["noise_std"], gen))
        zb = model(_noisy(views[idx, pick[:, 1]], tc["noise_std"], gen))
        return contrastive_loss(za, zb, tc["temperature"])

    return Setup(model, batch_loss, tc["n_identities"] * tc["views"])


def _setup_clip(cfg: dict, gen: torch.Generator) -> Setup:
    """The tiny CLIP, trained contrastively on (face, caption) pairs of the full split.

    The InfoNCE targets count every caption that is true of an image as a positive (captions name only
    a few attributes, so a batch holds many true pairs besides the diagonal).
    """
    import open_clip
    from torch.nn import functional as F

    from dclip.tinyworld.faces import caption_with_mentions
    from dclip.tinyworld.quality import clip_zero_shot
    from dclip.tinyworld.zoo import CONFIGS

    tc = cfg["train"]
    open_clip.add_model_config(CONFIGS / "open_clip")
    model = open_clip.create_model(cfg["open_clip_model"])
    tokenizer = open_clip.get_tokenizer(cfg["open_clip_model"])
    data = make_faces(tc["n_images"], seed=tc["seed"], split=tc["split"])
    val = make_faces(300, seed=tc["seed"] + 1000, split="full")
    rng = np.random.default_rng(tc["seed"])

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, len(data), (tc["batch_size"],), generator=gen)
        faces = [data.faces[i] for i in idx.tolist()]
        caps = [caption_with_mentions(f, rng, tc["p_mention"]) for f in faces]
        img, txt, scale = model(_noisy(data.images[idx], tc["noise_std"], gen), tokenizer([c[0] for c in caps]))
        logits = scale * img @ txt.T
        C = consistency(faces, [c[1] for c in caps])
        return 0.5 * (
            F.cross_entropy(logits, C / C.sum(1, keepdim=True))
            + F.cross_entropy(logits.T, (C / C.sum(0, keepdim=True)).T)
        )

    def evaluate() -> dict[str, float]:
        model.eval()
        return clip_zero_shot(model, tokenizer, val)

    def set_rng(value: object) -> None:
        rng.bit_generator.state = value

    return Setup(
        model,
        batch_loss,
        tc["n_images"],
        evaluate=evaluate,
        state={"rng": (lambda: rng.bit_generator.state, set_rng)},
    )


#: Each model's set-up, by the command that trains it (:data:`dclip.tinyworld.zoo.MODELS` names its config).
SETUPS: dict[str, Callable[[dict, torch.Generator], Setup]] = {
    "ddpm": _setup_ddpm,
    "clip": _setup_clip,
    "judge": _setup_judge,
    "faceid": _setup_faceid,
}


def train(command: str, cfg: dict, run_dir: Path, out_dir: Path, steps: int | None = None) -> dict:
    """Train model ``command`` (:data:`SETUPS`) with config ``cfg`` for ``steps`` (default the config's) AdamW
    steps on its batch loss, seeded; resume from ``run_dir``'s checkpoint; export the weights and a card to
    ``out_dir``. Returns the card."""
    tc = cfg["train"]
    steps = steps or tc["steps"]
    torch.manual_seed(tc["seed"])
    torch.set_num_threads(tc["threads"])
    gen = torch.Generator().manual_seed(tc["seed"])
    run = SETUPS[command](cfg, gen)
    model = run.model
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    schedule = {**tc, "_steps": steps}
    every = tc.get("checkpoint_every")
    ckpt = _Resumable(run_dir) if every else None
    saved = ckpt.load() if ckpt else None
    step, elapsed, losses, history = 0, 0.0, [], []
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        for key, (_, load) in run.state.items():
            load(saved[key])
        step, elapsed, losses = saved["step"], saved["elapsed"], saved.get("losses", [])
        history = saved.get("history", [])
    start = time.time() - elapsed
    bar = tqdm(total=steps, initial=step, desc=f"{cfg['name']} ({command})")
    while step < steps and (time.time() - start) < tc.get("max_minutes", math.inf) * 60:
        model.train()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, schedule)
        loss = run.batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if "clip_grad" in tc:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc["clip_grad"])
        opt.step()
        run.after_step(step)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        if every and (step % every == 0 or step == steps):
            stop = False
            if run.evaluate is not None:
                acc = run.evaluate()
                history.append(
                    {"step": step, "loss": round(loss.item(), 4), **{k: round(v, 4) for k, v in acc.items()}}
                )
                bar.write(json.dumps(history[-1]))
                stop = min(acc.values()) >= tc["stop_at_accuracy"]
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step}
            state |= {"elapsed": time.time() - start, "losses": losses}
            state |= {key: get() for key, (get, _) in run.state.items()}
            ckpt.save(state | ({"history": history} if run.evaluate is not None else {}))
            if stop:
                break
    bar.close()
    card = {
        "name": cfg["name"],
        "kind": command,
        "config": cfg,
        "steps": step,
        "data_size": run.data_size,
        **run.card(losses),
        **({"validation": history} if run.evaluate is not None else {}),
        **_loss_ends(losses),
        "wall_minutes": round((time.time() - start) / 60, 1),
        "threads": tc["threads"],
        "device": "cpu",
    }
    _export(run.shipped or model, cfg["name"], card, out_dir, fp16=tc["export_fp16"])
    return card


def _loss_ends(losses: list[float], k: int = 10) -> dict[str, float]:
    """Mean loss over the first and the last ``k`` steps of this run (resumed steps included)."""
    if not losses:
        return {}
    return {
        "loss_start": round(sum(losses[:k]) / len(losses[:k]), 5),
        "loss_end": round(sum(losses[-k:]) / len(losses[-k:]), 5),
    }


def _export(model: torch.nn.Module, name: str, card: dict, out_dir: Path, fp16: bool) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out_dir / f"{name}.safetensors"))
    card_path = out_dir / f"{name}.json"
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    card["quality"] = old.get("quality", {}) if old.get("steps") == card.get("steps") else {}
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def _noisy(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Light Gaussian noise, so the judge and the CLIP also read the slightly noisy images a DDPM generates."""
    scale = torch.rand(x.shape[0], 1, 1, 1, generator=gen) * std
    return x + scale * torch.randn(x.shape, generator=gen)


def consistency(faces: list, mentions: list[tuple[str, ...]]) -> torch.Tensor:
    """``C[i, j] = 1`` where caption ``j`` is true of face ``i`` (every attribute it mentions matches)."""
    n = len(faces)
    C = torch.ones(n, n)
    for j, keys in enumerate(mentions):
        for k in keys:
            C[:, j] *= torch.tensor([getattr(f, k) == getattr(faces[j], k) for f in faces], dtype=torch.float)
    return C


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", choices=sorted(SETUPS))
    p.add_argument("--run-dir", type=Path, default=None, help="checkpoint folder (default runs/<model>)")
    p.add_argument("--out", type=Path, default=WEIGHTS, help="where the final weights and card go")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    a = p.parse_args(argv)
    card = train(a.model, load_config(MODELS[a.model]), a.run_dir or Path("runs") / a.model, a.out, a.steps)
    print(json.dumps({k: v for k, v in card.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
