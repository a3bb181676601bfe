"""Train the tiny world's models: ``python -m dclip.tinyworld.train ddpm|clip|judge|faceid [--out DIR]``.

Seeded and resumable: a checkpoint is written to ``runs/<model>/`` every few hundred steps and picked
up on restart. The final weights go to the package's ``weights/`` folder with a JSON card.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dclip.tinyworld.faces import make_faces

CONFIGS = Path(__file__).parent / "configs"
WEIGHTS = Path(__file__).parent / "weights"


def load_config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def _lr_at(step: int, cfg: dict) -> float:
    return cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"])


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


def train_ddpm(cfg: dict, run_dir: Path, out_dir: Path, steps: int | None = None) -> dict:
    """Train the tiny DDPM with Eq. 2 on the in-domain split; EMA weights are what ships."""
    from diffusers import UNet2DModel

    from dclip.ddpm import ddpm_loss
    from dclip.schedule import Schedule

    tc = cfg["train"]
    steps = steps or tc["steps"]
    torch.manual_seed(tc["seed"])
    torch.set_num_threads(tc["threads"])
    data = make_faces(tc["n_images"], seed=tc["seed"], split=tc["split"]).images
    schedule = Schedule.linear(**cfg["schedule"])
    model = UNet2DModel(**cfg["unet"])
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=0.0)
    gen = torch.Generator().manual_seed(tc["seed"])
    ckpt = _Resumable(run_dir)
    state = ckpt.load()
    step, elapsed, losses = 0, 0.0, []
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, elapsed, losses = state["step"], state["elapsed"], state["losses"]
    eps = lambda x, t: model(x, t).sample  # noqa: E731
    start = time.time() - elapsed
    bar = tqdm(total=steps, initial=step, desc="tinyfaces DDPM")
    while step < steps and (time.time() - start) < tc["max_minutes"] * 60:
        idx = torch.randint(0, data.shape[0], (tc["batch_size"],), generator=gen)
        x0 = data[idx]
        flip = torch.rand(x0.shape[0], generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, tc)
        loss = ddpm_loss(eps, x0, schedule, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(tc["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        if step % 250 == 0 or step == steps:
            ckpt.save(
                {
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "opt": opt.state_dict(),
                    "gen": gen.get_state(),
                    "step": step,
                    "elapsed": time.time() - start,
                    "losses": losses,
                }
            )
    bar.close()
    card = {
        "name": cfg["name"],
        "kind": "ddpm",
        "config": cfg,
        "steps": step,
        "wall_minutes": round((time.time() - start) / 60, 1),
        "data_size": tc["n_images"],
        "final_loss_avg100": round(sum(losses[-100:]) / max(1, len(losses[-100:])), 5),
        **_loss_ends(losses),
        "threads": tc["threads"],
        "device": "cpu",
    }
    _export(ema, cfg["name"], card, out_dir, fp16=True)
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


def train_judge(cfg: dict, run_dir: Path, out_dir: Path, steps: int | None = None) -> dict:
    """Train the judge (attribute classifier + part segmenter) on the full split with cross-entropy."""
    from torch.nn import functional as F

    from dclip.tinyworld.faces import ATTRIBUTES
    from dclip.tinyworld.judge import Judge

    tc = cfg["train"]
    steps = steps or tc["steps"]
    torch.manual_seed(tc["seed"])
    torch.set_num_threads(tc["threads"])
    data = make_faces(tc["n_images"], seed=tc["seed"], split=tc["split"])
    model = Judge(**cfg["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=1e-4)
    gen = torch.Generator().manual_seed(tc["seed"])

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, len(data), (tc["batch_size"],), generator=gen)
        out = model(_noisy(data.images[idx], tc["noise_std"], gen))
        return F.cross_entropy(out["parts"], data.parts[idx]) + sum(
            F.cross_entropy(out[k], data.attributes[k][idx]) for k in ATTRIBUTES
        )

    start = time.time()
    losses = _fit(opt, steps, tc, "judge", batch_loss)
    card = _card(cfg, "judge", steps, tc["n_images"], losses, start)
    _export(model, cfg["name"], card, out_dir, fp16=False)
    return card


def _fit(
    opt: torch.optim.Optimizer, steps: int, tc: dict, desc: str, batch_loss: Callable[[], torch.Tensor]
) -> list[float]:
    """The judge's and the face recognizer's loop: ``steps`` optimizer steps on ``batch_loss()``, the learning rate
    warmed up and then decayed on a cosine; returns the losses."""
    losses = []
    for step in (bar := tqdm(range(steps), desc=desc)):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, tc) * 0.5 * (1 + torch.cos(torch.tensor(step / steps * 3.14159)).item())
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return losses


def _card(cfg: dict, kind: str, steps: int, data_size: int, losses: list[float], start: float) -> dict:
    """The JSON card of a model trained on the CPU by :func:`_fit`."""
    return {
        "name": cfg["name"],
        "kind": kind,
        "config": cfg,
        "steps": steps,
        "data_size": data_size,
        **_loss_ends(losses),
        "wall_minutes": round((time.time() - start) / 60, 1),
        "threads": cfg["train"]["threads"],
        "device": "cpu",
    }


def train_faceid(cfg: dict, run_dir: Path, out_dir: Path, steps: int | None = None) -> dict:
    """Train the face recognizer contrastively: two photos of an identity (differing in expression, hair colour,
    clothes and background) are a positive pair, the batch's other identities the negatives
    (:mod:`dclip.tinyworld.faceid`)."""
    from dclip.tinyworld.faceid import FaceID, contrastive_loss, identity_views

    tc = cfg["train"]
    steps = steps or tc["steps"]
    torch.manual_seed(tc["seed"])
    torch.set_num_threads(tc["threads"])
    views, _ = identity_views(tc["n_identities"], tc["views"], seed=tc["seed"])
    model = FaceID(**cfg["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=1e-4)
    gen = torch.Generator().manual_seed(tc["seed"])

    def batch_loss() -> torch.Tensor:
        idx = torch.randperm(len(views), generator=gen)[: tc["batch_size"]]
        pick = torch.stack([torch.randperm(tc["views"], generator=gen)[:2] for _ in idx])
        za = model(_noisy(views[idx, pick[:, 0]], tc["noise_std"], gen))
        zb = model(_noisy(views[idx, pick[:, 1]], tc["noise_std"], gen))
        return contrastive_loss(za, zb, tc["temperature"])

    start = time.time()
    losses = _fit(opt, steps, tc, "faceid", batch_loss)
    card = _card(cfg, "faceid", steps, tc["n_identities"] * tc["views"], losses, start)
    _export(model, cfg["name"], card, out_dir, fp16=False)
    return card


def consistency(faces: list, mentions: list[tuple[str, ...]]) -> torch.Tensor:
    """``C[i, j] = 1`` where caption ``j`` is true of face ``i`` (every attribute it mentions matches)."""
    n = len(faces)
    C = torch.ones(n, n)
    for j, keys in enumerate(mentions):
        for k in keys:
            C[:, j] *= torch.tensor([getattr(f, k) == getattr(faces[j], k) for f in faces], dtype=torch.float)
    return C


def train_clip(cfg: dict, run_dir: Path, out_dir: Path, steps: int | None = None) -> dict:
    """Train the tiny CLIP contrastively on (face, caption) pairs of the full split.

    The InfoNCE targets count every caption that is true of an image as a positive (captions name only
    a few attributes, so a batch holds many true pairs besides the diagonal).
    """
    import numpy as np
    import open_clip
    from torch.nn import functional as F

    from dclip.tinyworld.faces import caption_with_mentions
    from dclip.tinyworld.quality import clip_zero_shot

    tc = cfg["train"]
    steps = steps or tc["steps"]
    torch.manual_seed(tc["seed"])
    torch.set_num_threads(tc["threads"])
    open_clip.add_model_config(CONFIGS / "open_clip")
    model = open_clip.create_model(cfg["open_clip_model"])
    tokenizer = open_clip.get_tokenizer(cfg["open_clip_model"])
    data = make_faces(tc["n_images"], seed=tc["seed"], split=tc["split"])
    val = make_faces(300, seed=tc["seed"] + 1000, split="full")
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=0.1)
    gen = torch.Generator().manual_seed(tc["seed"])
    rng = np.random.default_rng(tc["seed"])
    ckpt = _Resumable(run_dir)
    state = ckpt.load()
    step, elapsed, history, losses = 0, 0.0, [], []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        rng.bit_generator.state = state["rng"]
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        losses = state.get("losses", [])
    start = time.time() - elapsed
    bar = tqdm(total=steps, initial=step, desc="tinyclip")
    while step < steps and (time.time() - start) < tc["max_minutes"] * 60:
        model.train()
        idx = torch.randint(0, len(data), (tc["batch_size"],), generator=gen)
        faces = [data.faces[i] for i in idx.tolist()]
        caps = [caption_with_mentions(f, rng, tc["p_mention"]) for f in faces]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, tc)
        img, txt, scale = model(_noisy(data.images[idx], tc["noise_std"], gen), tokenizer([c[0] for c in caps]))
        logits = scale * img @ txt.T
        C = consistency(faces, [c[1] for c in caps])
        loss = 0.5 * (
            F.cross_entropy(logits, C / C.sum(1, keepdim=True))
            + F.cross_entropy(logits.T, (C / C.sum(0, keepdim=True)).T)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % tc["eval_every"] == 0 or step == steps:
            model.eval()
            acc = clip_zero_shot(model, tokenizer, val)
            history.append({"step": step, "loss": round(loss.item(), 4), **{k: round(v, 4) for k, v in acc.items()}})
            bar.write(json.dumps(history[-1]))
            ckpt.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "gen": gen.get_state(),
                    "rng": rng.bit_generator.state,
                    "step": step,
                    "elapsed": time.time() - start,
                    "history": history,
                    "losses": losses,
                }
            )
            if min(acc.values()) >= tc["stop_at_accuracy"]:
                break
    bar.close()
    card = {
        "name": cfg["name"],
        "kind": "clip",
        "config": cfg,
        "steps": step,
        "data_size": tc["n_images"],
        "wall_minutes": round((time.time() - start) / 60, 1),
        "validation": history,
        "threads": tc["threads"],
        **_loss_ends(losses),
        "device": "cpu",
    }
    _export(model, cfg["name"], card, out_dir, fp16=True)
    return card


TRAINERS = {
    "ddpm": ("tinyfaces", train_ddpm),
    "clip": ("tinyclip", train_clip),
    "judge": ("judge", train_judge),
    "faceid": ("faceid", train_faceid),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", choices=sorted(TRAINERS))
    p.add_argument("--run-dir", type=Path, default=None, help="checkpoint folder (default runs/<model>)")
    p.add_argument("--out", type=Path, default=WEIGHTS, help="where the final weights and card go")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    a = p.parse_args(argv)
    name, trainer = TRAINERS[a.model]
    card = trainer(load_config(name), a.run_dir or Path("runs") / a.model, a.out, a.steps)
    print(json.dumps({k: v for k, v in card.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
